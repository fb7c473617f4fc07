"""Training (Chapters 4 and 7): one experiment end to end, and the one loop every model trains in.

- :mod:`.run`: :func:`train` — setup → prepare → fit → finish, inside one MLflow run.
- :mod:`.loop`: :func:`fit` — Adam + cross-entropy over the batch/epoch/step plan, validation and
  best-epoch restore.
"""

from __future__ import annotations

from synthmed.training.loop import fit, make_optimizer, step_budget
from synthmed.training.run import (
    Job,
    Prepared,
    TrainResult,
    augmented_examples,
    autocast_dtype,
    finish,
    load_splits,
    prepare,
    resolve_device,
    sample_real,
    setup,
    to_input,
    train,
)

__all__ = ["Job", "Prepared", "TrainResult", "augmented_examples", "autocast_dtype", "finish", "fit", "load_splits",
           "make_optimizer", "prepare", "resolve_device", "sample_real", "setup", "step_budget", "to_input", "train"]
