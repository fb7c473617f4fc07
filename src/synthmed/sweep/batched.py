"""Batched simulations: k simulations of one cell trained at once, their models stacked.

Each simulation keeps exactly what :func:`synthmed.training.fit` would give it alone: its own real
sample and training set (:func:`synthmed.training.prepare` in its own MLflow child run), its own
initialisation (``torch.manual_seed(config.seed)`` then the factory), its own batch order and
augmentation draws (generators seeded by its seed). The k models are stacked with
``torch.func.stack_module_state`` and run with ``functional_call`` under ``vmap``; one Adam over the
stacked parameters equals k separate Adams, because Adam is elementwise and the summed loss gives
each simulation the gradient of its own mean loss. The k batches of a step are augmented in one
call (``AugmentationPolicy.augment_many``; each batch still draws from its own generator). Results
agree with one-at-a-time training to float tolerance (vmapped convolutions are grouped
convolutions, summed in another order). The stacked models run the module's own forward, not the
factory's ``training_forward`` (the same function; not measured under vmap yet).

Models with buffers (BatchNorm's running statistics), with active dropout, runs with early stopping,
or training sets of different sizes fall back to one at a time; the reason is logged as the tag
``synthmed.batched_fallback`` of each such run.
"""

from __future__ import annotations

import copy
import time
import traceback
from typing import TYPE_CHECKING, Any, Iterator

from synthmed.tracking import names

if TYPE_CHECKING:
    import pluggy

    from synthmed.data.base import Splits
    from synthmed.sweep.executors import Outcome
    from synthmed.sweep.spec import Task

TAG_FALLBACK = names.TAG_STACK_FALLBACK
TAG_BATCHED = names.TAG_STACKED

__all__ = ["TAG_FALLBACK", "default_parallel_simulations", "balanced_groups", "fit_batched", "fallback_reason", "run_batched"]


def default_parallel_simulations(device: str) -> int:
    """How many simulations to stack by default: 1 on the CPU (measured: it does not pay there), more on CUDA."""
    if not device.startswith("cuda"):
        return 1
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return max(1, min(32, int(free // (1 << 30))))  # ~1 GiB per 128-px CNN simulation, conservative


def fallback_reason(models: list[Any], configs: list[Any], train_sets: list[Any]) -> str | None:
    """Why these simulations cannot be stacked, or ``None`` when they can."""
    from torch import nn

    model = models[0]
    if any(True for _ in model.buffers()):
        return "the model has buffers (e.g. BatchNorm running statistics), which vmap cannot update per model"
    if any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        return "the model has active dropout, whose draws under vmap would differ from a run alone"
    if any(c.patience for c in configs):
        return "early stopping (patience) stops each simulation at its own epoch"
    if len({len(t) for t in train_sets}) > 1:
        return "the simulations' training sets differ in size"
    return None


def fit_batched(models: list[Any], policy: Any, train_sets: list[Any], val_sets: list[Any], configs: list[Any],
                device: str, log_metrics: list[Any], max_steps: int | None = None) -> list[dict[str, Any]]:
    """:func:`synthmed.training.fit` for k models at once (see the module docstring); trains them in place."""
    import itertools

    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, stack_module_state, vmap

    from synthmed.evaluation import predict_logits, to_input
    from synthmed.runtime import autocast_dtype
    from synthmed.training.loop import _Resident, _sum_dtype

    k, config = len(models), configs[0]
    params, buffers = stack_module_state(models)  # {name: (k, ...)} leaf tensors
    # in the standard layout, whatever the models' (channels_last): vmap's grouped convolutions run
    # faster so (benchmarks/probe_gpu_step.py on an H200, k=25: 19,513 against 17,503 images/s)
    params = {name: p.detach().contiguous().requires_grad_(p.requires_grad) for name, p in params.items()}
    base = copy.deepcopy(models[0]).to("meta")

    def one(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    forward = vmap(one, in_dims=(0, 0, 0), randomness="different")
    opt = torch.optim.Adam(params.values(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    amp = autocast_dtype(config, device)
    order = [torch.Generator().manual_seed(c.seed) for c in configs]
    augs = [torch.Generator().manual_seed(c.seed + 1) for c in configs]
    resident = [_Resident(device) for _ in range(k)]
    steps, passes_run = 0, 0
    started = time.perf_counter()
    passes = itertools.count() if max_steps is not None else range(config.epochs)
    base.train()
    for epoch in passes:
        if max_steps is not None and steps >= max_steps:
            break
        data = [policy.epoch_set(t, epoch, g) for t, g in zip(train_sets, augs)]
        tensors = [r.get(d) for r, d in zip(resident, data)]
        perms = []
        for d, g in zip(data, order):
            perm = torch.randperm(len(d), generator=g)
            if max_steps is not None:
                perm = perm[: (max_steps - steps) * config.batch_size]
            perms.append(perm.to(device))
        total = torch.zeros(k, device=device, dtype=_sum_dtype(device))
        seen = 0
        for start in range(0, len(perms[0]), config.batch_size):
            rows = [perm[start : start + config.batch_size] for perm in perms]
            batches = policy.augment_many([images[r] for (images, _), r in zip(tensors, rows)], augs)  # one call for k
            x = to_input(torch.stack(batches))  # (k, B, 1, H, W)
            y = torch.stack([labels[r] for (_, labels), r in zip(tensors, rows)])  # (k, B)
            with torch.autocast(device_type=device.split(":")[0], dtype=amp or torch.float32, enabled=amp is not None):
                logits = forward(params, buffers, x)  # (k, B, C)
            losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()  # each model's gradient is that of its own mean loss
            opt.step()
            total += losses.detach() * y.shape[1]
            seen += y.shape[1]
            steps += 1
        passes_run += 1
        train_loss = (total / max(seen, 1)).tolist()  # the one sync of the epoch
        _unstack(params, models)
        for i in range(k):
            metrics = {"train_loss": train_loss[i]}
            if val_sets[i] is not None and len(val_sets[i]):
                val_logits = predict_logits(models[i], val_sets[i].images, device=device)
                metrics["val_loss"] = F.cross_entropy(val_logits, val_sets[i].labels).item()
            log_metrics[i](metrics, step=epoch)
    _unstack(params, models)
    seconds = time.perf_counter() - started  # shared by the k runs (each epoch ended in a sync)
    return [{"epochs_run": passes_run, "best_epoch": passes_run, "optimizer_steps": steps, "train_seconds": seconds}
            for _ in range(k)]


def _unstack(params: dict[str, Any], models: list[Any]) -> None:
    import torch

    with torch.no_grad():
        for name, stacked in params.items():
            for i, model in enumerate(models):
                model.get_parameter(name).copy_(stacked[i])


def run_batched(tasks: list[Task], parent_run_id: str, splits: Splits, pm: pluggy.PluginManager | None,
                parallel: int) -> Iterator[Outcome]:
    """Yield one Outcome per task: tasks of one cell trained ``parallel`` at a time (see the module docstring)."""
    from synthmed.runtime import release_freed_memory

    groups: dict[str, list[Task]] = {}
    for task in tasks:
        groups.setdefault(task.cell.label, []).append(task)
    for cell_tasks in groups.values():
        for group in balanced_groups(cell_tasks, parallel):
            yield from _run_group(group, parent_run_id, splits, pm)
            release_freed_memory()  # as train() does after each run


def balanced_groups(items: list[Any], parallel: int) -> list[list[Any]]:
    """As few groups of at most ``parallel`` as possible, their sizes within one of each other.

    100 simulations at 32 become 25+25+25+25, not 32+32+32+4: every group takes all of a run's steps
    whatever its size, and a small stack uses a GPU less well (benchmarks/bench_gpu.py on an H200:
    17,213 images/s at k=4, 19,069 at k=25).
    """
    count = -(-len(items) // max(parallel, 1))
    size, extra = divmod(len(items), count) if count else (0, 0)
    groups, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        groups.append(items[start:end])
        start = end
    return groups


def _run_group(tasks: list[Task], parent_run_id: str, splits: Splits, pm: Any) -> Iterator[Outcome]:
    import mlflow

    from synthmed import tracking, training
    from synthmed.sweep.executors import Outcome, _record_failure, run_task

    if len(tasks) == 1:
        yield run_task(tasks[0], parent_run_id, splits, pm)
        return
    started = int(time.time() * 1000)
    ready: list[tuple[Task, Any, Any, str]] = []  # task, job, prepared, run id
    for task in tasks:  # phase 1: each child run opens, samples and builds its training set and model
        try:
            job = training.setup(task.config, splits=splits, pm=pm)
            with tracking.run(job.config, job.splits, parent_run_id=parent_run_id, tags=task.tags,
                              run_name=task.run_name, suspend=True) as logger:
                prepared = training.prepare(job, logger)
            ready.append((task, job, prepared, logger.run_id))
        except Exception as exc:
            error = "".join(traceback.format_exception(exc))
            yield Outcome(task, _record_failure(task, parent_run_id, exc, error, started), error=error)
    if not ready:
        return
    reason = fallback_reason([p.model for _, _, p, _ in ready], [j.config for _, j, _, _ in ready],
                             [p.train_set for _, _, p, _ in ready])
    client = mlflow.MlflowClient()
    if reason is None:
        try:
            infos = fit_batched([p.model for _, _, p, _ in ready], ready[0][1].policy, [p.train_set for _, _, p, _ in ready],
                                [p.val for _, _, p, _ in ready], [j.config for _, j, _, _ in ready], ready[0][1].device,
                                [_client_logger(client, rid) for *_, rid in ready], max_steps=ready[0][2].max_steps)
        except Exception as exc:
            error = "".join(traceback.format_exception(exc))
            for task, job, _, rid in ready:
                with _suppressed(), tracking.run(job.config, job.splits, resume_run_id=rid):
                    raise exc
                yield Outcome(task, rid, error=error)
            return
    for n, (task, job, prepared, rid) in enumerate(ready):  # phase 3: each run resumes to finish
        try:
            with tracking.run(job.config, job.splits, resume_run_id=rid) as logger:
                if reason is None:
                    info = infos[n]
                    mlflow.set_tag(TAG_BATCHED, str(len(ready)))
                else:
                    mlflow.set_tag(TAG_FALLBACK, reason)
                    info = training.fit(prepared.model, job.policy, prepared.train_set, prepared.val, job.config,
                                        job.device, logger.log_metrics, max_steps=prepared.max_steps,
                                        forward=prepared.forward)
                result = training.finish(job, prepared, info, logger)
        except Exception as exc:
            yield Outcome(task, rid, error="".join(traceback.format_exception(exc)))
            continue
        yield Outcome(task, result.run_id, dict(result.metrics))


def _client_logger(client: Any, run_id: str) -> Any:
    import mlflow

    def log(metrics: dict[str, float], step: int | None = None) -> None:
        stamp = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), stamp, step or 0)
                                          for k, v in metrics.items()])
    return log


class _suppressed:
    """Swallow the re-raised error once tracking.run has recorded it in the run."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], Exception)
