"""synthmed: can synthetic images from a generative model stand in for real medical scans?

``import synthmed`` is cheap: torch, mlflow and friends load when a function that needs them runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from synthmed._version import __version__
from synthmed.config import Config
from synthmed.errors import SynthmedError
from synthmed.hookspecs import hookimpl
from synthmed.plugins import get_plugin_manager, registry


__all__ = [
    "AugmentationPolicy",
    "Config",
    "Dataset",
    "Generator",
    "ModelFactory",
    "SweepResult",
    "SweepSpec",
    "SynthmedError",
    "TrainResult",
    "__version__",
    "audit_split",
    "get_plugin_manager",
    "gradcam",
    "hookimpl",
    "load_splits",
    "lookup_baseline",
    "prefill",
    "registry",
    "sweep",
    "train",
]

_LAZY = {
    "AugmentationPolicy": ("synthmed.policies.base", "AugmentationPolicy"),
    "Dataset": ("synthmed.data.base", "Dataset"),
    "Generator": ("synthmed.generators.base", "Generator"),
    "ModelFactory": ("synthmed.models.base", "ModelFactory"),
    "TrainResult": ("synthmed.training", "TrainResult"),
    "train": ("synthmed.training", "train"),
    "SweepResult": ("synthmed.sweep.run", "SweepResult"),
    "SweepSpec": ("synthmed.sweep.spec", "SweepSpec"),
    "prefill": ("synthmed.policies.prefill", "prefill"),
    "load_splits": ("synthmed.data.loading", "load_splits"),
    "audit_split": ("synthmed.inspection.split", "audit_split"),
    "lookup_baseline": ("synthmed.lookup", "lookup_baseline"),
}

if TYPE_CHECKING:
    from synthmed.data.base import Dataset
    from synthmed.generators.base import Generator
    from synthmed.models.base import ModelFactory
    from synthmed.policies.base import AugmentationPolicy
    from synthmed import sweep
    from synthmed.data.loading import load_splits
    from synthmed.inspection.split import audit_split
    from synthmed.lookup import lookup_baseline
    from synthmed.policies.prefill import prefill
    from synthmed.sweep.run import SweepResult
    from synthmed.sweep.spec import SweepSpec
    from synthmed.training import TrainResult, train


def __getattr__(name: str) -> Any:
    if name in ("gradcam", "sweep"):  # packages: ``synthmed.gradcam.gradcam(...)``; ``synthmed.sweep(...)`` (callable)
        import importlib

        return importlib.import_module(f"synthmed.{name}")
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'synthmed' has no attribute {name!r}")
