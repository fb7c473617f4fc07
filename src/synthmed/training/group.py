"""k runs trained together: each run's own setup and MLflow run, one loop over their stacked models.

Each run keeps exactly what :func:`~synthmed.training.run.train` would give it alone: its own real
sample and training set (:func:`~synthmed.training.run.prepare` in its own MLflow run), its own
initialisation (``torch.manual_seed(config.seed)`` then the factory), its own batch order and
augmentation draws. The runs are opened and prepared one by one and left ``RUNNING``, their models
train as one :class:`~synthmed.training.stack.Stack` in :func:`~synthmed.training.loop.fit_stack`,
then each run is resumed to evaluate and log (:func:`~synthmed.training.run.finish`). Runs whose
models cannot be stacked (:func:`~synthmed.training.stack.stack_refusal`) train one at a time, the
reason logged as the tag ``synthmed.batched_fallback``; stacked runs carry ``synthmed.batched=k``.

Training knows nothing of sweeps: it takes configs, tags and run names, and answers with one
:class:`Trained` per request, in order.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from synthmed import tracking
from synthmed.config import Config
from synthmed.runtime import release_freed_memory
from synthmed.tracking import names
from synthmed.training import loop
from synthmed.training.run import TrainResult, finish, prepare, setup, train
from synthmed.training.stack import stack, stack_refusal

if TYPE_CHECKING:
    import pluggy

    from synthmed.data.base import Splits
    from synthmed.training.run import Job, Prepared

__all__ = ["RunRequest", "Trained", "train_together"]


@dataclass
class RunRequest:
    """One run to train: its config, extra MLflow tags and run name."""

    config: Config
    tags: dict[str, str] = field(default_factory=dict)
    run_name: str | None = None


@dataclass
class Trained:
    """What became of one request: its result, or the error (a formatted traceback) and its run, if one opened."""

    request: RunRequest
    run_id: str | None
    result: TrainResult | None = None
    error: str | None = None
    exception: Exception | None = field(default=None, repr=False)  # set whenever `error` is


@dataclass
class _Ready:
    request: RunRequest
    job: Job
    prepared: Prepared
    run_id: str


def train_together(requests: Sequence[RunRequest], *, splits: Splits, pm: pluggy.PluginManager | None = None,
                   parent_run_id: str | None = None) -> Iterator[Trained]:
    """Train the requested runs with their models stacked; yield one :class:`Trained` per request, in order.

    A failure is recorded in its run (FAILED, with ``synthmed.error`` and ``error.txt``) and yielded,
    not raised; an interrupt (``KeyboardInterrupt``) propagates and leaves unfinished runs ``RUNNING``
    for the caller to mark.
    """
    if len(requests) == 1:
        yield _alone(requests[0], splits, pm, parent_run_id)
        return
    try:
        ready: list[_Ready] = []
        for request in requests:  # each run opens, samples and builds its training set and model
            opened, failure = _open(request, splits, pm, parent_run_id)
            if failure is not None:
                yield failure
            else:
                ready.append(opened)
        if ready:
            yield from _train_ready(ready)
    finally:
        release_freed_memory()  # as train() does after each run


def _alone(request: RunRequest, splits: Splits, pm: Any, parent_run_id: str | None) -> Trained:
    try:
        result = train(request.config, splits=splits, pm=pm, parent_run_id=parent_run_id, tags=request.tags,
                       run_name=request.run_name)
    except Exception as exc:  # recorded in its run by tracking.run, if one opened
        return _failed(request, None, exc)
    return Trained(request, result.run_id, result)


def _open(request: RunRequest, splits: Splits, pm: Any, parent_run_id: str | None) -> tuple[Any, Trained | None]:
    logger = None
    try:
        job = setup(request.config, splits=splits, pm=pm)
        with tracking.run(job.config, job.splits, parent_run_id=parent_run_id, tags=request.tags,
                          run_name=request.run_name, suspend=True) as logger:
            prepared = prepare(job, logger)
    except Exception as exc:
        return None, _failed(request, logger.run_id if logger else None, exc)
    return _Ready(request, job, prepared, logger.run_id), None


def _train_ready(ready: list[_Ready]) -> Iterator[Trained]:
    """One loop over the stacked models (or each alone, when they cannot stack); then each run finishes."""
    job = ready[0].job
    refusal = stack_refusal([r.prepared.model for r in ready], [r.prepared.train_set for r in ready])
    infos: list[dict[str, Any]] | None = None
    if refusal is None:
        members = [loop.Member(r.prepared.train_set, r.prepared.val, r.job.config, tracking.metrics_logger(r.run_id),
                               dict(r.prepared.watch or {}))
                   for r in ready]
        try:
            infos = loop.fit_stack(stack([r.prepared.model for r in ready]), job.policy, members, job.device,
                                   max_steps=ready[0].prepared.max_steps)
        except Exception as exc:  # every run of the stack failed with it: record it in each
            for r in ready:
                _record_error(r, exc)
                yield _failed(r.request, r.run_id, exc)
            return
    for n, r in enumerate(ready):  # each run resumes to finish
        try:
            with tracking.run(r.job.config, r.job.splits, resume_run_id=r.run_id) as logger:
                if infos is not None:
                    info = infos[n]
                    logger.set_tags({names.TAG_STACKED: str(len(ready))})
                else:
                    logger.set_tags({names.TAG_STACK_FALLBACK: refusal})
                    info = loop.fit(r.prepared.model, r.job.policy, r.prepared.train_set, r.prepared.val, r.job.config,
                                    r.job.device, logger.log_metrics, max_steps=r.prepared.max_steps,
                                    forward=r.prepared.forward, watch=r.prepared.watch)
                result = finish(r.job, r.prepared, info, logger)
        except Exception as exc:
            yield _failed(r.request, r.run_id, exc)
            continue
        yield Trained(r.request, result.run_id, result)


def _failed(request: RunRequest, run_id: str | None, exc: Exception) -> Trained:
    return Trained(request, run_id, error="".join(traceback.format_exception(exc)), exception=exc)


def _record_error(ready: _Ready, exc: Exception) -> None:
    """Resume the run to record ``exc`` in it (tracking.run marks it FAILED and re-raises; kept from here)."""
    try:
        with tracking.run(ready.job.config, ready.job.splits, resume_run_id=ready.run_id):
            raise exc
    except Exception as recorded:
        if recorded is not exc:
            raise
