"""Batched simulations: a cell's simulations grouped into stacks that train together.

How a stack trains is training's business (:func:`synthmed.training.train_together`: each
simulation in its own MLflow run, their models stacked in the one loop). This module only decides
which simulations go together: those of one cell, in near-equal groups of at most
``parallel_simulations``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterator

import torch

from synthmed.sweep.executors import Outcome, record_failure, run_task
from synthmed.training import RunRequest, train_together

if TYPE_CHECKING:
    import pluggy

    from synthmed.data.base import Splits
    from synthmed.sweep.spec import Task

__all__ = ["balanced_groups", "default_parallel_simulations", "run_batched"]


def default_parallel_simulations(device: str) -> int:
    """How many simulations to stack by default: 1 on the CPU (measured: it does not pay there), more on CUDA."""
    if not device.startswith("cuda"):
        return 1
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return max(1, min(32, int(free // (1 << 30))))  # ~1 GiB per 128-px CNN simulation, conservative


def run_batched(tasks: list[Task], parent_run_id: str, splits: Splits, pm: pluggy.PluginManager | None,
                parallel: int) -> Iterator[Outcome]:
    """Yield one Outcome per task: tasks of one cell trained ``parallel`` at a time (see the module docstring)."""
    groups: dict[str, list[Task]] = {}
    for task in tasks:
        groups.setdefault(task.cell.label, []).append(task)
    for cell_tasks in groups.values():
        for group in balanced_groups(cell_tasks, parallel):
            yield from _run_group(group, parent_run_id, splits, pm)


def balanced_groups(items: list[Any], parallel: int) -> list[list[Any]]:
    """As few groups of at most ``parallel`` as possible, their sizes within one of each other.

    100 simulations at 32 become 25+25+25+25, not 32+32+32+4: every group takes all of a run's steps
    whatever its size, and a small stack uses a GPU less well (``benchmarks/bench_gpu.py`` measures by
    how much).
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
    if len(tasks) == 1:
        yield run_task(tasks[0], parent_run_id, splits, pm)
        return
    started = int(time.time() * 1000)
    requests = [RunRequest(task.config, task.tags, task.run_name) for task in tasks]
    task_of = {id(request): task for request, task in zip(requests, tasks)}
    for trained in train_together(requests, splits=splits, pm=pm, parent_run_id=parent_run_id):
        task = task_of[id(trained.request)]
        if trained.error is None:
            yield Outcome(task, trained.run_id, dict(trained.result.metrics))
        elif trained.run_id is not None:
            yield Outcome(task, trained.run_id, error=trained.error)
        else:  # it failed before its run opened: record one
            run_id = record_failure(task, parent_run_id, trained.exception, trained.error, started)
            yield Outcome(task, run_id, error=trained.error)
