"""Shared decoding for dataset plugins: any image Pillow reads → grayscale uint8 ``(N, 1, S, S)``.

Every dataset decodes its images once, here, into one uint8 tensor:

- RGB, RGBA, palette (``P``), bilevel (``1``) and ``LA`` images become ``L`` through Pillow's
  ``convert("L")`` (ITU-R 601-2 luma, alpha dropped).
- 16-bit and float images (``I;16``, ``I``, ``F``; common for medical scans) are min-max scaled per
  image to 0..255, since clipping them to 8 bits would turn most of them white.
- An image whose side differs from ``size`` is resized to ``size x size`` with Pillow's bilinear
  filter (antialiased when shrinking); non-square images are stretched, not cropped.

Also holds a small in-process memo (:func:`memo_get`/:func:`memo_put`) so that repeated runs in
one process (a sweep) do not decode the same dataset again.
"""

from __future__ import annotations

import copy
import io
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Hashable, Sequence, Union

import numpy as np
import torch
from PIL import Image

from synthmed.data.base import ImageSet, Splits
from synthmed.errors import SynthmedError

ImageSource = Union[bytes, str, Path, "Image.Image"]

_HIGH_DEPTH_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")


def decode_errors() -> tuple[type[BaseException], ...]:
    """The exceptions Pillow raises for a file it cannot read (truncated, unknown, corrupt)."""
    return (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def open_image(source: ImageSource) -> Image.Image:
    """Open and fully load one image (bytes, a path or a Pillow image); Pillow errors propagate."""
    if isinstance(source, Image.Image):
        source.load()
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        image = Image.open(io.BytesIO(source))
    else:
        image = Image.open(source)
    image.load()  # force decoding now: a truncated file fails here, not later
    return image


def to_gray_array(image: Image.Image, size: int) -> np.ndarray:
    """One Pillow image as a ``(size, size)`` uint8 grayscale array (see the module docstring)."""
    if image.mode in _HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
        image = Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")
    elif image.mode != "L":
        image = image.convert("L")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def decode_many(
    sources: Sequence[ImageSource],
    names: Sequence[str],
    size: int,
    *,
    skip_bad: bool,
    where: str,
) -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode images into one tensor, failing on (or skipping) the undecodable ones.

    Args:
        sources: encoded bytes, file paths or Pillow images.
        names: a name per source for messages (file path, or ``path (row 17)``).
        size: side of the square output images.
        skip_bad: skip undecodable images (and report them) instead of raising.
        where: what is being decoded, for messages (``"train split of /data/x"``).

    Returns:
        ``(images, kept, skipped)``: ``(N_kept, 1, size, size)`` uint8 images, the positions in
        ``sources`` that were kept, and the names of the skipped ones.

    Raises:
        SynthmedError: an image cannot be decoded and ``skip_bad`` is false.
    """
    errors = decode_errors()
    out = np.empty((len(sources), size, size), dtype=np.uint8)  # (N, S, S)
    kept: list[int] = []
    skipped: list[str] = []
    for i, (source, name) in enumerate(zip(sources, names, strict=True)):
        try:
            if source is None:
                raise OSError("no image data (null bytes and no path)")
            out[len(kept)] = to_gray_array(open_image(source), size)
        except errors as exc:
            if not skip_bad:
                raise SynthmedError(
                    f"cannot decode image {name} in {where}: {type(exc).__name__}: {exc} — fix or "
                    f"remove the file, or set skip_bad_images=true to skip and count such images"
                ) from exc
            skipped.append(name)
            continue
        kept.append(i)
    images = torch.from_numpy(out[: len(kept)].copy()).unsqueeze(1)  # (N_kept, 1, S, S) uint8
    return images, kept, skipped


# --- in-process memo -------------------------------------------------------------------------------
#: Loaded datasets kept per process. Each entry holds both splits (~105 MB for Alzheimer MRI at
#: 128 px). Set SYNTHMED_DATASET_MEMO to the number of entries to keep (0 turns the memo off).
MEMO_ENV = "SYNTHMED_DATASET_MEMO"
DEFAULT_MEMO_SIZE = 2
_memo: OrderedDict[Hashable, Splits] = OrderedDict()


def _memo_size() -> int:
    text = os.environ.get(MEMO_ENV, "").strip()
    if not text:
        return DEFAULT_MEMO_SIZE
    try:
        value = int(text)
    except ValueError:
        raise SynthmedError(
            f"{MEMO_ENV}={text!r} is not a whole number — set it to the number of datasets to "
            f"keep in memory (0 = off, default {DEFAULT_MEMO_SIZE})"
        ) from None
    return max(0, value)


def memo_get(key: Hashable) -> Splits | None:
    """A copy of the memoized splits for ``key`` (callers may change it freely), else None."""
    splits = _memo.get(key)
    if splits is None:
        return None
    _memo.move_to_end(key)
    return _copy_splits(splits)


def memo_put(key: Hashable, splits: Splits) -> None:
    """Remember ``splits`` under ``key`` (a private copy), evicting the least recently used."""
    limit = _memo_size()
    if limit == 0:
        return
    _memo[key] = _copy_splits(splits)
    _memo.move_to_end(key)
    while len(_memo) > limit:
        _memo.popitem(last=False)


def clear_memo() -> None:
    """Forget every memoized dataset (frees the memory)."""
    _memo.clear()


def _copy_splits(splits: Splits) -> Splits:
    def clone(s: ImageSet) -> ImageSet:
        return ImageSet(s.images.clone(), s.labels.clone(), s.index.clone(), s.synthetic.clone(), s.groups.clone())

    meta: dict[str, Any] = copy.deepcopy(splits.meta)
    return Splits(clone(splits.train), clone(splits.test), splits.classes, splits.fingerprint, meta)
