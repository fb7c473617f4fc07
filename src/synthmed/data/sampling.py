"""Stratified, seeded sampling of a split: the ``real_frac`` subsample and the validation part.

Rounding rule (the same in both functions): a class with ``n_c`` images contributes

    k_c = floor(frac * n_c + 0.5)        # round half up, in double precision

clamped so that every class keeps at least one image (``stratified_sample``), or so that a class
with two or more images keeps at least one image on each side (``split_validation``). The total
is therefore the sum of the per-class counts, which can differ from ``round(frac * N)`` by a few
images. With ``frac == 1`` every row is kept.

Nesting: each class is shuffled by one ``torch.randperm`` drawn from a generator seeded with
``seed`` (classes in ascending label order) and the sample is a prefix of that permutation. The
permutations depend only on the seed and the labels, not on ``frac``, so for the same labels and
seed the sample at a smaller ``frac`` is a subset of the sample at a larger one (a sweep over
``real_frac`` adds images rather than redrawing them).
"""

from __future__ import annotations

import math
import numbers
import torch

from synthmed.errors import SynthmedError

__all__ = ["keep_count", "split_validation", "stratified_sample"]


def keep_count(n: int, frac: float) -> int:
    """Images kept out of ``n`` at ``frac`` before clamping: ``floor(frac * n + 0.5)``."""
    return math.floor(frac * n + 0.5)


def stratified_sample(labels: torch.Tensor, frac: float, seed: int, *, what: str = "real_frac") -> torch.Tensor:
    """Keep a stratified fraction of the rows, at least one per class present.

    Args:
        labels: ``(N,)`` integer class labels of the split to sample from.
        frac: share to keep, ``0 < frac <= 1``; per class ``max(1, floor(frac * n_c + 0.5))``.
        seed: seed of the ``torch.Generator`` that shuffles each class.
        what: the name of ``frac`` in error messages.

    Returns:
        ``(K,)`` int64 tensor of sorted, unique row indices into ``labels``.

    Raises:
        SynthmedError: ``frac`` is not a finite number in ``(0, 1]``.
    """
    _check_frac(frac, what, low_inclusive=False, high_inclusive=True)
    rows = []
    for idx, perm in _class_permutations(labels, seed):
        k = len(idx) if frac == 1 else min(len(idx), max(1, keep_count(len(idx), frac)))
        rows.append(idx[perm[:k]])
    return _sorted_cat(rows)


def split_validation(
    labels: torch.Tensor, val_frac: float, seed: int, *, what: str = "val_frac"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split rows into a training and a validation part, stratified by class.

    Per class with ``n_c >= 2`` images, ``min(n_c - 1, max(1, floor(val_frac * n_c + 0.5)))`` go
    to validation; a class with a single image stays in training. ``val_frac == 0`` gives
    ``(all rows, no rows)``. Used for early stopping (on the sampled training images only) and
    for the imagefolder test split.

    Args:
        labels: ``(N,)`` integer class labels.
        val_frac: validation share, ``0 <= val_frac < 1``.
        seed: seed of the ``torch.Generator`` that shuffles each class.
        what: the name of ``val_frac`` in error messages.

    Returns:
        ``(train_rows, val_rows)``: disjoint, sorted int64 row indices covering every row.

    Raises:
        SynthmedError: ``val_frac`` is not a finite number in ``[0, 1)``.
    """
    _check_frac(val_frac, what, low_inclusive=True, high_inclusive=False)
    n = len(labels)
    if val_frac == 0:
        return torch.arange(n, dtype=torch.long), torch.empty(0, dtype=torch.long)
    train, val = [], []
    for idx, perm in _class_permutations(labels, seed):
        n_c = len(idx)
        k = 0 if n_c < 2 else min(n_c - 1, max(1, keep_count(n_c, val_frac)))
        val.append(idx[perm[:k]])
        train.append(idx[perm[k:]])
    return _sorted_cat(train), _sorted_cat(val)


# --- helpers -----------------------------------------------------------------------------------------
def _check_frac(value: object, what: str, *, low_inclusive: bool, high_inclusive: bool) -> None:
    low = ">=" if low_inclusive else ">"
    high = "<=" if high_inclusive else "<"
    allowed = f"allowed: {what} {low} 0 and {what} {high} 1"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SynthmedError(f"{what}={value!r} is not a number — {allowed}")
    v = float(value)
    if not math.isfinite(v):
        raise SynthmedError(f"{what}={value!r} is not a finite number — {allowed}")
    ok_low = v >= 0 if low_inclusive else v > 0
    ok_high = v <= 1 if high_inclusive else v < 1
    if not (ok_low and ok_high):
        raise SynthmedError(f"{what}={value!r} is out of range — {allowed}")


def _class_permutations(labels: torch.Tensor, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per class (ascending label): its rows (ascending) and a seeded permutation of them."""
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise SynthmedError(f"labels must be a 1-D integer tensor, got {tuple(labels.shape)} {labels.dtype}")
    g = torch.Generator().manual_seed(int(seed))
    labels = labels.cpu()
    out = []
    for c in torch.unique(labels).tolist():  # sorted
        idx = (labels == c).nonzero().flatten()  # (n_c,) ascending rows
        out.append((idx, torch.randperm(len(idx), generator=g)))
    return out


def _sorted_cat(parts: list[torch.Tensor]) -> torch.Tensor:
    if not parts:
        return torch.empty(0, dtype=torch.long)
    return torch.sort(torch.cat(parts)).values.long()
