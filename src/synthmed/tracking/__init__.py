"""Everything a run writes to MLflow, and the names it writes under.

- :mod:`.logger`: the run logger (params, tags, metrics, artifacts, the model and its registry
  entry) and the store checks made before a run starts.
- :mod:`.names`: every tag and headline metric name, the only place a ``synthmed.*`` tag is spelled.
- :mod:`.ghosts`: runs left ``RUNNING`` by a dead process, marked ``KILLED`` by the next run.

Tracking logs what it is handed: it imports no feature (training, sweeps, Grad-CAM, generators).
"""

from __future__ import annotations

from synthmed.tracking import ghosts, names
from synthmed.tracking.logger import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    MODEL_ARTIFACT,
    REGISTRY_ALIAS,
    RunLogger,
    config_from_logged,
    git_commit,
    load_run_config,
    mark_experiment_kind,
    metrics_logger,
    prepare_store,
    run,
)

__all__ = [
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "MODEL_ARTIFACT",
    "REGISTRY_ALIAS",
    "RunLogger",
    "config_from_logged",
    "ghosts",
    "git_commit",
    "load_run_config",
    "mark_experiment_kind",
    "metrics_logger",
    "names",
    "prepare_store",
    "run",
]
