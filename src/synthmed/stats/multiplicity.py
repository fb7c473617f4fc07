"""Corrections for many comparisons: Holm's step-down adjustment (family-wise error).

A report tests every comparison of its pairs table at once; each metric's p-values form one family.
:func:`holm` is statsmodels' ``multipletests(method="holm")`` (a test holds them equal) with NaN
entries left out of the family instead of propagating.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["holm"]


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (monotone, capped at 1; NaN entries stay NaN and do not count)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out
