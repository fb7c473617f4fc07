"""Repeated simulations (thesis Chapter 7): N runs per (model, policy, real fraction), compared.

The room's parts, in the order a sweep uses them:

* :mod:`.spec` — the grid, each simulation's seed, the sweep's identity (plain data);
* :mod:`.run` — :func:`sweep`: find or create the parent run, run what is missing, publish;
* :mod:`.executors` — where simulations train: this process, worker processes, or Ray;
* :mod:`.results` — a sweep as found in MLflow, one row per finished simulation;
* :mod:`.report` and :mod:`.render` — the tables (made by :mod:`synthmed.stats`, Chapter 7's
  statistics, beside this package), figures and the Markdown/HTML report.

``synthmed.sweep(...)`` calls :func:`synthmed.sweep.run.sweep`: this package is callable, so the
documented ``synthmed.sweep(config, policies=..., ...)`` keeps working even after
``import synthmed.sweep.spec`` has bound the name ``synthmed.sweep`` to this package.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from synthmed.sweep.run import SweepResult, sweep
from synthmed.sweep.spec import Cell, SweepSpec, Task, simulation_seed

__all__ = ["Cell", "SweepResult", "SweepSpec", "Task", "simulation_seed", "sweep"]


class _CallableModule(types.ModuleType):
    """``synthmed.sweep(...)`` is :func:`synthmed.sweep.run.sweep`."""

    def __call__(self, *args: Any, **kwargs: Any) -> SweepResult:
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
