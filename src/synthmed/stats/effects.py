"""Effect sizes of paired differences ``d``: how large a difference is, not whether it is real.

* the **Hodges–Lehmann estimate**: the median of the Walsh averages ``(d_i + d_j) / 2, i <= j``,
  the pseudomedian the Wilcoxon signed-rank test is about (its interval is in :mod:`.intervals`);
* the matched-pairs **rank-biserial correlation** ``(W+ - W-) / (W+ + W-)`` (``+1``: every
  difference positive), zero differences dropped as the Wilcoxon test drops them;
* **Cohen's d_z** ``mean(d) / sd(d)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = ["cohen_dz", "hodges_lehmann", "rank_biserial", "walsh_averages"]


def walsh_averages(d: Sequence[float] | np.ndarray) -> np.ndarray:
    """All ``(d_i + d_j) / 2`` with ``i <= j``, sorted (``n(n+1)/2`` values)."""
    x = np.asarray(d, dtype=float)
    i, j = np.triu_indices(x.size)
    return np.sort((x[i] + x[j]) / 2.0)


def hodges_lehmann(d: Sequence[float] | np.ndarray) -> float:
    """The Hodges–Lehmann estimate of the pseudomedian of ``d`` (NaN when empty)."""
    w = walsh_averages(d)
    return float(np.median(w)) if w.size else math.nan


def rank_biserial(d: Sequence[float] | np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation in ``[-1, 1]`` (zeros dropped; NaN when none is left)."""
    x = np.asarray(d, dtype=float)
    x = x[x != 0]
    if x.size == 0:
        return math.nan
    ranks = rankdata(np.abs(x))
    plus, minus = ranks[x > 0].sum(), ranks[x < 0].sum()
    return float((plus - minus) / (plus + minus))


def cohen_dz(d: Sequence[float] | np.ndarray) -> float:
    """``mean(d) / sd(d)`` (NaN with fewer than 2 pairs or no spread).

    "No spread" includes the rounding noise of equal differences (``[0.1, 0.1, 0.1]`` has a float
    sd of about 1e-17): an sd below 1e-12 of the largest ``|d|`` counts as zero, so a constant
    difference gives NaN (undefined), never a huge effect.
    """
    x = np.asarray(d, dtype=float)
    if x.size < 2:
        return math.nan
    sd = float(x.std(ddof=1))
    scale = float(np.abs(x).max())
    return float(x.mean() / sd) if sd > 1e-12 * scale and sd > 0 else math.nan
