"""Checking what a generator made, for a run (cheap, every synthetic run) or on demand (``synthmed inspect-generator``).

Both use the reference classifier of :mod:`.reference` — trained once per dataset and image size
on the full real training split, cached, and never used to train or select anything — and the
pure metrics of :mod:`.metrics`. Logging is passed in (a run logger), so this module computes and
hands over; :func:`inspect_generator` is the orchestration that opens its own MLflow run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from synthmed import tracking
from synthmed.data.loading import load_measured, load_splits, sample_real
from synthmed.generators.build import fitted_generator
from synthmed.generators.cache import GenerationCache
from synthmed.inspection import InspectionResult, inspect_generation, log_inspection
from synthmed.inspection.figures import closest_pairs_figure, twin_histogram_figure
from synthmed.inspection.reference import ReferenceClassifier
from synthmed.inspection.split import DEFAULT_FRACTIONS, SplitAudit, audit_split
from synthmed.plugins import default_plugin_manager, registry
from synthmed.policies.base import PolicyContext

if TYPE_CHECKING:
    import pluggy

    from synthmed.config import Config
    from synthmed.data.base import ImageSet, Splits

__all__ = ["InspectReport", "check_run", "inspect_generator", "run_audit"]

CHEAP_MAX_IMAGES = 256  # synthetic images the per-run check looks at (seeded subsample)


def reference_for(splits: Splits, config: Config) -> tuple[Any, bool]:
    """The dataset's reference classifier at the run's image size: from the cache, or trained now."""
    root = GenerationCache.from_config(config).root
    return ReferenceClassifier.fit_or_load(splits.train, splits.num_classes, config.image_size, splits.fingerprint,
                                           root, quiet=config.quiet)


def check_run(train_set: ImageSet, real: ImageSet, splits: Splits, config: Config, sink: Any, *,
              cheap: bool = True) -> InspectionResult | None:
    """Inspect the synthetic part of a run's training set against its real sample; log into ``sink``.

    ``sink`` has ``log_metrics``, ``log_figure`` and ``log_text`` (a run logger). Returns ``None``
    when the set holds no synthetic image.
    """
    rows = train_set.synthetic.nonzero().flatten()
    if len(rows) == 0:
        return None
    reference, from_cache = reference_for(splits, config)
    result = inspect_generation(real, train_set.subset(rows), reference, splits.classes, cheap=cheap,
                                max_images=CHEAP_MAX_IMAGES if cheap else len(rows), seed=config.seed)
    sink.log_metrics({"inspection_reference_from_cache": float(from_cache)})
    log_inspection(result, sink.log_metrics, sink.log_figure, sink.log_text)
    return result


@dataclass
class InspectReport:
    """What :func:`inspect_generator` logged."""

    run_id: str
    metrics: dict[str, float]


def inspect_generator(config: Config, pm: pluggy.PluginManager | None = None) -> InspectReport:
    """Make (or read from the cache) a synthetic run's images and log the full checks to a new MLflow run.

    The images are exactly those ``policy=synthetic`` with ``config`` trains on (same sample, same
    fitted generator, same plan, same generations); nothing is trained.
    """
    pm = pm or default_plugin_manager()
    config = config.replace(policy="synthetic")
    policy = registry("policies", pm).get("synthetic").from_config(config, pm)
    splits = load_splits(config, pm)
    with tracking.run(config, splits, run_name=f"inspect-{config.generator}-{config.real_frac:g}",
                      tags={tracking.names.TAG_KIND: "inspect-generator"}) as logger:
        real, val = sample_real(splits, config)
        generator = fitted_generator(config, pm, splits, real, log_metrics=logger.log_metrics,
                                     log_params=logger.log_params)  # as a training run's: its fit is logged
        ctx = PolicyContext(config, splits, pm, log_metrics=logger.log_metrics, log_params=logger.log_params,
                            log_artifact=logger.log_artifact, generator=generator, validation=val)
        mixed = policy.training_set(real, ctx)
        result = check_run(mixed, real, splits, config, logger, cheap=False)
        return InspectReport(logger.run_id, dict(result.metrics) if result is not None else {})


def run_audit(config: Config, *, fractions: tuple[float, ...] = DEFAULT_FRACTIONS, simulations: int = 3,
              features: bool = True, pairs: int = 12, output: Path | None = None,
              pm: pluggy.PluginManager | None = None) -> tuple[str, SplitAudit]:
    """Audit the split ``config`` describes (:func:`synthmed.inspection.split.audit_split`) in a new MLflow run.

    Logs the metrics, ``audit/report.md``, ``audit/lookup.json``, the distance histogram and the
    closest pairs; with ``output``, writes the same files there. Returns the run id and the audit.
    """
    pm = pm or default_plugin_manager()
    tracking.prepare_store(config)
    splits = load_splits(config, pm)
    measured = load_measured(config, pm)  # twins are measured at 64 px whatever the run's size
    reference = reference_for(splits, config)[0] if features else None
    split_name = config.split
    with tracking.run(config, splits, run_name=f"audit-split-{split_name}",
                      tags={tracking.names.TAG_KIND: "audit-split"}) as logger:
        audit = audit_split(splits, config, fractions=fractions, simulations=simulations, reference=reference,
                            measured=measured)
        logger.log_metrics(audit.metrics())
        order = torch.argsort(audit.test_nearest)[:pairs]
        rows = audit.test_nearest_row[order]
        figures = {
            "audit/twin_distances.png": twin_histogram_figure(audit.test_nearest, audit.neighbour_distances,
                                                              audit.threshold, split=split_name, size=audit.size),
            "audit/closest_pairs.png": closest_pairs_figure(
                splits.test.images[order], splits.train.images[rows], audit.test_nearest[order].tolist(),
                [splits.display_classes[i] for i in splits.test.labels[order].tolist()],
                [splits.display_classes[i] for i in splits.train.labels[rows].tolist()], split=split_name),
        }
        texts = {"audit/report.md": audit.markdown(),
                 "audit/lookup.json": json.dumps({"per_simulation": audit.lookup,
                                                  "median_per_fraction": audit.lookup_by_fraction()}, indent=2)}
        for path, fig in figures.items():
            logger.log_figure(fig, path)
        for path, text in texts.items():
            logger.log_text(text, path)
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
            for path, fig in figures.items():
                fig.savefig(output / Path(path).name, dpi=110)
            for path, text in texts.items():
                (output / Path(path).name).write_text(text)
        return logger.run_id, audit
