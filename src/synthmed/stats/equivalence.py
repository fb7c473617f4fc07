"""The real-scan equivalent: how many real scans a policy's training data is worth.

For a policy P at real fraction X, in a sweep that also runs the baseline (``none``) at two or more
fractions: fit the baseline's median of a metric (lower is better: the test cross-entropy) as a
non-increasing function of the fraction (isotonic regression, pool-adjacent-violators), join the
fitted points by straight lines in log fraction and log metric (exact for a power law
``a·x^b``, the usual shape of a learning curve; straight lines in the fraction itself would, on
such a convex curve, credit the policy: for ``0.2·x^-0.5`` fitted at 0.3/0.6/1.0 a true 45% would
read as 49%), and read off the fraction X* at which it equals P's median.
"30% real + synthetic ≈ 62% real [55%, 70%]". The interval is a *paired* percentile bootstrap:
simulations are resampled with replacement, the same draw for every cell (simulation i of every
cell shares its seed, hence its real sample, so the cells are not independent), the curve refitted
and X* read again.

Only a sweep with ``budget=steps`` has an equivalent (:func:`refusal`): under ``budget=epochs`` the
baseline's curve mixes the data's size with the number of optimizer steps (a run at 0.3 takes 30% of
the steps of one at 1.0), so a fraction read off it is not "as good as that many real scans".

X* is never extrapolated: when P beats the baseline even at its largest fraction the answer is
"beyond the largest fraction run" (``inf``); when P is worse than the baseline at its smallest
fraction it is "at most" that fraction. The figure of it is drawn by
:func:`synthmed.sweep.render.equivalence_figure`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from synthmed.stats.cells import same_runs

__all__ = ["COLUMNS", "describe", "invert_curve", "isotonic_decreasing", "real_scan_equivalent",
           "real_scan_equivalents", "refusal"]

COLUMNS = ["model", "policy", "real_frac", "median", "equivalent", "ci_low", "ci_high", "status"]


def isotonic_decreasing(y: Sequence[float] | np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """The non-increasing sequence closest to ``y`` in weighted least squares (pool adjacent violators).

    The same fit as ``scipy.optimize.isotonic_regression(y, weights=weights, increasing=False)``.
    """
    values = [float(v) for v in y]
    w = [1.0] * len(values) if weights is None else [float(v) for v in weights]
    blocks: list[list[float]] = []  # [mean, weight, count]
    for v, wt in zip(values, w):
        blocks.append([v, wt, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:  # a rise: pool the two blocks
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return np.array([m for m, _, c in blocks for _ in range(int(c))])


def invert_curve(fracs: Sequence[float], fitted: Sequence[float], target: float) -> tuple[float, str]:
    """The smallest fraction where the non-increasing curve ``fitted(fracs)`` reaches ``target``.

    Returns ``(X*, status)``: ``ok``; ``beyond`` (``inf``: the target is below the curve's last
    value); ``at_most`` (the smallest fraction: the target is above the curve's first value).
    """
    x, f = np.asarray(fracs, dtype=float), np.asarray(fitted, dtype=float)
    if not math.isfinite(target):
        return math.nan, "n/a"
    if target < f[-1]:
        return math.inf, "beyond"
    if target > f[0]:
        return float(x[0]), "at_most"
    k = int(np.flatnonzero(f <= target)[0])  # first point at or below the target
    if k == 0 or f[k] == target or f[k - 1] == f[k]:
        return float(x[k]), "ok"
    if f[k] > 0 and target > 0 and x[k - 1] > 0:  # a straight line in log fraction and log metric
        t = (math.log(f[k - 1]) - math.log(target)) / (math.log(f[k - 1]) - math.log(f[k]))
        return float(math.exp(math.log(x[k - 1]) + t * (math.log(x[k]) - math.log(x[k - 1])))), "ok"
    t = (f[k - 1] - target) / (f[k - 1] - f[k])  # a metric that reaches 0 or below: linear between k-1 and k
    return float(x[k - 1] + t * (x[k] - x[k - 1])), "ok"


def refusal(budget: str | None) -> str | None:
    """Why a sweep with this training budget has no real-scan equivalent; ``None`` when it has one."""
    if budget == "steps":
        return None
    return (f"no real-scan equivalent under budget={budget}: there a run at a smaller real fraction also takes "
            "fewer optimizer steps, so the baseline's curve mixes data size with training length — rerun the "
            "sweep with --budget steps (every run then takes the steps of `epochs` passes over the full split)")


def _cell(results: pd.DataFrame, model: str, policy: str, frac: float, metric: str) -> pd.Series:
    """The cell's finite values of ``metric``, indexed by simulation (by row when there is no such column)."""
    rows = results[(results["model"] == model) & (results["policy"] == policy) & np.isclose(results["real_frac"], frac)]
    values = rows[metric].astype(float)
    if "simulation" in rows:
        values.index = rows["simulation"].to_numpy()
    else:
        values = values.reset_index(drop=True)
    return values.dropna()


def _draw(cell: pd.Series, sims: np.ndarray) -> np.ndarray:
    """The cell's values of the drawn simulations (with repeats); a drawn simulation the cell lacks adds nothing."""
    found = cell.reindex(sims)
    return found.dropna().to_numpy(dtype=float)


def _point(curve: dict[float, np.ndarray], target: np.ndarray) -> tuple[float, str]:
    fracs = sorted(curve)
    medians = [float(np.median(curve[f])) for f in fracs]
    return invert_curve(fracs, isotonic_decreasing(medians, [len(curve[f]) for f in fracs]), float(np.median(target)))


def real_scan_equivalent(results: pd.DataFrame, model: str, policy: str, real_frac: float, *, metric: str,
                         baseline: str = "none", n_boot: int = 1000, level: float = 0.95,
                         seed: int = 0) -> dict[str, Any]:
    """X* of ``metric`` for one cell, with its bootstrap interval (keys of :data:`COLUMNS`)."""
    base_fracs = sorted(results.loc[(results["model"] == model) & (results["policy"] == baseline), "real_frac"].unique())
    curve = {float(f): _cell(results, model, baseline, f, metric) for f in base_fracs}
    curve = {f: v for f, v in curve.items() if v.size}
    target = _cell(results, model, policy, real_frac, metric)
    out: dict[str, Any] = dict(model=model, policy=policy, real_frac=float(real_frac),
                               median=float(np.median(target)) if target.size else math.nan)
    if len(curve) < 2 or not target.size:
        return {**out, "equivalent": math.nan, "ci_low": math.nan, "ci_high": math.nan, "status": "n/a"}
    x_star, status = _point({f: v.to_numpy() for f, v in curve.items()}, target.to_numpy())
    rng = np.random.default_rng(seed)
    sims = np.array(sorted(set(target.index).union(*(set(v.index) for v in curve.values()))))
    draws = np.empty(n_boot)
    for b in range(n_boot):  # paired: one draw of simulations for every cell
        chosen = sims[rng.integers(0, sims.size, sims.size)]
        boot = {f: _draw(v, chosen) for f, v in curve.items()}
        boot = {f: v for f, v in boot.items() if v.size}
        drawn = _draw(target, chosen)
        draws[b] = _point(boot, drawn)[0] if len(boot) >= 2 and drawn.size else math.nan
    draws = draws[~np.isnan(draws)]
    alpha = (1 - level) / 2
    if not draws.size:
        return {**out, "equivalent": x_star, "ci_low": math.nan, "ci_high": math.nan, "status": status}
    low, high = (float(np.quantile(draws, q, method="lower" if q < 0.5 else "higher")) for q in (alpha, 1 - alpha))
    return {**out, "equivalent": x_star, "ci_low": low, "ci_high": high, "status": status}


def real_scan_equivalents(results: pd.DataFrame, *, metric: str, baseline: str = "none", n_boot: int = 1000,
                          seed: int = 0) -> pd.DataFrame:
    """X* for every (model, policy other than the baseline, fraction) whose model has the baseline at 2+ fractions.

    A cell made of the baseline's own runs at that fraction (shared by construction) is left out.
    """
    rows = []
    for model in results["model"].unique() if len(results) else []:
        mine = results[results["model"] == model]
        if mine.loc[mine["policy"] == baseline, "real_frac"].nunique() < 2:
            continue
        for (policy, frac), cell in mine[mine["policy"] != baseline].groupby(["policy", "real_frac"], sort=False):
            if same_runs(cell, mine[(mine["policy"] == baseline) & np.isclose(mine["real_frac"], frac)]):
                continue  # a cell shared with the baseline's (synthetic at 1.0 is none at 1.0): its answer is itself
            rows.append(real_scan_equivalent(results, model, policy, frac, metric=metric, baseline=baseline,
                                             n_boot=n_boot, seed=seed))
    return pd.DataFrame(rows, columns=COLUMNS)


def _pct(x: float) -> str:
    return "beyond the largest fraction run" if x == math.inf else ("n/a" if not math.isfinite(x) else f"{100 * x:.0f}%")


def describe(row: dict[str, Any]) -> str:
    """``"30% real + synthetic ≈ 62% real [55%, 70%]"`` (or ``beyond 100%``, ``at most 30%``)."""
    head = f"{100 * row['real_frac']:.0f}% real + {row['policy']}"
    if row["status"] == "n/a":
        return f"{head}: no equivalent (the baseline needs two or more real fractions)"
    x = row["equivalent"]
    value = ("beyond the largest fraction run" if row["status"] == "beyond"
             else f"at most {_pct(x)}" if row["status"] == "at_most" else _pct(x))
    return f"{head} ≈ {value} real [{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]"
