"""``folder``: replay images generated elsewhere (e.g. DALL-E 2 outputs kept since 2024).

Two layouts under ``path``, looked up in this order for every source image:

A. ``<path>/<source sha256>/<anything>.png`` — variations of exactly that source; variation ``v``
   is the ``v``-th file in sorted order. The sha256 is :func:`synthmed.generators.base.source_hash`
   of the source *as fed to the model* (after resizing to ``image_size``); the provenance CSV of
   a synthetic run and ``synthmed generate`` list it.
B. ``<path>/<class name>/*.png`` (or ``<path>/<label index>/*.png``) — one pool per class;
   variation ``v`` of a source is file ``perm[v % n]`` of a permutation of the pool seeded by the
   source's hash, so different variations of one source are different files while the pool lasts.

Images of any size and mode are made grayscale and resized (bilinear) to the source's size.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from synthmed.errors import SynthmedError
from synthmed.generators.base import Generator, coerce_option, source_hash
from synthmed.hookspecs import hookimpl

_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


class FolderGenerator(Generator):
    """Pre-generated images from a folder (layout A: per source hash, layout B: per class).

    Args:
        path: the folder.
    """

    name = "folder"
    deterministic = True
    ignores_seed = True  # its images were made before the run: the same in every simulation

    def __init__(self, path: Any):
        text = coerce_option(self.name, "path", path, str)
        self.path = Path(text).expanduser().resolve()
        if not self.path.is_dir():
            raise SynthmedError(f"generator 'folder': path={text!r} is not a folder — pass --generator-options path=DIR")
        self.classes: tuple[str, ...] = ()
        self._listing: dict[str, list[Path]] = {}
        self._fingerprint: str | None = None

    def bind(self, classes: Sequence[str]) -> None:
        self.classes = tuple(classes)

    def output_params(self) -> dict[str, Any]:
        return {"path": str(self.path), "contents": self._contents_fingerprint()}

    def generate(self, images: torch.Tensor, labels: torch.Tensor, *, variation: int, seed: int) -> torch.Tensor:
        out = [self._variation(img, int(label), int(variation)) for img, label in zip(images, labels)]
        return torch.stack(out) if out else images.clone()

    # --- lookup ---------------------------------------------------------------------------------
    def _files(self, folder: Path) -> list[Path]:
        key = str(folder)
        if key not in self._listing:
            self._listing[key] = sorted(p for p in folder.iterdir() if p.suffix.lower() in _SUFFIXES) if folder.is_dir() else []
        return self._listing[key]

    def _variation(self, image: torch.Tensor, label: int, variation: int) -> torch.Tensor:
        digest = source_hash(image)
        own = self._files(self.path / digest)
        if own:  # layout A
            if variation >= len(own):
                raise SynthmedError(
                    f"generator 'folder': {self.path / digest} holds {len(own)} variation(s) of that source, "
                    f"variation {variation} was asked for — add files or lower variations_per_image"
                )
            return _read(own[variation], image.shape)
        pool = self._class_pool(label, digest)  # layout B
        order = list(range(len(pool)))
        random.Random(digest).shuffle(order)
        return _read(pool[order[variation % len(pool)]], image.shape)

    def _class_pool(self, label: int, digest: str) -> list[Path]:
        names = ([self.classes[label]] if label < len(self.classes) else []) + [str(label)]
        for name in names:
            files = self._files(self.path / name)
            if files:
                return files
        want = " or ".join(f"{self.path / n}/*.png" for n in names)
        raise SynthmedError(
            f"generator 'folder': no image for source {digest[:16]}… (label {label}"
            f"{', class ' + repr(self.classes[label]) if label < len(self.classes) else ''}) — "
            f"expected {self.path}/{digest}/*.png or {want}"
        )

    def _contents_fingerprint(self) -> str:
        """Names, sizes and mtimes of every image below ``path``: a changed folder is a new generator."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for p in sorted(self.path.rglob("*")):
                if p.suffix.lower() in _SUFFIXES:
                    st = p.stat()
                    h.update(f"{p.relative_to(self.path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


def _read(path: Path, shape: Any) -> torch.Tensor:
    """One image file as ``(1, H, W)`` uint8 at the source's size."""
    _, h, w = shape
    try:
        with Image.open(path) as img:
            gray = img.convert("L")
            if gray.size != (w, h):
                gray = gray.resize((w, h), Image.BILINEAR)
            array = np.asarray(gray, dtype=np.uint8)
    except (OSError, SyntaxError) as exc:
        raise SynthmedError(f"generator 'folder': cannot read {path} ({exc}) — remove or replace it") from exc
    return torch.from_numpy(array.copy()).unsqueeze(0)


@hookimpl
def register_generators() -> list[type[Generator]]:
    return [FolderGenerator]
