"""The Wilcoxon signed-rank test of paired differences ``d``, and its null distribution.

The p-value is scipy's (:func:`scipy.stats.wilcoxon`, two-sided, ``zero_method="wilcox"``: zero
differences dropped), with the method chosen here: exact without ties up to :data:`EXACT_UP_TO`
pairs, the normal approximation with tie correction otherwise. The exact null distribution of the
statistic (:func:`signed_rank_cdf`) and its critical value also give the Hodges–Lehmann interval
(:func:`synthmed.stats.intervals.hodges_lehmann_ci`), so estimate, interval and test agree.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.stats import norm, wilcoxon

__all__ = ["EXACT_UP_TO", "signed_rank_cdf", "signed_rank_critical", "wilcoxon_p"]

EXACT_UP_TO = 50  # exact signed-rank null distribution up to this many pairs


def signed_rank_cdf(n: int) -> np.ndarray:
    """``P(T <= t)`` for ``t = 0 .. n(n+1)/2`` under the null, T the signed-rank statistic of n pairs."""
    top = n * (n + 1) // 2
    counts = np.zeros(top + 1, dtype=float)
    counts[0] = 1.0
    for k in range(1, n + 1):  # include rank k in the positive set or not
        counts[k:] = counts[k:] + counts[:-k].copy()
    return np.cumsum(counts) / 2.0**n


def signed_rank_critical(n: int, level: float) -> int | None:
    """The largest ``c`` with ``P(T <= c) <= (1 - level) / 2`` (``None`` when none: n too small).

    Exact up to :data:`EXACT_UP_TO` pairs, the normal approximation (with continuity correction) above.
    """
    alpha = (1.0 - level) / 2.0
    if n <= EXACT_UP_TO:
        below = np.flatnonzero(signed_rank_cdf(n) <= alpha + 1e-12)
        return int(below[-1]) if below.size else None
    mean, sd = n * (n + 1) / 4.0, math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
    c = math.floor(mean - norm.ppf(1 - alpha) * sd - 0.5)
    return c if c >= 0 else None


def wilcoxon_p(d: Sequence[float] | np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value (zeros dropped); 1.0 when all are zero, NaN under 2 pairs."""
    x = np.asarray(d, dtype=float)
    if x.size < 2:
        return math.nan
    if not np.any(x != 0):
        return 1.0
    nonzero = np.abs(x[x != 0])
    ties = np.unique(nonzero).size < nonzero.size
    # exact without ties (n <= 50); with ties the normal approximation with tie correction (scipy's
    # "auto" would fall back to a permutation test, far slower for the same answer at these sizes)
    method = "exact" if not ties and nonzero.size <= EXACT_UP_TO else "approx"
    p = wilcoxon(x, zero_method="wilcox", alternative="two-sided", method=method).pvalue
    return float(min(max(p, 0.0), 1.0))
