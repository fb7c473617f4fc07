"""The tables of a sweep: one row per cell, one row per pair, one row per real-scan equivalent.

:func:`build_tables` makes all three from one results frame (see :mod:`.cells`); the report renders
them and the parent run's metrics are read off them, so the two never disagree. The metric names
are the caller's (``metrics``, headline first), as are the control pairs a report makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd

from synthmed.stats.cells import CELL, pair_name, same_runs
from synthmed.stats.equivalence import COLUMNS as EQUIVALENCE_COLUMNS
from synthmed.stats.equivalence import real_scan_equivalents, refusal
from synthmed.stats.multiplicity import holm
from synthmed.stats.summaries import paired_difference, summarize

__all__ = ["PAIR_KEYS", "Tables", "build_tables", "pairs_table", "summary_table"]

PAIR_KEYS = ["model", "kind", "policy", "baseline_policy", "real_frac", "baseline_frac", "name"]


@dataclass(frozen=True)
class Tables:
    """The three tables of a sweep, made once and read by both the report and the parent run's metrics."""

    summary: pd.DataFrame  # one row per cell (:func:`summary_table`)
    pairs: pd.DataFrame  # one row per comparison (:func:`pairs_table`)
    equivalents: pd.DataFrame  # one row per (model, policy, fraction) with a real-scan equivalent
    equivalence_refused: str | None = None  # why there is none (budget=epochs), for the report


def build_tables(results: pd.DataFrame, metrics: Sequence[str], *, headline: str,
                 controls: Sequence[tuple[str, str]] = (), baseline_policy: str = "none",
                 baseline_frac: float = 1.0, budget: str | None = "steps") -> Tables:
    """Summary, pairs and the real-scan equivalents of ``headline`` (lower is better) over ``results``.

    The equivalents only under ``budget="steps"`` (:func:`synthmed.stats.equivalence.refusal` says why).
    """
    refused = refusal(budget)
    return Tables(
        summary=summary_table(results, metrics),
        pairs=pairs_table(results, metrics, baseline_policy=baseline_policy, baseline_frac=baseline_frac,
                          controls=controls),
        equivalents=(pd.DataFrame(columns=EQUIVALENCE_COLUMNS) if refused
                     else real_scan_equivalents(results, metric=headline, baseline=baseline_policy)),
        equivalence_refused=refused,
    )


def summary_table(results: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per cell: n and :func:`summarize` of each metric (columns ``<metric>.<stat>``)."""
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
    metrics: Sequence[str],
    *,
    baseline_policy: str = "none",
    baseline_frac: float = 1.0,
    controls: Sequence[tuple[str, str]] = (),
) -> pd.DataFrame:
    """Paired comparisons: each policy vs ``baseline_policy`` at the same model and fraction,
    and each fraction vs ``baseline_frac`` for the same model and policy.

    Args:
        results: one row per finished simulation (see :mod:`.cells`).
        metrics: the metric columns to compare.
        baseline_policy: the policy every other is compared with.
        baseline_frac: the real fraction every other is compared with.
        controls: extra ``(policy, its control)`` pairs made when both ran, e.g.
            ``("synthetic", "oversample")``: what the generator adds beyond size and balance.

    Returns:
        Columns :data:`PAIR_KEYS` (``kind`` is ``'policy'`` or ``'fraction'``, ``name`` the
        :func:`~synthmed.stats.cells.pair_name`) and ``<metric>.<stat>`` for the keys of
        :func:`paired_difference` and ``p_holm`` (Holm across every comparison, per metric).
    """
    by_cell = {key: g.set_index("simulation") for key, g in results.groupby(CELL, sort=False)}
    rows = []
    for (model, policy, frac), g in by_cell.items():
        against = [("policy", (model, baseline_policy, frac)), ("fraction", (model, policy, baseline_frac))]
        for policy_, control in controls:
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
    table = pd.DataFrame(rows, columns=None if rows else PAIR_KEYS)
    for metric in metrics:  # Holm across every comparison of the table, per metric; raw p kept
        if f"{metric}.p_value" in table:
            table[f"{metric}.p_holm"] = holm(table[f"{metric}.p_value"].to_numpy(dtype=float))
    return table
