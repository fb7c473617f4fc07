"""Paired comparisons whose estimate, interval and test concern the same quantity, corrected for many.

For the paired differences ``d`` of two configurations over the same simulations:

* the **Hodges–Lehmann estimate** — the median of the Walsh averages ``(d_i + d_j) / 2, i <= j`` —
  is the pseudomedian the **Wilcoxon signed-rank test** is about; its distribution-free
  confidence interval is read off the ordered Walsh averages at the test's critical value (exact
  null distribution up to n = 50, normal approximation above), so the interval excludes 0 exactly
  when the two-sided test rejects at that level (up to ties);
* an **effect size**: the matched-pairs rank-biserial correlation ``(W+ - W-) / (W+ + W-)``
  (``+1``: every difference positive), and ``d_z = mean(d) / sd(d)``;
* **Holm's** step-down adjustment across all comparisons of a report (family-wise error).

Zero differences are dropped from the test and the rank-biserial correlation (Wilcoxon's
convention, ``zero_method="wilcox"``); the Walsh averages keep them. Plain arrays: no MLflow.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["cohen_dz", "hodges_lehmann", "hodges_lehmann_ci", "holm", "rank_biserial", "signed_rank_cdf",
           "walsh_averages", "wilcoxon_p"]

EXACT_UP_TO = 50  # exact signed-rank null distribution up to this many pairs


def walsh_averages(d: Sequence[float] | np.ndarray) -> np.ndarray:
    """All ``(d_i + d_j) / 2`` with ``i <= j``, sorted (``n(n+1)/2`` values)."""
    x = np.asarray(d, dtype=float)
    i, j = np.triu_indices(x.size)
    return np.sort((x[i] + x[j]) / 2.0)


def hodges_lehmann(d: Sequence[float] | np.ndarray) -> float:
    """The Hodges–Lehmann estimate of the pseudomedian of ``d`` (NaN when empty)."""
    w = walsh_averages(d)
    return float(np.median(w)) if w.size else math.nan


def signed_rank_cdf(n: int) -> np.ndarray:
    """``P(T <= t)`` for ``t = 0 .. n(n+1)/2`` under the null, T the signed-rank statistic of n pairs."""
    top = n * (n + 1) // 2
    counts = np.zeros(top + 1, dtype=float)
    counts[0] = 1.0
    for k in range(1, n + 1):  # include rank k in the positive set or not
        counts[k:] = counts[k:] + counts[:-k].copy()
    return np.cumsum(counts) / 2.0**n


def _critical(n: int, level: float) -> int | None:
    """The largest ``c`` with ``P(T <= c) <= (1 - level) / 2`` (``None`` when none: n too small)."""
    alpha = (1.0 - level) / 2.0
    if n <= EXACT_UP_TO:
        below = np.flatnonzero(signed_rank_cdf(n) <= alpha + 1e-12)
        return int(below[-1]) if below.size else None
    from scipy.stats import norm

    mean, sd = n * (n + 1) / 4.0, math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
    c = math.floor(mean - norm.ppf(1 - alpha) * sd - 0.5)
    return c if c >= 0 else None


def hodges_lehmann_ci(d: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The distribution-free ``level`` interval of the pseudomedian: ``(W_(c+1), W_(M-c))``.

    ``W`` are the ordered Walsh averages, ``M`` their number and ``c`` the Wilcoxon critical value.
    ``(nan, nan)`` when ``d`` has too few pairs for any interval at that level (n < 6 at 95%).
    """
    w = walsh_averages(d)
    c = _critical(np.asarray(d).size, level) if w.size else None
    if c is None:
        return math.nan, math.nan
    return float(w[c]), float(w[w.size - c - 1])


def wilcoxon_p(d: Sequence[float] | np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value (zeros dropped); 1.0 when all are zero, NaN under 2 pairs."""
    x = np.asarray(d, dtype=float)
    if x.size < 2:
        return math.nan
    if not np.any(x != 0):
        return 1.0
    from scipy.stats import wilcoxon

    nonzero = np.abs(x[x != 0])
    ties = np.unique(nonzero).size < nonzero.size
    # exact without ties (n <= 50); with ties the normal approximation with tie correction (scipy's
    # "auto" would fall back to a permutation test that takes seconds per call at n ~ 13)
    method = "exact" if not ties and nonzero.size <= EXACT_UP_TO else "approx"
    p = wilcoxon(x, zero_method="wilcox", alternative="two-sided", method=method).pvalue
    return float(min(max(p, 0.0), 1.0))


def rank_biserial(d: Sequence[float] | np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation in ``[-1, 1]`` (zeros dropped; NaN when none is left)."""
    from scipy.stats import rankdata

    x = np.asarray(d, dtype=float)
    x = x[x != 0]
    if x.size == 0:
        return math.nan
    ranks = rankdata(np.abs(x))
    plus, minus = ranks[x > 0].sum(), ranks[x < 0].sum()
    return float((plus - minus) / (plus + minus))


def cohen_dz(d: Sequence[float] | np.ndarray) -> float:
    """``mean(d) / sd(d)`` (NaN with fewer than 2 pairs or no spread)."""
    x = np.asarray(d, dtype=float)
    if x.size < 2:
        return math.nan
    sd = float(x.std(ddof=1))
    return float(x.mean() / sd) if sd > 0 else math.nan


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
