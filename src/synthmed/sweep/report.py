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
from typing import TYPE_CHECKING

import mlflow
from mlflow.entities import Metric

from synthmed.stats import Tables, build_tables, cell_prefix
from synthmed.sweep.render import write_report
from synthmed.sweep.results import SweepData, child_runs, load_sweep
from synthmed.tracking import names

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

__all__ = ["Published", "SweepData", "child_runs", "load_sweep", "parent_metrics", "publish",
           "sweep_tables"]  # the loaders are re-exported

ARTIFACT_DIR = "report"
#: extra pairs a report makes when both policies ran: (policy, its control)
CONTROLS = (("synthetic", "oversample"),)
_STATS = ("median", "iqr", "mean", "std", "ci_low", "ci_high")
_PAIR_STATS = ("median_diff", "ci_low", "ci_high", "hl", "hl_low", "hl_high", "p_value", "p_holm", "rank_biserial",
               "d_z")


@dataclass
class Published:
    """What :func:`publish` produced."""

    data: SweepData
    summary: pd.DataFrame
    pairs: pd.DataFrame
    directory: Path | None  # the ``--output`` copy, when asked for
    equivalents: pd.DataFrame | None = None  # real-scan equivalents (see synthmed.stats.equivalence)


def sweep_tables(results: pd.DataFrame, budget: str | None = "steps") -> Tables:
    """The tables of a sweep's results over its metrics (:data:`synthmed.tracking.names.SWEEP_METRICS`);
    real-scan equivalents only under ``budget="steps"``."""
    return build_tables(results, names.SWEEP_METRICS, headline=names.HEADLINE, controls=CONTROLS, budget=budget)


def publish(parent_run_id: str, *, client: MlflowClient | None = None, output: str | Path | None = None) -> Published:
    """Summarise a sweep and log metrics, tables, figures and the report to its parent run."""
    client = client or mlflow.MlflowClient()
    data = load_sweep(parent_run_id, client)
    tables = sweep_tables(data.results, data.provenance.get("budget", "epochs"))  # made once: the metrics below and the report both read them
    _log_metrics(client, parent_run_id, parent_metrics(data, tables), step=len(data.results))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / ARTIFACT_DIR
        write_report(folder, data, tables)
        client.log_artifacts(parent_run_id, str(folder), ARTIFACT_DIR)
        directory = None
        if output is not None:
            directory = Path(output)
            shutil.copytree(folder, directory, dirs_exist_ok=True)
    return Published(data, tables.summary, tables.pairs, directory, tables.equivalents)


def parent_metrics(data: SweepData, tables: Tables) -> dict[str, float]:
    """The parent run's metrics, read off the report's tables: ``<cell or pair>.<metric>.<stat>`` and counts."""
    values: dict[str, float] = {"simulations_finished": len(data.results), "simulations_missing": data.failed}
    for row in tables.summary.to_dict("records"):
        prefix = cell_prefix(row["model"], row["policy"], row["real_frac"])
        values[f"{prefix}.n"] = row["n"]
        for metric in names.SWEEP_METRICS:
            values.update({f"{prefix}.{metric}.{s}": row.get(f"{metric}.{s}", math.nan) for s in _STATS})
    for row in tables.pairs.to_dict("records"):
        values[f"{row['name']}.n"] = row.get(f"{names.HEADLINE}.n", math.nan)
        for metric in names.SWEEP_METRICS:
            values.update({f"{row['name']}.{metric}.{s}": row.get(f"{metric}.{s}", math.nan) for s in _PAIR_STATS})
    for row in tables.equivalents.to_dict("records"):  # X* as a fraction; "beyond" has no finite value: a flag
        prefix = f"{cell_prefix(row['model'], row['policy'], row['real_frac'])}.real_scan_equivalent"
        values.update({prefix: row["equivalent"], f"{prefix}.ci_low": row["ci_low"],
                       f"{prefix}.ci_high": row["ci_high"], f"{prefix}.beyond": float(row["status"] == "beyond")})
    return values


def _log_metrics(client: MlflowClient, run_id: str, values: dict[str, float], *, step: int) -> None:
    """Log the finite ``values`` at ``step`` (finished simulations so far), in batches MLflow accepts."""
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in values.items() if v is not None and math.isfinite(v)]
    for start in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=batch[start : start + 1000])
