"""Grad-CAM, real versus synthetic (Chapter 3): what the classifier looks at, shown and measured.

For each chosen class: real source images, one synthetic variation of each (from the run's
generator or a named one), the Grad-CAM map of every image for its true and for its predicted
class, and the predicted probabilities — one figure per class — plus agreement and faithfulness
metrics (see ``docs/gradcam.md``). Built on ``pytorch-grad-cam``; the computation lives in
:mod:`synthmed._cam_panel`, the numbers in :mod:`synthmed._cam_metrics`, the drawing in
:mod:`synthmed._cam_figures`.

* :func:`log_run_gradcam` — what ``train()`` logs into every run (the run's sampled training
  images, a few pairs per class; seconds on the CPU).
* :func:`gradcam` — ``synthmed gradcam``: any logged model (``runs:/``, ``models:/``), test images
  by default, any method, generator and target layer.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from synthmed._cam_panel import METHODS, build_panels, cam_session, target_layers
from synthmed.errors import SynthmedError

if TYPE_CHECKING:
    import pluggy
    from torch import nn

    from synthmed._cam_figures import ClassPanel
    from synthmed.config import Config
    from synthmed.data.base import ImageSet, Splits
    from synthmed.generators.base import Generator
    from synthmed.models.base import ModelFactory

THESIS_CLASSES = ("Moderate_Demented", "Non_Demented")  # the two ends of the scale (Chapter 3.2)
RUN_PAIRS = 4  # pairs per class in the panel every training run logs
IMAGE_SOURCES = ("test", "train")  # what `synthmed gradcam --images` picks sources from

__all__ = ["METHODS", "CamReport", "cam_session", "gradcam", "load_logged_model", "log_run_gradcam",
           "run_config", "target_layers"]


@dataclass
class CamReport:
    """What :func:`gradcam` logged: the run it went to, the metrics and the figures' artifact paths."""

    run_id: str
    metrics: dict[str, float]
    figures: list[str]


def _log(run_id: str, panels: list[ClassPanel], records: list[dict[str, Any]], metrics: dict[str, float], *,
         artifact_dir: str, title: str, settings: dict[str, Any]) -> list[str]:
    """Figures, per-pair records and metrics into ``run_id`` (an active or a finished run)."""
    import time

    import mlflow
    from mlflow.entities import Metric

    from synthmed._cam_figures import panel_figure
    from synthmed._cam_metrics import metric_key

    client = mlflow.MlflowClient()
    figures = []
    for panel in panels:
        mine = [r for r in records if r["class"] == panel.class_name]
        notes = [f"r={_fmt(r['agreement_pearson'])}, IoU={_fmt(r['agreement_top20_iou'])}" for r in mine]
        path = f"{artifact_dir}/{metric_key(panel.class_name)}.png"
        client.log_figure(run_id, panel_figure(panel, title=f"{title} · true class {panel.class_name}", notes=notes),
                          path)
        figures.append(path)
    client.log_dict(run_id, {"settings": settings, "metrics": metrics, "pairs": records}, f"{artifact_dir}/gradcam.json")
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
    return figures


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _generator(config: Config, classes: tuple[str, ...], pm: pluggy.PluginManager | None) -> Generator:
    from synthmed.plugins import registry

    cls = registry("generators", pm).get(config.generator)
    if cls.sends_data_off_machine and not config.allow_external:
        raise SynthmedError(
            f"generator {config.generator!r} sends images off this machine and allow_external is false — "
            "pass --allow-external (config allow_external=true), pick a local generator, or set gradcam=false"
        )
    gen = cls.from_config(config)
    gen.bind(classes)
    return gen


def default_classes(classes: Sequence[str]) -> list[str]:
    """The thesis's pair (Moderate and Non demented) when the dataset has them, else every class."""
    return list(THESIS_CLASSES) if set(THESIS_CLASSES) <= set(classes) else list(classes)


# --- entry points ------------------------------------------------------------------------------
def log_run_gradcam(*, model: nn.Module, factory: ModelFactory, splits: Splits, real: ImageSet | None,
                    config: Config, device: str, pm: pluggy.PluginManager | None = None,
                    pairs: int = RUN_PAIRS, method: str = "gradcam") -> dict[str, float]:
    """Log the Grad-CAM panel of a training run into the active MLflow run; returns its metrics.

    Sources are ``real`` (the run's sampled real training images; the test split when ``None``),
    ``pairs`` per class of :func:`default_classes` that the sample holds; variations come from
    ``config.generator``. A model whose factory declares no target layer is skipped with a warning.
    """
    import mlflow

    from synthmed._cam_metrics import summarize
    from synthmed.generators.cache import GenerationCache
    from synthmed.models.base import ModelFactory

    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("log_run_gradcam logs into the active MLflow run, and none is active")
    if type(factory).gradcam_target_layers is ModelFactory.gradcam_target_layers:
        warnings.warn(f"model {factory.name!r} declares no Grad-CAM target layer: no Grad-CAM panel logged",
                      stacklevel=2)
        return {}
    pool, source = (real, "training sample") if real is not None else (splits.test, "test")
    present = set(pool.labels.unique().tolist())
    names = [c for c in default_classes(splits.classes) if splits.classes.index(c) in present]
    if not names:
        warnings.warn("the run's images hold none of the Grad-CAM classes: no Grad-CAM panel logged", stacklevel=2)
        return {}
    panels, records = build_panels(
        model, target_layers(model, factory), pool=pool, classes=splits.classes, names=names, pairs=pairs,
        generator=_generator(config, splits.classes, pm), cache=GenerationCache.from_config(config),
        seed=config.seed, device=device, method=method, reshape_transform=factory.gradcam_reshape_transform(model),
        quiet=config.quiet)
    metrics = summarize(records, names, "gradcam")
    settings = {"method": method, "images": source, "pairs": pairs, "classes": names,
                "generator": config.generator, "model": config.model, "seed": config.seed}
    _log(active.info.run_id, panels, records, metrics, artifact_dir="gradcam", settings=settings,
         title=f"Grad-CAM ({method}) · {config.model} · {source} images · generator {config.generator}")
    return metrics


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
    *,
    classes: Sequence[str] | None = None,
    pairs: int = 8,
    generator: str | None = None,
    generator_options: str | None = None,
    method: str = "gradcam",
    target_layer: str | None = None,
    images: str = "test",
    data_dir: str | None = None,
    run_id: str | None = None,
    cache_dir: str | None = None,
    allow_external: bool | None = None,
    device: str = "auto",
    quiet: bool = True,
    pm: pluggy.PluginManager | None = None,
) -> CamReport:
    """Log real-versus-synthetic Grad-CAM figures and metrics for a logged model.

    Args:
        model_uri: ``models:/NAME/VERSION``, ``models:/NAME@alias`` or ``runs:/RUN_ID/model``.
        classes: true classes to show (default: Moderate and Non demented, else all).
        pairs: real sources per class (fewer when the split has fewer).
        generator: generator name (default: the run's ``generator``); a new one starts
            without the run's ``generator_options``.
        generator_options: ``key=value,...`` for the generator.
        method: one of :data:`METHODS`.
        target_layer: dotted module path(s), comma-separated (default: the model factory's).
        images: ``test`` (default: nothing the model trained on) or ``train`` (the full
            training split, not only the run's sample).
        data_dir: where the dataset is (default: the run's ``data_dir``).
        run_id: run to log into (default: the ``mlflow run`` run when inside one, else the
            model's run).
        cache_dir / allow_external: override the run's config.
        device: ``auto``, ``cpu``, ``cuda``...
        quiet: no generation progress bar.
        pm: plugin manager.

    Metrics are named ``gradcam_<images>[_<method>]_<metric>[_<Class>]`` and figures land in
    ``gradcam/<images>[_<method>]/<Class>.png`` (``gradcam++`` spelled ``gradcampp``), so they
    never collide with the training panel's ``gradcam_<metric>`` and ``gradcam/<Class>.png``.
    """
    from synthmed._cam_metrics import summarize
    from synthmed.generators.cache import GenerationCache
    from synthmed.plugins import registry
    from synthmed.training import load_splits, resolve_device

    if images not in IMAGE_SOURCES:
        raise SynthmedError(f"images={images!r} — choose one of {', '.join(IMAGE_SOURCES)}")
    if pairs < 1:
        raise SynthmedError(f"pairs={pairs} — need at least 1 pair per class")
    if method not in METHODS:
        raise SynthmedError(f"unknown Grad-CAM method {method!r} — choose one of {', '.join(METHODS)}")
    loaded, config, model_run = load_logged_model(model_uri)
    overrides: dict[str, Any] = {"data_dir": data_dir, "cache_dir": cache_dir, "allow_external": allow_external}
    if generator is not None and generator != config.generator:
        overrides.update(generator=generator, generator_options=None)
    if generator_options is not None:
        overrides["generator_options"] = generator_options
    config = config.replace(**{k: v for k, v in overrides.items() if v is not None})
    factory = registry("models", pm).get(config.model)()
    splits = load_splits(config, pm)
    names = list(classes) if classes else default_classes(splits.classes)
    unknown = [c for c in names if c not in splits.classes]
    if unknown:
        raise SynthmedError(f"unknown class(es) {', '.join(unknown)} — dataset {config.dataset!r} has "
                            f"{', '.join(splits.classes)}")
    pool = splits.test if images == "test" else splits.train
    empty = [c for c in names if not bool((pool.labels == splits.classes.index(c)).any())]
    if empty:
        raise SynthmedError(f"the {images} split has no images of class(es) {', '.join(empty)}")
    device = resolve_device(config.replace(device=device))
    model = _as_module(loaded, factory, splits.num_classes, config).to(device)
    panels, records = build_panels(
        model, target_layers(model, factory, target_layer), pool=pool, classes=splits.classes, names=names,
        pairs=pairs, generator=_generator(config, splits.classes, pm), cache=GenerationCache.from_config(config),
        seed=config.seed, device=device, method=method, reshape_transform=factory.gradcam_reshape_transform(model),
        quiet=quiet)
    tag = images if method == "gradcam" else f"{images}_{method.replace('+', 'p')}"
    metrics = summarize(records, names, f"gradcam_{tag}")
    target = run_id or os.environ.get("MLFLOW_RUN_ID") or model_run
    settings = {"model_uri": model_uri, "model_run_id": model_run, "method": method, "images": images,
                "pairs": pairs, "classes": names, "generator": config.generator, "target_layer": target_layer,
                "seed": config.seed}
    figures = _log(target, panels, records, metrics, artifact_dir=f"gradcam/{tag}", settings=settings,
                   title=f"Grad-CAM ({method}) · {config.model} · {images} images · generator {config.generator}")
    return CamReport(target, metrics, figures)
