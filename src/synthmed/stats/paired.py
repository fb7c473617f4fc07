"""The Wilcoxon signed-rank test of paired differences ``d``, and its null distribution.

The p-value is two-sided with zero differences dropped (``zero_method="wilcox"``). Up to
:data:`EXACT_UP_TO` non-zero pairs it is **exact, ties or not**: the permutation distribution of
the signed-rank statistic over all ``2^n`` sign flips, with midranks for tied ``|d|``
(:func:`exact_signed_rank_p`; the same number as scipy's ``permutation_test`` over sign flips, and
as ``wilcoxon(method="exact")`` where scipy defines it, i.e. without ties). Scipy's own choice
with ties, a normal approximation without continuity correction, gives 5 equal negative
differences p ≈ 0.025–0.041 where the exact p is 2/32 = 0.0625. Above 50 pairs: the normal
approximation with tie correction. The exact null distribution of the
statistic (:func:`signed_rank_cdf`) and its critical value also give the Hodges–Lehmann interval
(:func:`synthmed.stats.intervals.hodges_lehmann_ci`), so estimate, interval and test agree.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.stats import norm, rankdata, wilcoxon

__all__ = ["EXACT_UP_TO", "exact_signed_rank_p", "signed_rank_cdf", "signed_rank_critical", "wilcoxon_p"]

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
    if np.count_nonzero(x) <= EXACT_UP_TO:
        return exact_signed_rank_p(x)
    p = wilcoxon(x, zero_method="wilcox", alternative="two-sided", method="approx").pvalue
    return float(min(max(p, 0.0), 1.0))


def exact_signed_rank_p(d: Sequence[float] | np.ndarray) -> float:
    """Exact two-sided signed-rank p over all sign flips of the non-zero ``d`` (midranks for ties).

    ``T+`` is the sum of the ranks of ``|d|`` over positive ``d``. Under the null every sign is
    ±1 with probability 1/2, so its distribution is a sum of independent ``{0, r_i}`` terms,
    counted exactly by dynamic programming over doubled ranks (midranks are multiples of 1/2).
    ``p = min(1, 2 · min(P(T+ <= t), P(T+ >= t)))``, as scipy defines the two-sided p.
    """
    x = np.asarray(d, dtype=float)
    x = x[x != 0]
    n = x.size
    if n == 0:
        return 1.0
    doubled = np.rint(2 * rankdata(np.abs(x))).astype(np.int64)  # midranks are k/2: exact as integers
    t = int(doubled[x > 0].sum())
    counts = np.zeros(int(doubled.sum()) + 1, dtype=float)
    counts[0] = 1.0
    for r in doubled:
        shifted = np.zeros_like(counts)
        shifted[r:] = counts[:-r]
        counts = counts + shifted
    probs = counts / 2.0**n
    low, high = probs[: t + 1].sum(), probs[t:].sum()
    return float(min(1.0, 2.0 * min(low, high)))
