"""A split without twins: pool train and test, group images by subject, split by group.

``split=grouped`` (``--split grouped``) replaces a dataset's own train/test split:

1. both splits are pooled;
2. every image gets a group — its subject from a CSV (``groups=PATH``: a ``file,subject`` table)
   where the user has subject IDs, else (``groups=auto``) its near-twin pseudo-subject: the
   connected component of "RMS distance < ``twin_threshold``" (:mod:`synthmed.data.twins`;
   the threshold is read from the gap in the nearest-neighbour distances unless given);
3. :func:`group_split` puts whole groups on one side, stratified by class and seeded with
   ``split_seed``, about ``test_frac`` of each class's images in the test split.

A class with a single group cannot be on both sides: its images stay in training, the split's
record says so (``Splits.meta["split_notes"]``), and a warning is printed. The validation carve of
a grouped run is drawn by the same function (:func:`synthmed.data.loading.sample_real`), so the
epoch a run selects is not chosen by twins of its training images.
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from synthmed.data.base import ImageSet, Splits, fingerprint_tensors
from synthmed.data.sampling import keep_count
from synthmed.data.twins import GROUP_SIZE, as_vectors, canonical_keys, choose_threshold, link_groups, nearest
from synthmed.errors import SynthmedError

if TYPE_CHECKING:
    from synthmed.config import Config

__all__ = ["ClassSplit", "GroupSplit", "TwinGroups", "group_split", "near_twin_groups", "pooled", "regroup",
           "subject_groups"]

#: neighbours per image whose distances choose the threshold (a slice has one or two twins; the fifth
#: neighbour is usually another brain, so the sample holds both modes)
THRESHOLD_NEIGHBOURS = 5


@dataclass(frozen=True)
class ClassSplit:
    """How one class's groups were divided."""

    name: str
    groups_train: int
    groups_test: int
    images_train: int
    images_test: int


@dataclass
class GroupSplit:
    """Rows of each side of a grouped split and what it did per class."""

    train_rows: torch.Tensor
    test_rows: torch.Tensor
    per_class: list[ClassSplit]
    notes: list[str] = field(default_factory=list)
    mixed_groups: int = 0  # groups whose images carry more than one label (0 for near-twins of this dataset)

    def summary(self) -> str:
        """``Mild_Demented 22/6 groups (575/141 images); ...`` — for params and the report."""
        return "; ".join(f"{c.name} {c.groups_train}/{c.groups_test} groups ({c.images_train}/{c.images_test} images)"
                         for c in self.per_class)


def group_split(labels: torch.Tensor, groups: torch.Tensor, frac: float, seed: int, *,
                classes: tuple[str, ...] | None = None, what: str = "test", min_groups: int = 2) -> GroupSplit:
    """Whole groups to one side: about ``frac`` of each class's images held out, seeded.

    Each group takes its majority label (ties: the smaller label). Per class in ascending label
    order, its groups (ascending id) are shuffled by one ``torch.Generator`` seeded with ``seed``
    and taken in that order while they fit ``floor(frac * n_c + 0.5)`` held-out images (a group is
    taken if at least half of it fits; the first always is) — at least one group, never all of
    them. A class with fewer than ``min_groups`` groups keeps them all on the first side, and a note
    says so.

    Args:
        labels: ``(N,)`` class labels.
        groups: ``(N,)`` group ids ``>= 0`` (canonical numbering: :func:`synthmed.data.twins.link_groups`).
        frac: held-out share, ``0 < frac < 1``.
        seed: seed of the group shuffle.
        classes: class names for the record (default ``"class <i>"``).
        what: the held-out side's name in notes (``test``, ``validation``).
        min_groups: a class needs this many groups (at least 2) to give any to the held-out side.

    Returns:
        A :class:`GroupSplit`: ``train_rows`` and ``test_rows`` (sorted, disjoint, covering every row).
    """
    if labels.shape != groups.shape or labels.ndim != 1:
        raise SynthmedError(f"labels {tuple(labels.shape)} and groups {tuple(groups.shape)} must be two (N,) tensors")
    if len(groups) and int(groups.min()) < 0:
        raise SynthmedError("every image needs a group (ids >= 0) for a grouped split")
    if not 0 < frac < 1:
        raise SynthmedError(f"the {what} share of a grouped split must be in (0, 1), got {frac!r}")
    labels, groups = labels.cpu(), groups.cpu()
    members: dict[int, list[int]] = {}
    for row, g in enumerate(groups.tolist()):
        members.setdefault(g, []).append(row)
    group_label, mixed = {}, 0
    for g, rows in members.items():
        counts = Counter(labels[rows].tolist())
        top = max(counts.values())
        group_label[g] = min(c for c, n in counts.items() if n == top)
        mixed += len(counts) > 1
    rng = torch.Generator().manual_seed(int(seed))
    held: set[int] = set()
    per_class, notes = [], []
    for c in sorted(set(group_label.values())):
        name = classes[c] if classes is not None else f"class {c}"
        ids = sorted(g for g, lab in group_label.items() if lab == c)
        n_c = sum(len(members[g]) for g in ids)
        chosen: list[int] = []
        if len(ids) < max(2, min_groups):
            notes.append(f"{name} forms {'a single group' if len(ids) == 1 else f'only {len(ids)} groups'} "
                         f"({n_c} images): all of it stays in training and the {what} split has none of it")
        else:
            target = max(1, keep_count(n_c, frac))
            count = 0
            for i in torch.randperm(len(ids), generator=rng).tolist():
                size = len(members[ids[i]])
                if len(chosen) == len(ids) - 1:
                    break
                if chosen and count + size / 2 > target:  # it would overshoot by more than it fills
                    continue
                chosen.append(ids[i])
                count += size
            if len(ids) < 5:
                notes.append(f"{name} has only {len(ids)} groups: its {what} images come from {len(chosen)} of them, "
                             f"so its {what} metrics rest on very few subjects")
        held.update(chosen)
        n_held = sum(len(members[g]) for g in chosen)
        per_class.append(ClassSplit(name, len(ids) - len(chosen), len(chosen), n_c - n_held, n_held))
    is_held = torch.tensor([g in held for g in groups.tolist()], dtype=torch.bool)
    rows = torch.arange(len(groups))
    return GroupSplit(rows[~is_held], rows[is_held], per_class, notes, mixed)


# --- the groups ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TwinGroups:
    """Near-twin groups of a set of images and how they were found."""

    groups: torch.Tensor  # (N,) canonical ids
    threshold: float
    chosen: bool  # True when the threshold was read from the distance gap
    size: int  # px at which distances were measured
    neighbour_distances: torch.Tensor | None = None  # (N, k) nearest distances the threshold was read from


def near_twin_groups(images: torch.Tensor, labels: torch.Tensor, threshold: float | None = None, *,
                     keep_neighbours: bool = False) -> TwinGroups:
    """Link images closer than ``threshold`` (RMS at ≤ :data:`GROUP_SIZE` px) into groups.

    ``threshold=None`` reads it from the gap in each image's :data:`THRESHOLD_NEIGHBOURS` nearest
    distances (:func:`synthmed.data.twins.choose_threshold`). ``keep_neighbours``: also return those
    distances (the audit's histogram), computed once for both.
    """
    vectors = as_vectors(images, GROUP_SIZE)
    chosen = threshold is None
    neighbours = None
    if threshold is None or keep_neighbours:
        k = min(THRESHOLD_NEIGHBOURS, len(vectors) - 1)
        if k < 1:
            raise SynthmedError("a grouped split needs at least two images")
        neighbours = nearest(vectors, vectors, k, exclude_self=True)[0]
    if threshold is None:
        threshold = choose_threshold(neighbours)
    groups = link_groups(vectors, threshold, canonical_keys(images, labels))
    return TwinGroups(groups, float(threshold), chosen, min(GROUP_SIZE, images.shape[-1]),
                      neighbours if keep_neighbours else None)


def subject_groups(path: str | Path, names: list[str]) -> torch.Tensor:
    """Group ids from a CSV of ``file,subject`` rows (a header row is allowed), by the images' names.

    ``names`` are how the dataset names its images: paths relative to ``data_dir`` for an image
    folder, ``train/<row>`` and ``test/<row>`` for datasets without files. Subjects are numbered in
    sorted order, so the numbering, like the split, ignores row order. Every image must be listed.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SynthmedError(f"groups={str(path)!r}: no such file — give a CSV of file,subject rows or groups=auto") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise SynthmedError(f"groups={str(path)!r} cannot be read as a CSV of file,subject rows ({exc})") from None
    subject: dict[str, str] = {}
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise SynthmedError(f"{path}:{lineno}: expected file,subject — got {','.join(row)!r}")
        key, value = row[0].strip().replace("\\", "/"), row[1].strip()
        if lineno == 1 and key.lower() in ("file", "path", "image", "filename") :
            continue  # header
        subject[key] = value
    missing = [n for n in names if n not in subject]
    if missing:
        raise SynthmedError(f"groups={str(path)!r} lists no subject for {len(missing)} of {len(names)} images "
                            f"(first: {', '.join(missing[:3])}) — images are named as: {', '.join(names[:2])}, ...")
    ids = {s: i for i, s in enumerate(sorted({subject[n] for n in names}))}
    return torch.tensor([ids[subject[n]] for n in names], dtype=torch.long)


def image_names(splits: Splits) -> list[str]:
    """Names of the pooled images (train then test), as a ``groups=PATH`` CSV names them."""
    files = splits.meta.get("image_files") or {}
    out = []
    for side, part in (("train", splits.train), ("test", splits.test)):
        listed = files.get(side)
        out += list(listed) if listed else [f"{side}/{i}" for i in part.index.tolist()]
    return out


def pooled(splits: Splits) -> ImageSet:
    """Train then test as one set (``index`` = position in that order)."""
    both = ImageSet.concat([splits.train, splits.test])
    both.index = torch.arange(len(both))
    return both


# --- the split ----------------------------------------------------------------------------------------
def regroup(splits: Splits, config: Config, *, measured: Splits | None = None) -> Splits:
    """The dataset's splits replaced by a grouped split (``config.split == "grouped"``); else unchanged.

    ``measured``: the same images (same rows, same order) decoded at :data:`GROUP_SIZE` px, where
    near-twins are linked; :func:`synthmed.data.loading.load_splits` passes them so that a
    dataset's groups — and so its grouped split — are the same whatever size a run trains at.
    ``None``: linked on ``splits``' own images (area-averaged down to :data:`GROUP_SIZE` px).
    """
    if config.split != "grouped":
        return splits
    both = pooled(splits)
    record: dict[str, Any] = {"split": "grouped", "split_seed": config.split_seed, "test_frac": config.test_frac}
    if config.groups == "auto":
        source = both if measured is None else pooled(measured)
        if len(source) != len(both) or not torch.equal(source.labels, both.labels):
            raise SynthmedError("the images decoded for measuring near-twins are not the run's images (rows or labels "
                                "differ) — was the dataset changed while loading?")
        key = measured.fingerprint if measured is not None else splits.fingerprint
        size = GROUP_SIZE if measured is not None else config.image_size
        twins = _cached_twin_groups(key, size, config.twin_threshold, source)
        groups = twins.groups
        record.update(split_groups="near-twin pseudo-subjects", twin_threshold=round(twins.threshold, 5),
                      twin_threshold_source="chosen from the distance gap" if twins.chosen else "given",
                      twin_distance_px=twins.size)
    else:
        groups = subject_groups(config.groups, image_names(splits))
        record.update(split_groups=f"subjects from {config.groups}")
    both.groups = groups
    cut = group_split(both.labels, groups, config.test_frac, config.split_seed, classes=splits.classes)
    train, test = both.subset(cut.train_rows), both.subset(cut.test_rows)
    for note in cut.notes:
        warnings.warn(f"grouped split: {note}", stacklevel=2)
    record.update(split_group_count=int(groups.max()) + 1 if len(groups) else 0, split_per_class=cut.summary(),
                  split_notes=" | ".join(cut.notes) or "none", split_mixed_groups=cut.mixed_groups)
    meta = {k: v for k, v in splits.meta.items() if k != "image_files"}
    meta.update(record)
    return Splits(train=train, test=test, classes=splits.classes,
                  fingerprint=fingerprint_tensors(train.images, train.labels, test.images, test.labels),
                  meta=meta, display_classes=splits.display_classes, gradcam_classes=splits.gradcam_classes)


_MEMO: dict[tuple[str, int, float | None], TwinGroups] = {}  # a sweep's runs link a dataset once


def _cached_twin_groups(fingerprint: str, size: int, threshold: float | None, both: ImageSet) -> TwinGroups:
    """Near-twin groups of a dataset, linked once per process (keyed by its fingerprint and image size)."""
    key = (fingerprint, size, threshold)
    if key not in _MEMO:
        if len(_MEMO) >= 8:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = near_twin_groups(both.images, both.labels, threshold)
    return _MEMO[key]
