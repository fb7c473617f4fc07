"""Repeated simulations (Chapter 7): models × policies × real fractions × N, resumable, in MLflow.

A sweep is one MLflow parent run with one child run per (cell, simulation). Simulation ``i``
gets the seed :func:`simulation_seed` ``(sweep seed, i)`` in *every* cell, so all policies and
models at one real fraction train on the same stratified real sample (a paired design), and the
synthetic policy draws the same generated images for it. The sweep's identity is a hash of its
spec (:attr:`SweepSpec.sweep_id`); running the same spec again finds the parent run and the
finished children by their tags and runs only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from synthmed.config import Config
from synthmed.errors import SynthmedError
from synthmed.stats import frac_label

if TYPE_CHECKING:
    import pandas as pd
    import pluggy

    from synthmed.data.base import Splits

__all__ = ["Cell", "SweepResult", "SweepSpec", "Task", "simulation_seed", "sweep"]

TAG_SWEEP, TAG_ID, TAG_SIMULATIONS = "synthmed.sweep", "synthmed.sweep_id", "synthmed.simulations"
TAG_CELL, TAG_SIMULATION = "synthmed.cell", "synthmed.simulation"
EXECUTORS = ("local", "ray")
# Fields a sweep sets per child, or that do not change results (where data live, display, device).
_NOT_IN_SPEC = ("model", "policy", "real_frac", "seed", "register", "gradcam", "log_model", "quiet",
                "experiment", "device", "data_dir", "cache_dir")


def simulation_seed(sweep_seed: int, simulation: int) -> int:
    """The seed of simulation ``i``: a function of (sweep seed, i) only, in ``[0, 2**31)``."""
    digest = hashlib.sha256(f"synthmed.sweep/{sweep_seed}/{simulation}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**31


@dataclass(frozen=True)
class Cell:
    """One configuration of a sweep."""

    model: str
    policy: str
    real_frac: float

    @property
    def label(self) -> str:
        """``cnn|synthetic|0.3``: the ``synthmed.cell`` tag of its runs."""
        return f"{self.model}|{self.policy}|{frac_label(self.real_frac)}"


@dataclass(frozen=True)
class Task:
    """One simulation of one cell: the config to train and how its run is tagged."""

    cell: Cell
    simulation: int
    config: Config
    tags: dict[str, str]
    run_name: str


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs. ``simulations`` is not part of its identity: raise it to extend a sweep."""

    base: Config
    models: tuple[str, ...]
    policies: tuple[str, ...]
    real_fracs: tuple[float, ...]
    simulations: int
    seed: int = 0
    gradcam: bool = False
    log_model: bool = False

    def __post_init__(self) -> None:
        for name in ("models", "policies", "real_fracs"):
            values = getattr(self, name)
            if not values:
                raise SynthmedError(f"sweep {name} is empty — give at least one value")
            if len(set(values)) != len(values):
                raise SynthmedError(f"sweep {name}={list(values)} lists a value twice")
        if self.simulations < 1 or self.seed < 0:
            raise SynthmedError(f"simulations={self.simulations} must be >= 1 and seed={self.seed} >= 0")
        for frac in self.real_fracs:
            self.base.replace(real_frac=frac)  # validates the range with Config's message

    def params(self) -> dict[str, str]:
        """The spec as MLflow params of the parent run (and the input of :attr:`sweep_id`)."""
        values = {k: v for k, v in self.base.to_dict().items() if k not in _NOT_IN_SPEC}
        out = {k: "None" if v is None else str(v) for k, v in values.items()}
        out.update(models=",".join(self.models), policies=",".join(self.policies),
                   real_fracs=",".join(frac_label(f) for f in self.real_fracs), sweep_seed=str(self.seed))
        return out

    @property
    def sweep_id(self) -> str:
        return hashlib.sha256(json.dumps(self.params(), sort_keys=True).encode()).hexdigest()[:16]

    def cells(self) -> list[Cell]:
        return [Cell(m, p, f) for m in self.models for p in self.policies for f in self.real_fracs]

    def tasks(self) -> list[Task]:
        """Every (cell, simulation), simulation-major, so an interrupted sweep stays balanced."""
        sweep_id = self.sweep_id
        out = []
        for i in range(self.simulations):
            for cell in self.cells():
                config = self.base.replace(model=cell.model, policy=cell.policy, real_frac=cell.real_frac,
                                           seed=simulation_seed(self.seed, i), register="none",
                                           gradcam=self.gradcam, log_model=self.log_model, quiet=True)
                tags = {TAG_ID: sweep_id, TAG_CELL: cell.label, "synthmed.model": cell.model,
                        "synthmed.policy": cell.policy, "synthmed.real_frac": frac_label(cell.real_frac),
                        TAG_SIMULATION: str(i)}
                name = f"{cell.model}-{cell.policy}-{frac_label(cell.real_frac)}-s{i:03d}"
                out.append(Task(cell, i, config, tags, name))
        return out


@dataclass
class SweepResult:
    """What :func:`sweep` returns: the parent run, the tables and what this call did."""

    parent_run_id: str
    sweep_id: str
    summary: pd.DataFrame
    pairs: pd.DataFrame
    ran: int  # simulations run by this call
    skipped: int  # found finished from an earlier call
    failed: list[str] = field(default_factory=list)  # child runs that failed in this call


def _as_list(value: str | Sequence[Any] | None, default: Any, kind: type) -> tuple[Any, ...]:
    items = [default] if value is None else value.split(",") if isinstance(value, str) else list(value)
    try:
        return tuple(kind(str(v).strip()) for v in items if str(v).strip())
    except ValueError:
        raise SynthmedError(f"{value!r} is not a comma-separated list of {kind.__name__} values") from None


def sweep(
    config: Config | None = None,
    *,
    models: str | Sequence[str] | None = None,
    policies: str | Sequence[str] | None = None,
    real_fracs: str | Sequence[float] | None = None,
    simulations: int = 100,
    seed: int | None = None,
    gradcam: bool = False,
    log_model: bool = False,
    workers: int = 1,
    executor: str = "local",
    address: str | None = None,
    gpus_per_task: float = 0.0,
    fail_fast: bool = False,
    splits: Splits | None = None,
    pm: pluggy.PluginManager | None = None,
    **overrides: Any,
) -> SweepResult:
    """Run (or resume) a sweep and log its summary, figures and report to the parent run.

    Args:
        config: base experiment; ``overrides`` replace its fields. Its model, policy, real
            fraction and seed are the defaults of the lists below.
        models, policies, real_fracs: the grid (lists or comma-separated strings).
        simulations: N per cell; raising it later extends the same sweep.
        seed: sweep seed (default ``config.seed``); simulation seeds derive from it.
        gradcam, log_model: log Grad-CAM / the model in every child (off: costly, not summarised).
        workers: local processes (``executor='local'``); 1 runs in this process.
        executor: ``'local'`` or ``'ray'`` (one Ray task per simulation).
        address: Ray cluster address (``None`` starts a local Ray; ``'auto'`` joins one).
        gpus_per_task: GPU share of each Ray task (e.g. 0.25 puts four on one GPU).
        fail_fast: stop at the first failed simulation instead of recording it and going on.
        splits: an already loaded dataset (else loaded once here).
        pm: plugin manager; only usable in-process (workers=1, local executor).

    Returns:
        The parent run id, sweep id, summary and pairs tables and this call's counts.
    """
    from synthmed import report
    from synthmed._executors import SweepError, execute, progress
    from synthmed.training import load_splits

    base = (config or Config()).replace(**overrides)
    spec = SweepSpec(base, _as_list(models, base.model, str), _as_list(policies, base.policy, str),
                     tuple(sorted(_as_list(real_fracs, base.real_frac, float))), int(simulations),
                     base.seed if seed is None else int(seed), gradcam, log_model)
    _check_run_options(spec, workers, executor, pm)
    from synthmed.tracking import prepare_store

    prepare_store(base)  # a silent tracking server fails now; ghost runs are marked KILLED
    client, parent_id = _parent_run(spec)
    done = _finished(client, parent_id, spec.sweep_id)
    todo = [t for t in spec.tasks() if (t.cell.label, t.simulation) not in done]
    total = len(spec.cells()) * spec.simulations
    failed: list[str] = []
    try:
        if todo:
            splits = splits if splits is not None else load_splits(base, pm)
            outcomes = execute(todo, parent_id, splits=splits, pm=pm, workers=workers, executor=executor,
                               address=address, gpus_per_task=gpus_per_task)
            with progress(total, total - len(todo), spec.sweep_id, base.quiet) as bar, closing(outcomes):
                for outcome in outcomes:
                    bar.advance(outcome)
                    if outcome.error is not None:
                        failed.append(outcome.run_id or "?")
                        if fail_fast:
                            raise SweepError(outcome)
    except BaseException as exc:  # the parent shows how the call ended; resuming reopens it
        client.set_terminated(parent_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    published = report.publish(parent_id, client=client)
    client.set_terminated(parent_id, "FINISHED")
    return SweepResult(parent_id, spec.sweep_id, published.summary, published.pairs,
                       ran=len(todo), skipped=total - len(todo), failed=failed)


def _check_run_options(spec: SweepSpec, workers: int, executor: str, pm: Any) -> None:
    from synthmed.plugins import registry

    if executor not in EXECUTORS or workers < 1:
        raise SynthmedError(f"executor={executor!r}, workers={workers}: the executor must be one of "
                            f"{', '.join(EXECUTORS)} and workers >= 1")
    if pm is not None and (workers > 1 or executor != "local"):
        raise SynthmedError("a custom plugin manager (pm=) only works in this process: use workers=1 and "
                            "executor='local', or install the plugin (entry point) so workers load it too")
    registry("datasets", pm).get(spec.base.dataset)  # a typo fails now, not after loading data
    for name in spec.models:
        registry("models", pm).get(name)
    for name in spec.policies:
        registry("policies", pm).get(name)


def _parent_run(spec: SweepSpec) -> tuple[Any, str]:
    """Find the sweep's parent run by its tags, or create it (adopting the `mlflow run` run)."""
    import mlflow

    client = mlflow.MlflowClient()
    launcher = os.environ.get("MLFLOW_RUN_ID")
    if launcher:
        experiment_id = client.get_run(launcher).info.experiment_id
    else:
        experiment = client.get_experiment_by_name(spec.base.experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(spec.base.experiment)
    found = client.search_runs([experiment_id], f"tags.`{TAG_SWEEP}` = '1' and tags.`{TAG_ID}` = '{spec.sweep_id}'",
                               order_by=["attributes.start_time ASC"], max_results=1)
    if found:
        parent_id = found[0].info.run_id
        client.update_run(parent_id, status="RUNNING")
        if launcher and launcher != parent_id:
            client.set_tag(launcher, "synthmed.resumed_sweep", parent_id)
    elif launcher:
        parent_id = launcher
    else:
        parent_id = client.create_run(experiment_id, run_name=f"sweep-{spec.sweep_id[:8]}").info.run_id
    given = client.get_run(parent_id).data.params  # `mlflow run` logged its -P values as spelled
    tags = {TAG_SWEEP: "1", TAG_ID: spec.sweep_id, TAG_SIMULATIONS: str(spec.simulations),
            "synthmed.gradcam": str(spec.gradcam), "synthmed.log_model": str(spec.log_model)}
    params = [mlflow.entities.Param(k, v) for k, v in spec.params().items() if k not in given]
    client.log_batch(parent_id, params=params, tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()])
    client.log_text(parent_id, json.dumps({**spec.params(), "simulations": spec.simulations}, indent=2),
                    "sweep_spec.json")
    return client, parent_id


def _finished(client: Any, parent_id: str, sweep_id: str) -> set[tuple[str, int]]:
    """(cell, simulation) pairs with a FINISHED child that has the headline metric.

    Children left RUNNING by an interrupted earlier call are marked KILLED (they will rerun).
    """
    from synthmed.report import child_runs

    done = set()
    for run in child_runs(client, parent_id, sweep_id):
        key = (run.data.tags.get(TAG_CELL, ""), int(run.data.tags.get(TAG_SIMULATION, -1)))
        if run.info.status == "FINISHED" and "test_cross_entropy" in run.data.metrics:
            done.add(key)
        elif run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "synthmed.error", "interrupted: the sweep stopped before this run ended")
            client.set_terminated(run.info.run_id, "KILLED")
    return done
