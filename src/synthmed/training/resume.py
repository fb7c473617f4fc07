"""A training run that survives being killed: where its checkpoint lives and which run a rerun reopens.

A run's checkpoint is ``<checkpoint root>/runs/<run key>/<run id>.pt`` (:mod:`synthmed.checkpoints`),
where the run key hashes what makes two invocations "the same command": the config (without
``quiet`` and the checkpoint settings), the sweep parent and the run name. Rerunning the same
command finds the checkpoint of an unfinished run of that key — ``KILLED`` or ``FAILED``, or
``RUNNING`` with a provably dead owner — and reopens that MLflow run: same run id, metrics continued
at their steps. A run whose owner is alive is never taken over. Under ``mlflow run`` each
invocation gets a new run from the launcher: the checkpoint's state continues there, tagged with
the run it came from (:data:`~synthmed.tracking.names.TAG_RESUMED_FROM`), and that run's
per-epoch metrics are copied over, so the new run's curves start at epoch 1.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthmed.checkpoints import Checkpointer
from synthmed.config import Config
from synthmed.generators.cache import GenerationCache
from synthmed.paths import refuse_file_in_the_way
from synthmed.tracking import ghosts

__all__ = ["Resume", "checkpoint_root", "find_resumable", "run_key"]

_NOT_IN_KEY = ("quiet", "checkpoint_every", "checkpoint_dir")


def run_key(config: Config, parent_run_id: str | None, run_name: str | None) -> str:
    """What makes a rerun "the same command": the config (not display or checkpoint settings), parent, name."""
    fields = {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_KEY}
    text = json.dumps({"config": fields, "parent": parent_run_id, "name": run_name}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def checkpoint_root(config: Config) -> Path:
    """``config.checkpoint_dir``, else ``_checkpoints`` under the generation cache root."""
    if config.checkpoint_dir:
        return Path(config.checkpoint_dir).expanduser()
    return GenerationCache.from_config(config).root / "_checkpoints"


@dataclass
class Resume:
    """Where one invocation keeps its checkpoint, and the unfinished run it continues (if any)."""

    folder: Path
    run_id: str | None  # the run to continue; None: a fresh run

    def checkpointer(self, config: Config, run_id: str) -> Checkpointer:
        """The checkpoint of run ``run_id`` (the continued run's own file, moved over when the run id changed)."""
        path = self.folder / f"{run_id}.pt"
        if self.run_id is not None and self.run_id != run_id and config.checkpoint_every > 0:
            old = self.folder / f"{self.run_id}.pt"
            if old.is_file():
                os.replace(old, path)
        return Checkpointer(path, config.checkpoint_every, what="training run")


def find_resumable(config: Config, parent_run_id: str | None, run_name: str | None) -> Resume:
    """The checkpoint folder of this command and the newest unfinished run of it that may be continued."""
    root = checkpoint_root(config)
    if config.checkpoint_every > 0:  # a file where the folder must go fails now, not at the first checkpoint
        refuse_file_in_the_way(root, f"checkpoint folder {root}", "point checkpoint_dir (--checkpoint-dir) at a folder, "
                               "or turn checkpoints off: --checkpoint-every 0")
    folder = root / "runs" / run_key(config, parent_run_id, run_name)
    if config.checkpoint_every <= 0 or not folder.is_dir():
        return Resume(folder, None)
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    for path in sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            run = client.get_run(path.stem)
        except MlflowException:  # a run of another store, or deleted: not this store's to continue
            continue
        status = run.info.status
        if status == "FINISHED" or run.info.lifecycle_stage != "active":
            path.unlink(missing_ok=True)  # finished (or deleted) since: its checkpoint has no use left
            continue
        if status == "RUNNING" and ghosts.is_dead(run.data.tags) is None:
            continue  # its owner may be alive (or on another host): never take it over
        return Resume(folder, path.stem)
    return Resume(folder, None)


def copy_epoch_metrics(from_run: str, to_run: str, keys: Any, last_step: int) -> None:
    """Copy ``from_run``'s per-epoch metrics ``keys`` up to ``last_step`` into ``to_run`` (same steps and times)."""
    import mlflow
    from mlflow.entities import Metric

    client = mlflow.MlflowClient()
    metrics = [Metric(m.key, m.value, m.timestamp, m.step) for key in keys
               for m in client.get_metric_history(from_run, key) if m.step <= last_step]
    for start in range(0, len(metrics), 1000):
        client.log_batch(to_run, metrics=metrics[start : start + 1000])
