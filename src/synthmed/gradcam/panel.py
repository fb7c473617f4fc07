"""The Grad-CAM panel every training run logs: a few real/synthetic pairs per class, seconds on a CPU.

Logging is passed in (:class:`CamSink`: anything with ``log_figure``, ``log_dict`` and
``log_metrics``, such as the training run's logger), so this module never imports MLflow.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from synthmed.errors import SynthmedError
from synthmed.gradcam.compute import build_panels, target_layers
from synthmed.gradcam.metrics import summarize

if TYPE_CHECKING:
    from torch import nn

    from synthmed.config import Config
    from synthmed.data.base import ImageSet, Splits
    from synthmed.generators.base import Generator
    from synthmed.gradcam.figures import ClassPanel
    from synthmed.models.base import ModelFactory

RUN_PAIRS = 4  # pairs per class in the panel every training run logs

__all__ = ["RUN_PAIRS", "CamSink", "log_run_gradcam", "panel_classes", "record_panels"]


class CamSink(Protocol):
    """Where Grad-CAM results go (a run logger, or an MLflow client bound to a run)."""

    def log_figure(self, fig: Any, path: str) -> None: ...

    def log_dict(self, data: dict[str, Any], path: str) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...


def record_panels(sink: CamSink, panels: list[ClassPanel], records: list[dict[str, Any]], metrics: dict[str, float],
                  *, artifact_dir: str, title: str, settings: dict[str, Any]) -> list[str]:
    """Figures, per-pair records and metrics into ``sink``; returns the figures' artifact paths."""
    from synthmed.gradcam.figures import panel_figure
    from synthmed.gradcam.metrics import metric_key

    figures = []
    for panel in panels:
        mine = [r for r in records if r["class"] == panel.class_name]
        notes = [f"r={_fmt(r['agreement_pearson'])}, IoU={_fmt(r['agreement_top20_iou'])}" for r in mine]
        path = f"{artifact_dir}/{metric_key(panel.class_name)}.png"
        shown = panel.classes[panel.label]
        sink.log_figure(panel_figure(panel, title=f"{title} · true class {shown}", notes=notes), path)
        figures.append(path)
    sink.log_dict({"settings": settings, "metrics": metrics, "pairs": records}, f"{artifact_dir}/gradcam.json")
    sink.log_metrics(metrics)
    return figures


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def panel_classes(factory: ModelFactory, splits: Splits, real: ImageSet | None, *, warn: bool = False) -> list[str]:
    """The Grad-CAM classes a run's panel shows: the dataset's Grad-CAM classes the images hold.

    Empty — no panel, so no variation drawn and no generator needed — when the model's factory
    declares no target layer, or when the images (``real``; the test split when ``None``) hold
    none of those classes. With ``warn``, says why.
    """
    from synthmed.models.base import ModelFactory  # here: `synthmed --help` loads this module

    if type(factory).gradcam_target_layers is ModelFactory.gradcam_target_layers:
        if warn:
            warnings.warn(f"model {factory.name!r} declares no Grad-CAM target layer: no Grad-CAM panel logged",
                          stacklevel=3)
        return []
    pool = real if real is not None else splits.test
    present = set(pool.labels.unique().tolist())
    names = [c for c in splits.gradcam_classes if splits.classes.index(c) in present]
    if not names and warn:
        warnings.warn("the run's images hold none of the Grad-CAM classes: no Grad-CAM panel logged", stacklevel=3)
    return names


def log_run_gradcam(*, model: nn.Module, factory: ModelFactory, splits: Splits, real: ImageSet | None,
                    config: Config, device: str, sink: CamSink, generator: Generator | None,
                    pairs: int = RUN_PAIRS, method: str = "gradcam") -> dict[str, float]:
    """Log the Grad-CAM panel of a training run into ``sink``; returns its metrics.

    Sources are ``real`` (the run's sampled real training images; the test split when ``None``),
    ``pairs`` per class of the dataset's default Grad-CAM classes that the sample holds;
    variations come from ``generator``, the run's one fitted generator (the instance its policy
    used, so the panel's variations are the run's). ``generator`` may be ``None`` only when
    :func:`panel_classes` is empty: a model whose factory declares no target layer, or images
    without a Grad-CAM class, are skipped with a warning.
    """
    from synthmed.generators.cache import GenerationCache, generation_salt  # here: `synthmed --help` loads this module

    names = panel_classes(factory, splits, real, warn=True)
    if not names:
        return {}
    if generator is None:
        raise SynthmedError("the Grad-CAM panel needs the run's fitted generator — pass "
                            "synthmed.generators.build.fitted_generator(config, pm, splits, real)")
    pool, source = (real, "training sample") if real is not None else (splits.test, "test")
    panels, records = build_panels(
        model, target_layers(model, factory), pool=pool, classes=splits.classes, names=names, pairs=pairs,
        generator=generator, cache=GenerationCache.from_config(config),
        seed=config.seed, device=device, method=method, reshape_transform=factory.gradcam_reshape_transform(model),
        quiet=config.quiet, display=splits.display_classes, salt=generation_salt(config, generator))
    metrics = summarize(records, names, "gradcam")
    settings = {"method": method, "images": source, "pairs": pairs, "classes": names,
                "generator": config.generator, "model": config.model, "seed": config.seed}
    record_panels(sink, panels, records, metrics, artifact_dir="gradcam", settings=settings,
                  title=f"Grad-CAM ({method}) · {config.model} · {source} images · generator {config.generator}")
    return metrics


def default_classes(classes: Sequence[str]) -> list[str]:
    """Every class (kept for callers without a loaded dataset; datasets name their own defaults)."""
    return list(classes)
