"""A user's own images: a folder of class subfolders, with or without ``train/`` and ``test/``.

Two layouts of ``config.data_dir`` (``--data-dir``)::

    data_dir/train/<class>/*.png   data_dir/test/<class>/*.png     # explicit split
    data_dir/<class>/*.png                                         # test split made here

Classes are the subfolder names, sorted. Files are found recursively inside each class folder;
files whose extension Pillow does not know (``notes.txt``) and hidden files are ignored and listed
in ``meta["ignored_files"]``. Without ``train/``/``test/``, a stratified test split of
``config.test_frac`` is drawn with ``config.split_seed`` (:func:`synthmed.data.sampling.split_validation`;
a class with a single image stays in training) and recorded in ``meta``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from synthmed.data._decode import decode_many, memo_get, memo_put
from synthmed.data.base import Dataset, ImageSet, Splits, fingerprint_tensors
from synthmed.data.sampling import split_validation
from synthmed.errors import SynthmedError
from synthmed.hookspecs import hookimpl
from synthmed.paths import check_folder_to_read

if TYPE_CHECKING:
    from synthmed.config import Config

_Listing = dict[str, list[Path]]  # class name -> image files


class ImageFolder(Dataset):
    """Images in class subfolders (any format Pillow reads), made grayscale and square."""

    name = "imagefolder"
    may_download = False

    def load(self, config: Config) -> Splits:
        root = _root(config)
        try:
            return self._load(root, config)
        except PermissionError as exc:  # a class folder or an image this user may not read
            raise SynthmedError(
                f"{exc.filename or root} in data_dir (--data-dir) = {str(root)!r} cannot be read "
                f"({exc.strerror}) — give this user read access to the whole folder (e.g. chmod -R a+rX), "
                "or copy the data somewhere readable"
            ) from exc

    def _load(self, root: Path, config: Config) -> Splits:
        has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
        if has_train != has_test:
            present, absent = ("train", "test") if has_train else ("test", "train")
            raise SynthmedError(
                f"{root} has {present}/ but no {absent}/ — give both train/ and test/ with the same "
                f"class folders, or put the class folders directly in {root} for an automatic split"
            )
        if has_train:
            train_files, ignored_train = _list_classes(root / "train")
            test_files, ignored_test = _list_classes(root / "test")
            _check_same_classes(root, train_files, test_files)
            listings, ignored = [train_files, test_files], ignored_train + ignored_test
        else:
            all_files, ignored = _list_classes(root)
            listings = [all_files]

        key = ("imagefolder", str(root), _signature(listings), config.image_size, config.skip_bad_images,
               None if has_train else (config.test_frac, config.split_seed))
        splits = memo_get(key)
        if splits is not None:
            return splits
        classes = tuple(listings[0])
        decoded = [_decode(root, listing, classes, config) for listing in listings]
        skipped = [name for _, _, names in decoded for name in names]
        if has_train:
            (train, train_names, _), (test, test_names, _) = decoded
            meta: dict[str, Any] = {"layout": "train/ and test/ folders", "test_split": "folder test/"}
        else:
            full, files, _ = decoded[0]
            train, test, meta = _split(full, files, config)
            train_names = [files[i] for i in train.index.tolist()]
            test_names = meta["test_files"]
        meta["image_files"] = {"train": train_names, "test": test_names}  # names a groups=PATH CSV uses
        _check_nonempty(root, classes, train)
        meta.update(
            source=str(root),
            image_size=config.image_size,
            skipped_images=len(skipped),
            skipped_files=skipped,
            ignored_files=[str(p.relative_to(root)) for p in ignored],
        )
        splits = Splits(
            train=train,
            test=test,
            classes=classes,
            fingerprint=fingerprint_tensors(train.images, train.labels, test.images, test.labels),
            meta=meta,
        )
        memo_put(key, splits)
        return splits


@hookimpl
def register_datasets() -> list[type[Dataset]]:
    return [ImageFolder]


# --- finding the files -----------------------------------------------------------------------------
_FIX = ("give a folder of class subfolders (optionally inside train/ and test/) that this user may read: "
        "--data-dir PATH (data_dir)")


def _root(config: Config) -> Path:
    if not config.data_dir:
        raise SynthmedError(
            "dataset imagefolder needs a folder: set data_dir (--data-dir PATH) to a folder of class "
            "subfolders (optionally inside train/ and test/)"
        )
    root = Path(config.data_dir).expanduser()
    check_folder_to_read(root, f"data_dir (--data-dir) = {str(root)!r}", _FIX)
    return root.resolve()


def _image_extensions() -> set[str]:
    return {ext.lower() for ext in Image.registered_extensions()}


def _visible(path: Path, base: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(base).parts)


def _list_classes(folder: Path) -> tuple[_Listing, list[Path]]:
    """Class name → sorted image files (recursive) of ``folder``, and the ignored files."""
    extensions = _image_extensions()
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise SynthmedError(
            f"no class folders in {folder} — expected one subfolder per class, e.g. {folder}/<class>/img.png"
        )
    listing: _Listing = {}
    ignored: list[Path] = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file())
        images = [p for p in files if p.suffix.lower() in extensions and _visible(p, class_dir)]
        chosen = set(images)
        ignored += [p for p in files if p not in chosen]
        if not images:
            raise SynthmedError(
                f"class folder {class_dir} has no image files (.png, .jpg, .bmp, .tif, ... any format "
                f"Pillow reads) — add images or remove the folder"
            )
        listing[class_dir.name] = images
    return listing, ignored


def _check_same_classes(root: Path, train: _Listing, test: _Listing) -> None:
    only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
    if only_train or only_test:
        raise SynthmedError(
            f"class folders of {root}/train and {root}/test differ — only in train/: "
            f"{', '.join(only_train) or 'none'}; only in test/: {', '.join(only_test) or 'none'}. "
            f"Both need the same class folders"
        )


def _signature(listings: list[_Listing]) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of every file: a changed folder misses the memo."""
    return tuple(
        (str(p), p.stat().st_size, p.stat().st_mtime_ns)
        for listing in listings
        for files in listing.values()
        for p in files
    )


# --- decoding and splitting ------------------------------------------------------------------------
def _decode(
    root: Path, listing: _Listing, classes: tuple[str, ...], config: Config
) -> tuple[ImageSet, list[str], list[str]]:
    """Decode one listing: the images (index = position in the listing), kept and skipped names."""
    paths = [p for c in classes for p in listing[c]]
    labels = torch.tensor([i for i, c in enumerate(classes) for _ in listing[c]], dtype=torch.long)
    names = [str(p) for p in paths]
    pixels, kept, skipped = decode_many(
        paths, names, config.image_size, skip_bad=config.skip_bad_images, where=f"imagefolder {root}"
    )
    rows = torch.as_tensor(kept, dtype=torch.long)
    kept_names = [str(paths[i].relative_to(root)) for i in kept]
    skipped_names = [str(Path(n).relative_to(root)) for n in skipped]
    return ImageSet(pixels, labels[rows], index=rows), kept_names, skipped_names


def _split(full: ImageSet, files: list[str], config: Config) -> tuple[ImageSet, ImageSet, dict[str, Any]]:
    """A stratified, seeded test split of one folder, recorded in the returned meta."""
    train_rows, test_rows = split_validation(full.labels, config.test_frac, config.split_seed, what="test_frac")
    meta = {
        "layout": "class folders (no train/ and test/)",
        "test_split": f"stratified test_frac={config.test_frac} seed={config.split_seed}",
        "test_files": [files[i] for i in test_rows.tolist()],
    }
    return full.subset(train_rows), full.subset(test_rows), meta


def _check_nonempty(root: Path, classes: tuple[str, ...], train: ImageSet) -> None:
    empty = [c for c, n in zip(classes, train.class_counts(len(classes))) if n == 0]
    if empty:
        raise SynthmedError(
            f"class {', '.join(map(repr, empty))} of {root} has no decodable training images — every "
            f"class needs at least one (fix the files or add images)"
        )
