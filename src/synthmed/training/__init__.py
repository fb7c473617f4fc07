"""Training (Chapters 4 and 7): one experiment end to end, and the one loop every model trains in.

- :mod:`.run`: :func:`train` — setup → prepare → fit → finish, inside one MLflow run.
- :mod:`.loop`: the one loop — :func:`fit_stack` trains k ≥ 1 models (:func:`fit`: one) over the
  batch/epoch/step plan, with the optimizer, loss, validation, early stopping and best-epoch restore.
- :mod:`.stack`: what the loop trains — one model, or k models stacked under ``vmap``.
- :mod:`.group`: :func:`train_together` — k runs, each in its own MLflow run, their models stacked.
"""

from __future__ import annotations

from synthmed.training.loop import Member, fit, fit_stack, make_optimizer, step_budget
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
from synthmed.training.group import RunRequest, Trained, train_together
from synthmed.training.stack import Single, Stack, Vmapped, stack, stack_refusal

__all__ = ["Job", "Member", "Prepared", "RunRequest", "Single", "Stack", "TrainResult", "Trained", "Vmapped",
           "augmented_examples", "autocast_dtype", "finish", "fit", "fit_stack", "load_splits", "make_optimizer",
           "prepare", "resolve_device", "sample_real", "setup", "stack", "stack_refusal", "step_budget", "to_input",
           "train", "train_together"]
