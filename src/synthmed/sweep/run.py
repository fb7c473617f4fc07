"""Running a sweep (Chapter 7): models × policies × real fractions × N, resumable, in MLflow.

A sweep is one MLflow parent run with one child run per (cell, simulation). Simulation ``i``
gets the seed :func:`simulation_seed` ``(sweep seed, i)`` in *every* cell, so all policies and
models at one real fraction train on the same stratified real sample (a paired design), and the
synthetic policy draws the same generated images for it. The sweep's identity is a hash of its
spec (:attr:`SweepSpec.sweep_id`); running the same spec again finds the parent run and the
finished children by their tags and runs only what is missing.
"""

from __future__ import annotations

import json
import os
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import mlflow

from synthmed.config import Config
from synthmed.data import loading
from synthmed.errors import SynthmedError
from synthmed.generators.build import generator_class
from synthmed.plugins import registry
from synthmed.runtime import precision_name, resolve_device, tune_memory
from synthmed.sweep import report
from synthmed.sweep.batched import default_parallel_simulations, run_batched
from synthmed.sweep.executors import SweepError, execute, progress
from synthmed.sweep.results import child_runs
from synthmed.sweep.spec import TAG_CELL, TAG_ID, TAG_SIMULATION, TAG_SIMULATIONS, TAG_SWEEP, Cell, SweepSpec, Task
from synthmed.tracking import names, prepare_store
from synthmed.tracking.ghosts import owner_tags

EXECUTORS = ("local", "ray")

if TYPE_CHECKING:
    import pandas as pd
    import pluggy

    from synthmed.data.base import Splits

__all__ = ["Cell", "SweepResult", "SweepSpec", "Task", "sweep"]

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
    gradcam: bool | None = None,
    log_model: bool = False,
    workers: int = 1,
    executor: str = "local",
    address: str | None = None,
    gpus_per_task: float = 0.0,
    fail_fast: bool = False,
    parallel_simulations: int | None = None,
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
        gradcam: log the Grad-CAM panel in every child (seconds per run: the README's benchmark
            tables give its measured cost). ``None`` (default): on, unless the generator sends images off this
            machine, where every run's panel would pay for its variations.
        log_model: log the model in every child (off by default: costly, not summarised).
        workers: local processes (``executor='local'``); 1 runs in this process.
        executor: ``'local'`` or ``'ray'`` (one Ray task per simulation).
        address: Ray cluster address (``None`` starts a local Ray; ``'auto'`` joins one).
        gpus_per_task: GPU share of each Ray task (e.g. 0.25 puts four on one GPU).
        fail_fast: stop at the first failed simulation instead of recording it and going on.
        parallel_simulations: simulations of one cell trained at once, models stacked (local executor,
            ``workers=1``; ignored otherwise); ``None`` picks from the device (1 on the CPU, where it does not pay; more
            on CUDA by free memory). Results equal one-at-a-time training to float tolerance.
        splits: an already loaded dataset (else loaded once here).
        pm: plugin manager; only usable in-process (workers=1, local executor).

    Returns:
        The parent run id, sweep id, summary and pairs tables and this call's counts.
    """
    tune_memory()  # before the dataset is loaded; worker processes inherit the huge pages and tune their own malloc
    base = (config or Config()).replace(**overrides)
    device = resolve_device(base)
    generator = generator_class(base, pm, external_ok=True)
    if gradcam is None:
        gradcam = not generator.sends_data_off_machine
    spec = SweepSpec(base, _as_list(models, base.model, str), _as_list(policies, base.policy, str),
                     tuple(sorted(_as_list(real_fracs, base.real_frac, float))), int(simulations),
                     base.seed if seed is None else int(seed), gradcam, log_model,
                     device_kind=device.split(":")[0], precision=precision_name(base, device),
                     generator_learns=generator.learns)
    _check_run_options(spec, workers, executor, pm)
    prepare_store(base)  # a silent tracking server fails now; ghost runs are marked KILLED
    client, parent_id = _parent_run(spec)
    done = _finished(client, parent_id, spec.sweep_id)
    todo = [t for t in spec.tasks() if (t.cell.label, t.simulation) not in done]
    total = len(spec.trained_cells()) * spec.simulations
    failed: list[str] = []
    try:
        if todo:
            splits = splits if splits is not None else loading.load_splits(base, pm)
            if parallel_simulations is None:
                parallel_simulations = default_parallel_simulations(device)
            if parallel_simulations > 1 and workers == 1 and executor == "local":
                outcomes = run_batched(todo, parent_id, splits, pm, int(parallel_simulations))
            else:
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
        if isinstance(exc, KeyboardInterrupt):  # a stop signal (interrupts.Stopped says which) or Ctrl-C
            client.set_tag(parent_id, names.TAG_FAILURE_REASON, getattr(exc, "reason", "interrupted (KeyboardInterrupt)"))
        client.set_terminated(parent_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    published = report.publish(parent_id, client=client)
    client.set_terminated(parent_id, "FINISHED")
    return SweepResult(parent_id, spec.sweep_id, published.summary, published.pairs,
                       ran=len(todo), skipped=total - len(todo), failed=failed)


def _check_run_options(spec: SweepSpec, workers: int, executor: str, pm: Any) -> None:
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
    client = mlflow.MlflowClient()
    launcher = os.environ.get("MLFLOW_RUN_ID")
    if launcher:
        experiment_id = client.get_run(launcher).info.experiment_id
    else:
        experiment = client.get_experiment_by_name(spec.base.experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(spec.base.experiment)
    found = client.search_runs([experiment_id], f"tags.`{TAG_SWEEP}` = '1' and tags.`{TAG_ID}` = '{spec.sweep_id}'",
                               order_by=["attributes.start_time ASC"], max_results=1)
    if not found:
        _refuse_other_runtime(client, experiment_id, spec)
    identity = {**owner_tags(), TAG_SWEEP: "1", TAG_ID: spec.sweep_id}  # who runs it, and which sweep it is
    if found:
        parent_id = found[0].info.run_id
        client.update_run(parent_id, status="RUNNING")
        if launcher and launcher != parent_id:
            client.set_tag(launcher, names.TAG_RESUMED_SWEEP, parent_id)
    elif launcher:
        parent_id = launcher
    else:  # identity at creation: killed before the tags below, it is still found and reaped
        parent_id = client.create_run(experiment_id, run_name=f"sweep-{spec.sweep_id[:8]}", tags=identity).info.run_id
    given = client.get_run(parent_id).data.params  # `mlflow run` logged its -P values as spelled

    tags = {**identity, TAG_SIMULATIONS: str(spec.simulations),
            names.TAG_SPEC_ID: spec.spec_id, names.TAG_DEVICE: spec.device_kind, names.TAG_PRECISION: spec.precision,
            names.TAG_SWEEP_GRADCAM: str(spec.gradcam), names.TAG_SWEEP_LOG_MODEL: str(spec.log_model)}
    shared = spec.shared_cells()
    if shared:  # cells trained once for two: the report reuses the source cell's runs for them
        tags[names.TAG_SHARED_CELLS] = json.dumps({a.label: b.label for a, b in shared.items()})
    params = [mlflow.entities.Param(k, v) for k, v in spec.params().items() if k not in given]
    client.log_batch(parent_id, params=params, tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()])
    client.log_text(parent_id, json.dumps({**spec.params(), "simulations": spec.simulations}, indent=2),
                    "sweep_spec.json")
    return client, parent_id


def _refuse_other_runtime(client: Any, experiment_id: str, spec: SweepSpec) -> None:
    """Refuse to resume a sweep that ran on another device kind or at another precision.

    Mixing bf16 and fp32 runs (or CPU and GPU kernels) under one sweep would make its simulations
    non-exchangeable; the paired design assumes they are.
    """
    other = client.search_runs([experiment_id], f"tags.`{TAG_SWEEP}` = '1' and tags.`{names.TAG_SPEC_ID}` = '{spec.spec_id}'",
                               max_results=1)
    if not other:
        return
    tags = other[0].data.tags
    raise SynthmedError(
        f"sweep {tags.get(TAG_ID)} (run {other[0].info.run_id}) ran the same grid on "
        f"{tags.get(names.TAG_DEVICE, '?')}/{tags.get(names.TAG_PRECISION, '?')}, but this call would run on "
        f"{spec.device_kind}/{spec.precision} — resuming would mix them. To resume it, pass "
        f"--device {tags.get(names.TAG_DEVICE, '?')} --precision {tags.get(names.TAG_PRECISION, '?')}; to start a "
        "new sweep instead, use another --experiment (or another --seed)"
    )


def _finished(client: Any, parent_id: str, sweep_id: str) -> set[tuple[str, int]]:
    """(cell, simulation) pairs with a FINISHED child that has the headline metric.

    Children left RUNNING by an interrupted earlier call are marked KILLED (they will rerun).
    """
    done = set()
    for run in child_runs(client, parent_id, sweep_id):
        key = (run.data.tags.get(TAG_CELL, ""), int(run.data.tags.get(TAG_SIMULATION, -1)))
        if run.info.status == "FINISHED" and names.HEADLINE in run.data.metrics:
            done.add(key)
        elif run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, names.TAG_ERROR, "interrupted: the sweep stopped before this run ended")
            client.set_terminated(run.info.run_id, "KILLED")
    return done
