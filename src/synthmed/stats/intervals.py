"""Confidence intervals: the percentile bootstrap of any statistic, and the Hodges–Lehmann interval.

* :func:`bootstrap_ci` resamples with a fixed seed, so the same values always give the same
  interval; it is scipy's ``bootstrap(method="percentile")`` drawn from the same generator (a test
  holds them equal).
* :func:`hodges_lehmann_ci` is distribution-free: read off the ordered Walsh averages at the
  Wilcoxon critical value, it excludes 0 exactly when the two-sided test rejects at that level (up
  to ties).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from synthmed.stats.effects import walsh_averages
from synthmed.stats.paired import signed_rank_critical

__all__ = ["N_BOOT", "bootstrap_ci", "hodges_lehmann_ci"]

N_BOOT = 2000  # bootstrap resamples of every interval in a report


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat: Callable[..., Any] = np.median,
    level: float = 0.95,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``stat`` over ``values``.

    Args:
        values: one number per simulation.
        stat: a numpy reduction accepting ``axis=`` (``np.median``, ``np.mean``, ...).
        level: coverage of the interval, in (0, 1).
        n_boot: number of resamples.
        seed: seed of the resampling, so results are reproducible.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for no values, ``(v, v)`` for a single value.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} must lie strictly between 0 and 1 (e.g. 0.95)")
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, x.size, size=(n_boot, x.size))]  # (n_boot, n)
    boot = np.asarray(stat(samples, axis=1), dtype=float)  # (n_boot,)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def hodges_lehmann_ci(d: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The distribution-free ``level`` interval of the pseudomedian: ``(W_(c+1), W_(M-c))``.

    ``W`` are the ordered Walsh averages, ``M`` their number and ``c`` the Wilcoxon critical value.
    ``(nan, nan)`` when ``d`` has too few pairs for any interval at that level (n < 6 at 95%).
    """
    w = walsh_averages(d)
    c = signed_rank_critical(np.asarray(d).size, level) if w.size else None
    if c is None:
        return math.nan, math.nan
    return float(w[c]), float(w[w.size - c - 1])
