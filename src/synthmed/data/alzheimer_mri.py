"""The thesis's dataset: Alzheimer MRI (hub ``Falah/Alzheimer_MRI``) or a local copy of it.

Where the data comes from, first match wins:

1. ``config.data_dir`` (``--data-dir``), a local copy with the hub's layout;
2. the environment variable ``SYNTHMED_DATA_DIR``;
3. the Hugging Face hub, ``Falah/Alzheimer_MRI`` at ``config.revision`` (kept in the Hugging Face
   cache after the first download; set ``HF_HUB_OFFLINE=1`` to use that cache without network).

A local copy with a ``manifest.json`` has each listed file's sha256 checked before it is read.
Images are decoded once into uint8 tensors (see :mod:`synthmed.data._decode`) and memoized per
process, so a sweep decodes them only once.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch

from synthmed.data._decode import decode_many, memo_get, memo_put
from synthmed.data.base import Dataset, ImageSet, Splits, check_classes, fingerprint_tensors
from synthmed.errors import SynthmedError
from synthmed.hookspecs import hookimpl
from synthmed.paths import check_folder_to_read

if TYPE_CHECKING:
    import datasets

    from synthmed.config import Config

HUB_ID = "Falah/Alzheimer_MRI"
DATA_DIR_ENV = "SYNTHMED_DATA_DIR"
PROBE_TIMEOUT_S = 3.0
_WHERE_TO_POINT = (
    f"point synthmed at a local copy with --data-dir PATH (config data_dir) or "
    f"{DATA_DIR_ENV}=PATH, e.g. ../shared/data/alzheimer_mri"
)


class AlzheimerMRI(Dataset):
    """Four classes of 128x128 axial brain MRI slices: 5120 train / 1280 test images."""

    name = "alzheimer_mri"
    may_download = True
    expected_classes = ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")
    display_names = {"Mild_Demented": "Mild", "Moderate_Demented": "Moderate", "Non_Demented": "Non",
                     "Very_Mild_Demented": "Very mild"}
    gradcam_classes = ("Moderate_Demented", "Non_Demented")  # the two ends of the scale (thesis Chapter 3.2)

    def load(self, config: Config) -> Splits:
        local = local_dir(config)
        try:
            return self._load(local, config)
        except PermissionError as exc:  # a file or subfolder of the local copy this user may not read
            if local is None:
                raise
            raise SynthmedError(
                f"{exc.filename or local} in the local copy {local} cannot be read ({exc.strerror}) — give this "
                "user read access to the whole folder (e.g. chmod -R a+rX), or copy the data somewhere readable"
            ) from exc

    def _load(self, local: Path | None, config: Config) -> Splits:
        if local is not None:
            manifest = verify_manifest(local)
            key: tuple[Any, ...] = ("local", str(local), _stat_signature(local))
            source, revision = str(local), None
        else:
            manifest = None
            key = ("hub", HUB_ID, config.revision)
            source, revision = HUB_ID, config.revision
        key += (config.image_size, config.skip_bad_images)
        splits = memo_get(key)
        if splits is None:
            raw = _load_local(local) if local is not None else _load_hub(config.revision)
            splits = _decode_splits(raw, source, config)
            splits.meta.update(
                source=source,
                revision=revision,
                manifest="verified" if manifest else ("absent" if local is not None else "n/a (hub)"),
            )
            memo_put(key, splits)
        return splits


@hookimpl
def register_datasets() -> list[type[Dataset]]:
    return [AlzheimerMRI]


# --- where the data is ----------------------------------------------------------------------------
def local_dir(config: Config) -> Path | None:
    """The local copy to read (``config.data_dir``, else ``$SYNTHMED_DATA_DIR``), or None for the hub.

    Raises:
        SynthmedError: the named folder does not exist.
    """
    if config.data_dir:
        path, origin = Path(config.data_dir), "data_dir (--data-dir)"
    elif os.environ.get(DATA_DIR_ENV, "").strip():
        path, origin = Path(os.environ[DATA_DIR_ENV].strip()), DATA_DIR_ENV
    else:
        return None
    path = path.expanduser()
    check_folder_to_read(path, f"{origin} = {str(path)!r}",
                         "give the folder that holds the dataset's data/ (e.g. ../shared/data/alzheimer_mri), "
                         f"readable by this user, or unset it to use the hub {HUB_ID}")
    return path.resolve()


def verify_manifest(folder: Path) -> dict[str, Any] | None:
    """Check the sha256 of every file listed in ``folder/manifest.json`` (if there is one).

    The manifest maps split names to ``{"file": relative path, "sha256": hex digest, ...}``.

    Returns:
        The parsed manifest, or None when the folder has none.

    Raises:
        SynthmedError: the manifest is unreadable, or a listed file is missing or differs.
    """
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SynthmedError(f"cannot read {path}: {exc} — fix or delete the manifest") from exc
    listed = manifest.values() if isinstance(manifest, dict) else []
    entries = [v for v in listed if isinstance(v, dict) and "file" in v and "sha256" in v]
    if not entries:
        raise SynthmedError(f"{path} lists no files — expected {{split: {{'file': ..., 'sha256': ...}}}}")
    for entry in entries:
        file = folder / entry["file"]
        if not file.is_file():
            raise SynthmedError(f"{file} is listed in {path} but missing — restore the dataset copy")
        digest = _sha256(file)
        if digest != entry["sha256"].lower():
            raise SynthmedError(
                f"sha256 mismatch for {entry['file']} in {folder}: expected {entry['sha256']}, got "
                f"{digest} — the copy is corrupt or changed; restore it from the original"
            )
    return manifest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _stat_signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime) of the data files: a changed copy misses the memo."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts)
    return tuple((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


# --- reading ----------------------------------------------------------------------------------------
def _load_local(folder: Path) -> datasets.DatasetDict:
    import datasets  # heavy; only reading the data needs it, and every run registers this plugin

    try:
        return datasets.load_dataset(str(folder))
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as exc:
        raise SynthmedError(
            f"cannot read a dataset from {folder}: {type(exc).__name__}: {exc} — expected the layout "
            f"of {HUB_ID} (data/train-*.parquet and data/test-*.parquet)"
        ) from exc


def _load_hub(revision: str | None) -> datasets.DatasetDict:
    import datasets  # heavy; only reading the data needs it, and every run registers this plugin

    if not datasets.config.HF_HUB_OFFLINE:
        _probe_hub()
    try:
        return datasets.load_dataset(HUB_ID, revision=revision)
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as exc:  # ConnectionError, not found
        raise SynthmedError(
            f"cannot load {HUB_ID} (revision {revision or 'default'}) from the Hugging Face hub or its "
            f"cache: {type(exc).__name__}: {exc} — {_WHERE_TO_POINT}"
        ) from exc


def _hub_endpoint() -> str:
    """The hub URL (``HF_ENDPOINT``) or the HTTPS proxy it is reached through."""
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(var):
            return os.environ[var]
    from huggingface_hub import constants  # heavy; only reaching the hub needs it

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def _probe_hub() -> None:
    """Fail within seconds when the hub cannot be reached (instead of ~25 s of retries)."""
    url = urlparse(_hub_endpoint())
    host = url.hostname or ""
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise SynthmedError(
            f"cannot reach the Hugging Face hub at {host}:{port} ({exc}) to load {HUB_ID} — "
            f"{_WHERE_TO_POINT}; or, if it is already in your Hugging Face cache, set HF_HUB_OFFLINE=1"
        ) from exc


# --- decoding ---------------------------------------------------------------------------------------
def _decode_splits(raw: datasets.DatasetDict, source: str, config: Config) -> Splits:
    missing = [s for s in ("train", "test") if s not in raw]
    if missing:
        raise SynthmedError(f"{source} has no {' or '.join(missing)} split — found: {', '.join(raw) or 'none'}")
    classes = _class_names(raw["train"], source)
    check_classes(AlzheimerMRI.name, classes, AlzheimerMRI.expected_classes, source)
    test_classes = _class_names(raw["test"], source)
    if test_classes != classes:
        raise SynthmedError(f"{source}: the test split lists the classes [{', '.join(test_classes)}] but the "
                            f"train split [{', '.join(classes)}] — both splits must share one label set")
    train, skipped_train = _decode_split(raw["train"], "train", source, classes, config)
    test, skipped_test = _decode_split(raw["test"], "test", source, classes, config)
    empty = [c for c, n in zip(classes, train.class_counts(len(classes))) if n == 0]
    if empty:
        raise SynthmedError(
            f"class {', '.join(map(repr, empty))} has no training images in {source} — every class "
            f"needs at least one (check the data, or skipped images)"
        )
    skipped = skipped_train + skipped_test
    return Splits(
        train=train,
        test=test,
        classes=classes,
        fingerprint=fingerprint_tensors(train.images, train.labels, test.images, test.labels),
        meta={"image_size": config.image_size, "skipped_images": len(skipped), "skipped_files": skipped},
    )


def _class_names(split: datasets.Dataset, source: str) -> tuple[str, ...]:
    import datasets  # heavy; only reading the data needs it, and every run registers this plugin

    features = split.features
    for column in ("image", "label"):
        if column not in features:
            raise SynthmedError(f"{source} has no {column!r} column — found: {', '.join(features)}")
    if not isinstance(features["label"], datasets.ClassLabel):
        raise SynthmedError(f"the 'label' column of {source} is not a ClassLabel (got {features['label']})")
    return tuple(features["label"].names)


def _decode_split(
    split: datasets.Dataset, name: str, source: str, classes: tuple[str, ...], config: Config
) -> tuple[ImageSet, list[str]]:
    table = split.with_format("arrow")[:]  # pyarrow.Table; the image column stays encoded
    images = table.column("image").combine_chunks()  # struct<bytes, path>
    blobs = images.field("bytes").to_pylist()
    paths = images.field("path").to_pylist()
    sources = [b if b is not None else p for b, p in zip(blobs, paths)]
    names = [f"{p or '<bytes>'} (row {i})" for i, p in enumerate(paths)]

    labels_col = table.column("label")
    if labels_col.null_count:
        row = labels_col.is_null().to_pylist().index(True)
        raise SynthmedError(f"{name} row {row} of {source} has no label — every image needs one")
    labels = torch.tensor(labels_col.to_numpy(), dtype=torch.long)  # (N,)
    bad = ((labels < 0) | (labels >= len(classes))).nonzero().flatten()
    if len(bad):
        row = int(bad[0])
        raise SynthmedError(
            f"{name} row {row} of {source} has label {int(labels[row])}, outside the classes "
            f"0..{len(classes) - 1} ({', '.join(classes)}) — fix the label column"
        )

    pixels, kept, skipped = decode_many(
        sources, names, config.image_size, skip_bad=config.skip_bad_images, where=f"the {name} split of {source}"
    )
    rows = torch.as_tensor(kept, dtype=torch.long)
    return ImageSet(pixels, labels[rows], index=rows), [f"{name}: {s}" for s in skipped]
