"""One cell's numbers and one pair's comparison: the rows the tables are made of.

The thesis compares configurations by the *median* test cross-entropy over many simulations
(Chapter 7). :func:`summarize` describes one cell's values; :func:`paired_difference` compares two
cells over the same simulations, with an estimate, interval, test and effect sizes that all concern
the same quantity.

Conventions:
    * ``std`` uses ``ddof=1`` and is NaN for fewer than two values.
    * Paired differences are ``a - b`` paired by simulation index; the p-value is a two-sided
      Wilcoxon signed-rank test. All-zero differences give ``p = 1.0`` (no evidence of a
      difference); fewer than two pairs give ``p = NaN`` (no test possible).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from synthmed.stats.effects import cohen_dz, hodges_lehmann, rank_biserial
from synthmed.stats.intervals import N_BOOT, bootstrap_ci, hodges_lehmann_ci
from synthmed.stats.paired import wilcoxon_p

__all__ = ["paired_difference", "summarize"]


def summarize(values: Sequence[float] | np.ndarray, *, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """n, median, quartiles, IQR, mean, std and a bootstrap CI of the median.

    Returns:
        A dict with keys ``n, median, q1, q3, iqr, mean, std, ci_low, ci_high`` (NaN where
        undefined: everything but ``n`` for no values, ``std`` for one value).
    """
    x = np.asarray(values, dtype=float)
    nan = float("nan")
    if x.size == 0:
        return dict(n=0, median=nan, q1=nan, q3=nan, iqr=nan, mean=nan, std=nan, ci_low=nan, ci_high=nan)
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    low, high = bootstrap_ci(x, np.median, level=level, seed=seed)
    return dict(
        n=int(x.size),
        median=float(med),
        q1=float(q1),
        q3=float(q3),
        iqr=float(q3 - q1),
        mean=float(x.mean()),
        std=float(x.std(ddof=1)) if x.size > 1 else nan,
        ci_low=low,
        ci_high=high,
    )


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    level: float = 0.95,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, float]:
    """Median of the paired differences ``a - b``, its bootstrap CI and a Wilcoxon p-value.

    Args:
        a: values of the configuration under test, one per simulation.
        b: values of the baseline for the *same* simulations, in the same order.

    Returns:
        ``median_diff, ci_low, ci_high`` (median of the differences, bootstrap CI), ``hl, hl_low,
        hl_high`` (Hodges–Lehmann estimate and its Wilcoxon-based interval: the quantity the test
        is about), ``p_value`` (Wilcoxon signed-rank; 1.0 when every difference is zero, NaN under
        two pairs), ``rank_biserial`` and ``d_z`` (effect sizes) and ``n``.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples must be 1-D and of equal length, got {x.shape} and {y.shape}")
    d = x - y
    nan = float("nan")
    if d.size == 0:
        return dict(median_diff=nan, ci_low=nan, ci_high=nan, hl=nan, hl_low=nan, hl_high=nan, p_value=nan,
                    rank_biserial=nan, d_z=nan, n=0)
    low, high = bootstrap_ci(d, np.median, level=level, n_boot=n_boot, seed=seed)
    hl_low, hl_high = hodges_lehmann_ci(d, level)
    return dict(
        median_diff=float(np.median(d)),
        ci_low=low,
        ci_high=high,
        hl=hodges_lehmann(d),
        hl_low=hl_low,
        hl_high=hl_high,
        p_value=wilcoxon_p(d),
        rank_biserial=rank_biserial(d),
        d_z=cohen_dz(d),
        n=int(d.size),
    )
