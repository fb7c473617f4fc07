"""A sweep as found in MLflow: its parent run's spec and one row per finished simulation.

The report, the statistics and any analysis of your own start from :func:`load_sweep`; nothing
here draws or logs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd

from synthmed.errors import SynthmedError
from synthmed.sweep.provenance import provenance
from synthmed.tracking import names
from synthmed.tracking.names import READING_METRICS, REFERENCE_METRICS, SWEEP_METRICS

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = ["SweepData", "child_runs", "load_sweep"]

#: the columns collected per run: the compared metrics, the reference lines (lookup, class prior), the
#: protocol's readings (NaN where a run logged none)
METRICS = SWEEP_METRICS + REFERENCE_METRICS + READING_METRICS


@dataclass
class SweepData:
    """A sweep as found in MLflow."""

    parent: Run
    sweep_id: str
    models: list[str]
    policies: list[str]
    real_fracs: list[float]
    simulations: int
    results: pd.DataFrame  # one row per finished (cell, simulation): model, policy, real_frac, simulation, metrics
    failed: int  # requested (cell, simulation) pairs with no finished run (failed, killed or not run)
    provenance: dict[str, str] = field(default_factory=dict)  # what the numbers rest on (see :func:`provenance`)



def child_runs(client: MlflowClient, parent_run_id: str, sweep_id: str) -> list[Run]:
    """Every run tagged with this sweep id in the parent's experiment (all pages)."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    query = f"tags.`{names.TAG_SWEEP_ID}` = '{sweep_id}'"
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, page_token=token)
        runs.extend(r for r in page if r.info.run_id != parent_run_id)
        token = page.token
        if not token:
            return runs


def load_sweep(parent_run_id: str, client: MlflowClient | None = None) -> SweepData:
    """Read a sweep's spec from its parent run and its finished simulations from the children."""
    client = client or mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    tags, params = parent.data.tags, parent.data.params
    if tags.get(names.TAG_SWEEP) != "1" or names.TAG_SWEEP_ID not in tags:
        raise SynthmedError(f"run {parent_run_id} is not a sweep's parent run (no tag {names.TAG_SWEEP}=1) — "
                            f"pass the run id of the sweep itself, shown by `synthmed sweep`")
    sweep_id, n = tags[names.TAG_SWEEP_ID], int(tags.get(names.TAG_SIMULATIONS, "0"))
    models = [m.strip() for m in params["models"].split(",")]
    policies = [p.strip() for p in params["policies"].split(",")]
    fracs = sorted(float(f) for f in params["real_fracs"].split(","))
    cells = {(m, p, f"{f:g}") for m in models for p in policies for f in fracs}
    rows: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    children = child_runs(client, parent_run_id, sweep_id)
    for run in children:
        t, metrics = run.data.tags, run.data.metrics
        key = (t.get(names.TAG_MODEL, ""), t.get(names.TAG_POLICY, ""), t.get(names.TAG_REAL_FRAC, ""),
               int(t.get(names.TAG_SIMULATION, "-1")))
        if key[:3] not in cells or not 0 <= key[3] < n:
            continue
        if run.info.status != "FINISHED" or names.HEADLINE not in metrics:
            continue
        if key in rows and rows[key]["start_time"] > run.info.start_time:
            continue  # a duplicate finished run: the newest wins
        rows[key] = dict(model=key[0], policy=key[1], real_frac=float(key[2]), simulation=key[3],
                         run_id=run.info.run_id, start_time=run.info.start_time,
                         **{m: metrics.get(m, math.nan) for m in METRICS})
    shared = json.loads(tags.get(names.TAG_SHARED_CELLS, "{}"))  # {cell: the cell whose runs it shares}
    for dup, src in shared.items():
        dm, dp, df = dup.split("|")
        sm, sp, sf = src.split("|")
        for key in [k for k in rows if k[:3] == (dm, dp, df)]:
            del rows[key]  # trained by an earlier version: the shared runs stand for them
        for key, row in [(k, r) for k, r in rows.items() if k[:3] == (sm, sp, sf)]:
            rows[(dm, dp, df, key[3])] = {**row, "model": dm, "policy": dp}
    order = {(m, p, f): i for i, (m, p, f) in enumerate((m, p, f) for m in models for p in policies for f in fracs)}
    results = pd.DataFrame(sorted(rows.values(), key=lambda r: (order[(r["model"], r["policy"], r["real_frac"])],
                                                                r["simulation"])),
                           columns=["model", "policy", "real_frac", "simulation", "run_id", "start_time", *METRICS])
    kept = {r["run_id"] for r in rows.values()}
    return SweepData(parent, sweep_id, models, policies, fracs, n, results, len(cells) * n - len(results),
                     provenance(parent, [r for r in children if r.info.run_id in kept]))

