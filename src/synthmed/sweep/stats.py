"""Statistics of repeated simulations: medians, bootstrap CIs, paired differences, tables.

The thesis compares configurations by the *median* test cross-entropy over many simulations
(Chapter 7). Everything here is plain numpy/scipy/pandas on finished results, so a report can be
rebuilt from MLflow data alone (:mod:`synthmed.report`).

Conventions:
    * Confidence intervals are percentile bootstrap intervals (``n_boot`` resamples, fixed seed,
      so the same values always give the same interval).
    * ``std`` uses ``ddof=1`` and is NaN for fewer than two values.
    * Paired differences are ``a - b`` paired by simulation index; the p-value is a two-sided
      Wilcoxon signed-rank test. All-zero differences give ``p = 1.0`` (no evidence of a
      difference); fewer than two pairs give ``p = NaN`` (no test possible).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from synthmed.tracking.names import SWEEP_METRICS as METRICS  # the metrics summarised, headline first
from synthmed.sweep.comparisons import cohen_dz, hodges_lehmann, hodges_lehmann_ci, holm, rank_biserial, wilcoxon_p
from synthmed.sweep.spec import frac_label  # re-exported: how fractions are written

if TYPE_CHECKING:
    import pandas as pd

N_BOOT = 2000


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


# --- tables over a sweep's results ------------------------------------------------------------
# ``results``: one row per finished simulation with columns model, policy, real_frac, simulation
# and the metrics in METRICS (see synthmed.report.load_results).
CELL = ["model", "policy", "real_frac"]
#: extra pairs a report makes when both policies ran: (policy, its control)
CONTROLS = (("synthetic", "oversample"),)


def summary_table(results: pd.DataFrame, *, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """One row per cell: n and :func:`summarize` of each metric (columns ``<metric>.<stat>``)."""
    import pandas as pd

    rows = []
    for (model, policy, frac), group in results.groupby(CELL, sort=False):
        row: dict[str, Any] = {"model": model, "policy": policy, "real_frac": frac, "n": len(group)}
        for metric in metrics:
            if metric in group:
                for key, value in summarize(group[metric].dropna()).items():
                    row[f"{metric}.{key}"] = value
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else [*CELL, "n"])


def pairs_table(
    results: pd.DataFrame,
    *,
    baseline_policy: str = "none",
    baseline_frac: float = 1.0,
    metrics: Sequence[str] = METRICS,
) -> pd.DataFrame:
    """Paired comparisons: each policy vs ``baseline_policy`` at the same model and fraction,
    and each fraction vs ``baseline_frac`` for the same model and policy.

    Columns: ``model, kind ('policy'|'fraction'), policy, baseline_policy, real_frac,
    baseline_frac, name`` and ``<metric>.<median_diff|ci_low|ci_high|p_value|n>``.
    """
    import pandas as pd

    by_cell = {key: g.set_index("simulation") for key, g in results.groupby(CELL, sort=False)}
    rows = []
    for (model, policy, frac), g in by_cell.items():
        against = [("policy", (model, baseline_policy, frac)), ("fraction", (model, policy, baseline_frac))]
        for policy_, control in CONTROLS:  # e.g. synthetic vs oversample: what the generator adds
            if policy == policy_:
                against.insert(1, ("policy", (model, control, frac)))
        for kind, base in against:
            if base == (model, policy, frac) or base not in by_cell:
                continue
            if same_runs(g, by_cell[base]):  # a shared cell (synthetic at 1.0 is none at 1.0): no comparison,
                continue  # and no place in the Holm family, where its p of 1 would only dilute the others
            row: dict[str, Any] = {
                "model": model, "kind": kind, "policy": policy, "baseline_policy": base[1],
                "real_frac": frac, "baseline_frac": base[2], "name": pair_name(model, policy, frac, *base[1:]),
            }
            cols = [m for m in metrics if m in g and m in by_cell[base]]
            joined = g[cols].join(by_cell[base][cols].add_suffix(".base"), how="inner")
            for metric in cols:
                pair = joined[[metric, f"{metric}.base"]].dropna()
                diff = paired_difference(pair[metric], pair[f"{metric}.base"])
                row.update({f"{metric}.{k}": v for k, v in diff.items()})
            rows.append(row)
    rows.sort(key=lambda r: r["kind"] != "policy")  # policy comparisons first (stable otherwise)
    columns = ["model", "kind", "policy", "baseline_policy", "real_frac", "baseline_frac", "name"]
    table = pd.DataFrame(rows, columns=None if rows else columns)
    for metric in metrics:  # Holm across every comparison of the table, per metric; raw p kept
        if f"{metric}.p_value" in table:
            table[f"{metric}.p_holm"] = holm(table[f"{metric}.p_value"].to_numpy(dtype=float))
    return table


def same_runs(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Two cells made of the very same runs (a cell the sweep shares with another: identical by construction)."""
    return "run_id" in a and "run_id" in b and set(a["run_id"]) == set(b["run_id"])


def cell_prefix(model: str, policy: str, frac: float) -> str:
    """Metric-name prefix of a cell: ``cnn.synthetic.0.3``."""
    return f"{model}.{policy}.{frac_label(frac)}"


def pair_name(model: str, policy: str, frac: float, base_policy: str, base_frac: float) -> str:
    """Metric-name prefix of a pair: ``cnn.synthetic_vs_none.0.3`` or ``cnn.none.0.3_vs_1``."""
    if policy != base_policy:
        return f"{model}.{policy}_vs_{base_policy}.{frac_label(frac)}"
    return f"{model}.{policy}.{frac_label(frac)}_vs_{frac_label(base_frac)}"
