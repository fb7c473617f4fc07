"""A sweep's summary, figures and report, rebuilt from MLflow data alone.

:func:`publish` reads the parent run (its params name the grid, the ``synthmed.simulations``
tag the requested N) and the child runs tagged ``synthmed.sweep_id``, then logs to the parent:
summary metrics (``cnn.synthetic.0.3.test_cross_entropy.median``, ...), pair metrics
(``cnn.synthetic_vs_none.0.3.test_cross_entropy.p_value``, ...) and the artifacts under
``report/``: ``summary.csv``, ``pairs.csv``, ``figures/*.png``, ``report.md``, ``report.html``.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthmed.errors import SynthmedError
from synthmed.stats import METRICS, cell_prefix, pairs_table, summary_table

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = ["Published", "SweepData", "child_runs", "load_sweep", "publish"]

ARTIFACT_DIR = "report"
_STATS = ("median", "iqr", "mean", "std", "ci_low", "ci_high")
_PAIR_STATS = ("median_diff", "ci_low", "ci_high", "p_value")


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


@dataclass
class Published:
    """What :func:`publish` produced."""

    data: SweepData
    summary: pd.DataFrame
    pairs: pd.DataFrame
    directory: Path | None  # the ``--output`` copy, when asked for


def child_runs(client: MlflowClient, parent_run_id: str, sweep_id: str) -> list[Run]:
    """Every run tagged with this sweep id in the parent's experiment (all pages)."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    query = f"tags.`synthmed.sweep_id` = '{sweep_id}'"
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
    import mlflow
    import pandas as pd

    client = client or mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    tags, params = parent.data.tags, parent.data.params
    if tags.get("synthmed.sweep") != "1" or "synthmed.sweep_id" not in tags:
        raise SynthmedError(f"run {parent_run_id} is not a sweep's parent run (no tag synthmed.sweep=1) — "
                            f"pass the run id of the sweep itself, shown by `synthmed sweep`")
    sweep_id, n = tags["synthmed.sweep_id"], int(tags.get("synthmed.simulations", "0"))
    models = [m.strip() for m in params["models"].split(",")]
    policies = [p.strip() for p in params["policies"].split(",")]
    fracs = sorted(float(f) for f in params["real_fracs"].split(","))
    cells = {(m, p, f"{f:g}") for m in models for p in policies for f in fracs}
    rows: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for run in child_runs(client, parent_run_id, sweep_id):
        t, metrics = run.data.tags, run.data.metrics
        key = (t.get("synthmed.model", ""), t.get("synthmed.policy", ""), t.get("synthmed.real_frac", ""),
               int(t.get("synthmed.simulation", "-1")))
        if key[:3] not in cells or not 0 <= key[3] < n:
            continue
        if run.info.status != "FINISHED" or "test_cross_entropy" not in metrics:
            continue
        if key in rows and rows[key]["start_time"] > run.info.start_time:
            continue  # a duplicate finished run: the newest wins
        rows[key] = dict(model=key[0], policy=key[1], real_frac=float(key[2]), simulation=key[3],
                         run_id=run.info.run_id, start_time=run.info.start_time,
                         **{m: metrics.get(m, math.nan) for m in METRICS})
    order = {(m, p, f): i for i, (m, p, f) in enumerate((m, p, f) for m in models for p in policies for f in fracs)}
    results = pd.DataFrame(sorted(rows.values(), key=lambda r: (order[(r["model"], r["policy"], r["real_frac"])],
                                                                r["simulation"])),
                           columns=["model", "policy", "real_frac", "simulation", "run_id", "start_time", *METRICS])
    return SweepData(parent, sweep_id, models, policies, fracs, n, results, len(cells) * n - len(results))


def publish(parent_run_id: str, *, client: MlflowClient | None = None, output: str | Path | None = None) -> Published:
    """Summarise a sweep and log metrics, tables, figures and the report to its parent run."""
    import mlflow

    from synthmed import _report_render

    client = client or mlflow.MlflowClient()
    data = load_sweep(parent_run_id, client)
    summary, pairs = summary_table(data.results), pairs_table(data.results)
    _log_metrics(client, parent_run_id, data, summary, pairs)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / ARTIFACT_DIR
        _report_render.write_report(folder, data, summary, pairs)
        client.log_artifacts(parent_run_id, str(folder), ARTIFACT_DIR)
        directory = None
        if output is not None:
            directory = Path(output)
            shutil.copytree(folder, directory, dirs_exist_ok=True)
    return Published(data, summary, pairs, directory)


def _log_metrics(client: MlflowClient, run_id: str, data: SweepData, summary: pd.DataFrame,
                 pairs: pd.DataFrame) -> None:
    from mlflow.entities import Metric

    values: dict[str, float] = {"simulations_finished": len(data.results), "simulations_missing": data.failed}
    for row in summary.to_dict("records"):
        prefix = cell_prefix(row["model"], row["policy"], row["real_frac"])
        values[f"{prefix}.n"] = row["n"]
        for metric in METRICS:
            values.update({f"{prefix}.{metric}.{s}": row.get(f"{metric}.{s}", math.nan) for s in _STATS})
    for row in pairs.to_dict("records"):
        values[f"{row['name']}.n"] = row.get("test_cross_entropy.n", math.nan)
        for metric in METRICS:
            values.update({f"{row['name']}.{metric}.{s}": row.get(f"{metric}.{s}", math.nan) for s in _PAIR_STATS})
    now, step = int(time.time() * 1000), len(data.results)  # step: finished simulations so far
    batch = [Metric(k, float(v), now, step) for k, v in values.items() if v is not None and math.isfinite(v)]
    for start in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=batch[start : start + 1000])
