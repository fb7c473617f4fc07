"""``synthmed gradcam``: real-versus-synthetic Grad-CAM for any logged model (``runs:/``, ``models:/``).

Reads the model and its run's config from MLflow, takes test images by default, and logs figures
and metrics into a run through an MLflow client (the run may be finished).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from synthmed.config import Config
from synthmed.errors import SynthmedError
from synthmed.gradcam.compute import METHODS, build_panels, target_layers
from synthmed.gradcam.metrics import summarize
from synthmed.gradcam.panel import record_panels

if TYPE_CHECKING:
    import pluggy
    from torch import nn

    from synthmed.models.base import ModelFactory

IMAGE_SOURCES = ("test", "train")  # what `synthmed gradcam --images` picks sources from

__all__ = ["CamReport", "gradcam", "load_logged_model", "run_config"]


@dataclass
class CamReport:
    """What :func:`gradcam` logged: the run it went to, the metrics and the figures' artifact paths."""

    run_id: str
    metrics: dict[str, float]
    figures: list[str]


class _RunSink:
    """A :class:`~synthmed.gradcam.panel.CamSink` that writes into one run by id (active or finished)."""

    def __init__(self, run_id: str):
        import mlflow

        self.run_id, self.client = run_id, mlflow.MlflowClient()

    def log_figure(self, fig: Any, path: str) -> None:
        self.client.log_figure(self.run_id, fig, path)

    def log_dict(self, data: dict[str, Any], path: str) -> None:
        self.client.log_dict(self.run_id, data, path)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step or 0) for k, v in metrics.items()])


def load_logged_model(model_uri: str) -> tuple[Any, Config, str]:
    """Resolve ``model_uri`` to its run: ``(loaded model, run config, run id)``.

    Raises:
        SynthmedError: the URI does not resolve, or its run is not a synthmed run.
    """
    import mlflow

    try:
        info = mlflow.models.get_model_info(model_uri)
    except mlflow.exceptions.MlflowException as exc:
        raise SynthmedError(f"cannot resolve model URI {model_uri!r}: {exc.message} — pass models:/NAME/VERSION "
                            "or runs:/RUN_ID/model of a logged model") from exc
    if not info.run_id:
        raise SynthmedError(f"model {model_uri!r} was not logged from a run — Grad-CAM needs its run's config")
    params = mlflow.MlflowClient().get_run(info.run_id).data.params
    if "model" not in params or "dataset" not in params:
        raise SynthmedError(f"run {info.run_id} of {model_uri!r} has no 'model'/'dataset' params: "
                            "not a synthmed training run")
    from synthmed.tracking import load_run_config

    return mlflow.pytorch.load_model(model_uri, map_location="cpu"), load_run_config(info.run_id), info.run_id


def run_config(params: dict[str, str]) -> Config:
    """A run's :class:`Config` from its logged params (other params ignored)."""
    from synthmed.tracking import config_from_logged

    return config_from_logged(params)


def _as_module(loaded: Any, factory: ModelFactory, num_classes: int, config: Config) -> nn.Module:
    """An ``nn.Module`` whose layers can be hooked.

    MLflow 3 logs PyTorch models as ``pt2`` by default; loading gives a flat ``torch.export``
    graph whose submodules never run (hooks do not fire) and which refuses ``eval()``. Such a
    model is rebuilt from its factory and given the loaded weights (same state-dict keys).
    A pickled model is used as loaded.
    """
    import torch

    if not isinstance(loaded, torch.fx.GraphModule):
        return loaded
    model = factory.create(num_classes, config.image_size, config.replace(pretrained=False, weights=None))
    model.load_state_dict(loaded.state_dict())
    return model.eval()


def gradcam(
    model_uri: str,
    config: Config | None = None,
    *,
    classes: Sequence[str] | None = None,
    pairs: int = 8,
    method: str = "gradcam",
    target_layer: str | None = None,
    images: str = "test",
    run_id: str | None = None,
    pm: pluggy.PluginManager | None = None,
    **overrides: Any,
) -> CamReport:
    """Log real-versus-synthetic Grad-CAM figures and metrics for a logged model.

    Like :func:`synthmed.train` and :func:`synthmed.sweep`, it takes a :class:`Config` (default:
    the config the model's run was trained with) and ``overrides`` of its fields — most often
    ``generator`` (a new one starts without the run's ``generator_options``),
    ``generator_options``, ``data_dir``, ``cache_dir``, ``allow_external``, ``device``
    (default ``auto``) and ``quiet`` (default true). The other arguments are Grad-CAM's own.

    Args:
        model_uri: ``models:/NAME/VERSION``, ``models:/NAME@alias`` or ``runs:/RUN_ID/model``.
        config: the config to use instead of the run's.
        classes: true classes to show (default: the dataset's Grad-CAM classes, else all).
        pairs: real sources per class (fewer when the split has fewer).
        method: one of :data:`METHODS`.
        target_layer: dotted module path(s), comma-separated (default: the model factory's).
        images: ``test`` (default: nothing the model trained on) or ``train`` (the full
            training split, not only the run's sample).
        run_id: run to log into (default: the ``mlflow run`` run when inside one, else the
            model's run).
        pm: plugin manager.

    Metrics are named ``gradcam_<images>[_<method>]_<metric>[_<Class>]`` and figures land in
    ``gradcam/<images>[_<method>]/<Class>.png`` (``gradcam++`` spelled ``gradcampp``), so they
    never collide with the training panel's ``gradcam_<metric>`` and ``gradcam/<Class>.png``.
    """
    # here, not at the top: `synthmed --help` imports this package (the CLI's --method choices)
    from synthmed.data.loading import load_splits
    from synthmed.generators.build import fitted_generator
    from synthmed.generators.cache import GenerationCache, generation_salt
    from synthmed.plugins import registry
    from synthmed.runtime import resolve_device

    _check_arguments(images, pairs, method)
    loaded, logged, model_run = load_logged_model(model_uri)
    config = _effective_config(config or logged, overrides)
    factory = registry("models", pm).get(config.model)()
    splits = load_splits(config, pm)
    names = _classes(classes, splits, images, config)
    device = resolve_device(config)
    model = _as_module(loaded, factory, splits.num_classes, config).to(device)
    pool = splits.test if images == "test" else splits.train
    generator = fitted_generator(config, pm, splits)  # the model's run's: its own sample's fit, from the fit cache
    panels, records = build_panels(
        model, target_layers(model, factory, target_layer), pool=pool, classes=splits.classes, names=names,
        pairs=pairs, generator=generator, cache=GenerationCache.from_config(config),
        seed=config.seed, device=device, method=method, reshape_transform=factory.gradcam_reshape_transform(model),
        quiet=config.quiet, display=splits.display_classes, salt=generation_salt(config, generator))
    tag = images if method == "gradcam" else f"{images}_{method.replace('+', 'p')}"
    metrics = summarize(records, names, f"gradcam_{tag}")
    target = run_id or os.environ.get("MLFLOW_RUN_ID") or model_run
    settings = {"model_uri": model_uri, "model_run_id": model_run, "method": method, "images": images,
                "pairs": pairs, "classes": names, "generator": config.generator, "target_layer": target_layer,
                "seed": config.seed}
    figures = record_panels(_RunSink(target), panels, records, metrics, artifact_dir=f"gradcam/{tag}",
                            settings=settings,
                            title=f"Grad-CAM ({method}) · {config.model} · {images} images · generator {config.generator}")
    return CamReport(target, metrics, figures)


def _check_arguments(images: str, pairs: int, method: str) -> None:
    if images not in IMAGE_SOURCES:
        raise SynthmedError(f"images={images!r} — choose one of {', '.join(IMAGE_SOURCES)}")
    if pairs < 1:
        raise SynthmedError(f"pairs={pairs} — need at least 1 pair per class")
    if method not in METHODS:
        raise SynthmedError(f"unknown Grad-CAM method {method!r} — choose one of {', '.join(METHODS)}")


def _effective_config(config: Config, overrides: dict[str, Any]) -> Config:
    """The run's config with the caller's overrides (``None`` = keep); a new generator drops the old options."""
    given = {k: v for k, v in overrides.items() if v is not None}
    given.setdefault("device", "auto")
    given.setdefault("quiet", True)
    if given.get("generator", config.generator) != config.generator and "generator_options" not in given:
        given["generator_options"] = None
    return config.replace(**given) if given else config


def _classes(classes: Sequence[str] | None, splits: Any, images: str, config: Config) -> list[str]:
    """The classes to show, checked against the dataset and the chosen split."""
    names = list(classes) if classes else list(splits.gradcam_classes)
    unknown = [c for c in names if c not in splits.classes]
    if unknown:
        raise SynthmedError(f"unknown class(es) {', '.join(unknown)} — dataset {config.dataset!r} has "
                            f"{', '.join(splits.classes)}")
    pool = splits.test if images == "test" else splits.train
    empty = [c for c in names if not bool((pool.labels == splits.classes.index(c)).any())]
    if empty:
        raise SynthmedError(f"the {images} split has no images of class(es) {', '.join(empty)}")
    return names
