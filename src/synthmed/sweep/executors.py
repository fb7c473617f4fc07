"""Where a sweep's simulations run: this process, local worker processes, or Ray tasks.

Every executor calls :func:`run_task` (which calls :func:`synthmed.training.train`) with the
dataset loaded once per process, and yields an :class:`Outcome` per simulation as it finishes.
A failed simulation is recorded in MLflow (a FAILED child run with ``synthmed.error`` and
``error.txt``) and yielded with its traceback; the caller decides whether to go on.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import mlflow
import torch
from tqdm.auto import tqdm

from synthmed import interrupts, training
from synthmed.errors import SynthmedError
from synthmed.runtime import tune_memory
from synthmed.sweep.spec import TAG_CELL, TAG_ID, TAG_SIMULATION, Task
from synthmed.tracking import names

if TYPE_CHECKING:
    import pluggy

    from synthmed.data.base import Splits

_SPLITS: Splits | None = None  # the dataset of a worker process, loaded once by _init_worker


@dataclass
class Outcome:
    """What became of one simulation."""

    task: Task
    run_id: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # formatted traceback when it failed


class SweepError(SynthmedError):
    """A simulation failed and the sweep was asked to stop (``fail_fast``)."""

    def __init__(self, outcome: Outcome):
        self.outcome = outcome
        t = outcome.task
        last = (outcome.error or "").strip().splitlines()[-1:] or ["unknown error"]
        super().__init__(
            f"simulation {t.simulation} of cell {t.cell.label} failed (run {outcome.run_id}): {last[0]}\n"
            f"The traceback is in that run's error.txt; fix the cause and rerun the same command to resume.\n\n"
            f"{outcome.error}"
        )


def run_task(task: Task, parent_run_id: str, splits: Splits, pm: pluggy.PluginManager | None = None) -> Outcome:
    """Train one simulation as a child run of ``parent_run_id``; record a failure instead of raising."""
    started = int(time.time() * 1000)
    try:
        result = training.train(task.config, splits=splits, pm=pm, parent_run_id=parent_run_id,
                                tags=task.tags, run_name=task.run_name)
    except Exception as exc:  # recorded in MLflow and returned; sweep(fail_fast=True) re-raises it
        error = "".join(traceback.format_exception(exc))
        return Outcome(task, record_failure(task, parent_run_id, exc, error, started), error=error)
    return Outcome(task, result.run_id, dict(result.metrics))


def record_failure(task: Task, parent_run_id: str, exc: BaseException, error: str, started: int) -> str:
    """The FAILED child run of this attempt: train's own (it records errors), or a new one."""
    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    query = (f"tags.`{TAG_ID}` = '{task.tags[TAG_ID]}' and tags.`{TAG_CELL}` = '{task.cell.label}' and "
             f"tags.`{TAG_SIMULATION}` = '{task.simulation}' and attributes.start_time >= {started}")
    runs = client.search_runs([experiment_id], query, max_results=1)
    if runs:
        return runs[0].info.run_id
    # train() failed before it opened a run (e.g. a plugin's from_config): record one here
    tags = {**task.tags, "mlflow.parentRunId": parent_run_id,
            names.TAG_ERROR: f"{type(exc).__name__}: {exc}"[:5000]}
    run_id = client.create_run(experiment_id, run_name=task.run_name, tags=tags).info.run_id
    client.log_text(run_id, error, "error.txt")
    client.set_terminated(run_id, "FAILED")
    return run_id


def execute(tasks: list[Task], parent_run_id: str, *, splits: Splits, pm: pluggy.PluginManager | None,
            workers: int, executor: str, address: str | None, gpus_per_task: float) -> Iterator[Outcome]:
    """Yield one :class:`Outcome` per task, in completion order. Closing the iterator cancels the rest."""
    if executor == "ray":
        return _ray(tasks, parent_run_id, splits, address, gpus_per_task)
    if workers > 1:
        return _processes(tasks, parent_run_id, splits, workers)
    return (run_task(task, parent_run_id, splits, pm) for task in tasks)


# --- local worker processes -----------------------------------------------------------------------
def tracking_uri() -> str:
    """The tracking URI with a relative local path made absolute (workers may run elsewhere)."""
    uri = mlflow.get_tracking_uri()
    for prefix in ("sqlite:///", "file://"):
        if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
            return prefix + os.path.abspath(uri[len(prefix):])
    if "://" not in uri:
        return os.path.abspath(uri)
    return uri


def _init_worker(payload: bytes, uri: str, threads: int) -> None:
    global _SPLITS
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the parent, which forwards a SIGTERM
    interrupts.install((signal.SIGTERM, signal.SIGHUP))  # a stop ends the task's run as KILLED, with its checkpoint
    tune_memory()  # this process's own malloc, before it unpacks the dataset
    torch.set_num_threads(threads)
    mlflow.set_tracking_uri(uri)
    _SPLITS = pickle.loads(payload)


def _worker_task(task: Task, parent_run_id: str) -> Outcome:
    if _SPLITS is None:
        raise RuntimeError("sweep worker process started without its dataset (_init_worker did not run)")
    interrupts.raise_if_pending()  # a worker told to stop starts no further task
    return run_task(task, parent_run_id, _SPLITS)


def _processes(tasks: list[Task], parent_run_id: str, splits: Splits, workers: int) -> Iterator[Outcome]:
    threads = max(1, (os.cpu_count() or 1) // workers)
    payload = pickle.dumps(splits, protocol=pickle.HIGHEST_PROTOCOL)  # by value; no shared memory
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(payload, tracking_uri(), threads))
    try:
        futures = [pool.submit(_worker_task, task, parent_run_id) for task in tasks]
        for future in as_completed(futures):
            yield future.result()
    except BaseException:
        if interrupts.pending() is not None:  # this process was told to stop: so are its workers, once each
            for process in list(getattr(pool, "_processes", {}).values()):
                if process.is_alive():
                    os.kill(process.pid, signal.SIGTERM)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --- Ray ------------------------------------------------------------------------------------------
def _ray_task(payload: bytes, task: Task, parent_run_id: str, uri: str) -> Outcome:
    torch.set_num_threads(1)  # the task holds one CPU (num_cpus=1)
    mlflow.set_tracking_uri(uri)
    return run_task(task, parent_run_id, pickle.loads(payload))


def _ray(tasks: list[Task], parent_run_id: str, splits: Splits, address: str | None,
         gpus_per_task: float) -> Iterator[Outcome]:
    try:
        import ray  # optional extra: synthmed[ray]
    except ImportError:
        raise SynthmedError("executor='ray' needs Ray: pip install 'synthmed[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    pending: dict[Any, Task] = {}
    try:
        data = ray.put(pickle.dumps(splits, protocol=pickle.HIGHEST_PROTOCOL))
        remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task, max_retries=0)(_ray_task)
        uri = tracking_uri()
        pending.update({remote.remote(data, task, parent_run_id, uri): task for task in tasks})
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                yield ray.get(ref)
    finally:
        for ref in pending:
            ray.cancel(ref)
        if started:
            ray.shutdown()


# --- progress ------------------------------------------------------------------------------------
class _Progress:
    def __init__(self, bar: Any):
        self.bar = bar
        self.failed = 0

    def advance(self, outcome: Outcome) -> None:
        if outcome.error is not None:
            self.failed += 1
            last = outcome.error.strip().splitlines()[-1]
            self.bar.write(f"simulation {outcome.task.simulation} of {outcome.task.cell.label} failed "
                           f"(run {outcome.run_id}): {last}")
        self.bar.set_postfix(cell=outcome.task.cell.label, failed=self.failed, refresh=False)
        self.bar.update(1)


@contextmanager
def progress(total: int, done: int, sweep_id: str, quiet: bool) -> Iterator[_Progress]:
    """One bar for the whole sweep: simulations done of all, ETA, the last cell in the postfix."""
    with tqdm(total=total, initial=done, desc=f"sweep {sweep_id[:8]}", unit="sim", disable=quiet,
              dynamic_ncols=True) as bar:
        yield _Progress(bar)
