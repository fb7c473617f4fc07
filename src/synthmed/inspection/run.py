"""Checking what a generator made, for a run (cheap, every synthetic run) or on demand (``synthmed inspect-generator``).

Both use the reference classifier of :mod:`.reference` — trained once per dataset and image size
on the full real training split, cached, and never used to train or select anything — and the
pure metrics of :mod:`.metrics`. Realism is measured against that same full real training split
(two disjoint halves, :mod:`.realism`). The cheap per-run check logs its metrics as
``check_<name>``, the full check as ``<name>``, so the two never share an MLflow column. Logging
is passed in (a run logger), so this module computes and hands over; :func:`inspect_generator` is
the orchestration that opens its own MLflow run, and with ``strengths`` adds the
fidelity–diversity curve (:mod:`.curve`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from synthmed import tracking
from synthmed.config import format_options
from synthmed.data.loading import load_measured, load_splits, sample_real
from synthmed.errors import SynthmedError
from synthmed.generators.build import build_generator, fitted_generator, generator_class
from synthmed.generators.cache import GenerationCache, fill, generation_salt
from synthmed.inspection import (
    CHECK_PREFIX,
    Curve,
    InspectionResult,
    curve_sources,
    fidelity_diversity_curve,
    inspect_generation,
    log_inspection,
)
from synthmed.inspection.figures import closest_pairs_figure, fidelity_diversity_figure, twin_histogram_figure
from synthmed.inspection.reference import ReferenceClassifier
from synthmed.inspection.split import DEFAULT_FRACTIONS, SplitAudit, audit_split
from synthmed.options import accepted_options
from synthmed.paths import check_folder_to_write, staged_folder
from synthmed.plugins import default_plugin_manager, registry
from synthmed.policies.base import PolicyContext

if TYPE_CHECKING:
    import pluggy

    from synthmed.config import Config
    from synthmed.data.base import ImageSet, Splits

__all__ = ["InspectReport", "check_run", "inspect_generator", "run_audit", "strength_configs", "strength_curve"]

OUTPUT_FIX = "free space there or give a folder this user can write: --output PATH"
CHEAP_MAX_IMAGES = 256  # synthetic images the per-run check looks at (seeded subsample)
CURVE_IMAGES = 64  # sources per class on the fidelity–diversity curve (every one of a class with fewer)


def reference_for(splits: Splits, config: Config) -> tuple[Any, bool]:
    """The dataset's reference classifier at the run's image size: from the cache, or trained now."""
    root = GenerationCache.from_config(config).root
    return ReferenceClassifier.fit_or_load(splits.train, splits.num_classes, config.image_size, splits.fingerprint,
                                           root, quiet=config.quiet)


def check_run(train_set: ImageSet, real: ImageSet, splits: Splits, config: Config, sink: Any, *,
              cheap: bool = True) -> InspectionResult | None:
    """Inspect the synthetic part of a run's training set against its real sample; log into ``sink``.

    Realism is measured against the full real training split (``splits.train``, what the
    reference was trained on): its two disjoint halves are as large as the data allows, and it is
    the distribution the synthetic images stand in for. ``sink`` has ``log_metrics``,
    ``log_figure`` and ``log_text`` (a run logger). ``cheap`` is the per-run check: every metric is
    logged as ``check_<name>``; the full check (``cheap=False``) logs the plain names. Returns
    ``None`` when the set holds no synthetic image; the result's metrics carry the plain names.
    """
    rows = train_set.synthetic.nonzero().flatten()
    if len(rows) == 0:
        return None
    reference, from_cache = reference_for(splits, config)
    result = inspect_generation(real, train_set.subset(rows), reference, splits.classes, pool=splits.train,
                                cheap=cheap, max_images=CHEAP_MAX_IMAGES if cheap else len(rows), seed=config.seed)
    prefix = CHECK_PREFIX if cheap else ""
    sink.log_metrics({f"{prefix}inspection_reference_from_cache": float(from_cache)})
    log_inspection(result, sink.log_metrics, sink.log_figure, sink.log_text, prefix=prefix)
    return result


@dataclass
class InspectReport:
    """What :func:`inspect_generator` logged."""

    run_id: str
    metrics: dict[str, float]
    curve: Curve | None = None


def inspect_generator(config: Config, pm: pluggy.PluginManager | None = None, *, strengths: Sequence[float] = (),
                      curve_images: int = CURVE_IMAGES) -> InspectReport:
    """Make (or read from the cache) a synthetic run's images and log the full checks to a new MLflow run.

    The images are exactly those ``policy=synthetic`` with ``config`` trains on (same sample, same
    fitted generator, same plan, same generations); nothing is trained. With ``strengths`` (a
    variation generator's only, :func:`strength_configs`), also the fidelity–diversity curve over
    ``curve_images`` sources per class (:func:`strength_curve`).
    """
    pm = pm or default_plugin_manager()
    config = config.replace(policy="synthetic")
    policy = registry("policies", pm).get("synthetic").from_config(config, pm)
    curve_configs = strength_configs(config, strengths, pm)  # refused before any data is loaded
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
        curve = strength_curve(curve_configs, pm, splits, real, curve_images, logger) if curve_configs else None
        return InspectReport(logger.run_id, dict(result.metrics) if result is not None else {}, curve)


def strength_configs(config: Config, strengths: Sequence[float],
                     pm: pluggy.PluginManager | None = None) -> list[Config]:
    """``config`` with ``strength=s`` in its ``generator_options``, one per strength (none without strengths).

    Refuses a generator without a ``strength`` option (or in ``mode=sample``, which ignores it),
    and — by building each one, which fits nothing — a strength outside the generator's range.
    """
    if not strengths:
        return []
    cls = generator_class(config, pm)
    if "strength" not in accepted_options(cls)[0]:
        having = [n for n in registry("generators", pm).names()
                  if "strength" in accepted_options(registry("generators", pm).get(n))[0]]
        raise SynthmedError(f"--strengths needs a variation generator with a 'strength' option; generator "
                            f"{cls.name!r} has none — installed ones that have it: {', '.join(having) or 'none'}")
    if config.generator_params().get("mode") == "sample":
        raise SynthmedError(f"generator {cls.name!r} with mode=sample makes new images and ignores strength — "
                            "drop mode=sample (the curve is of variations of a source)")
    configs = [config.replace(generator_options=format_options({**config.generator_params(), "strength": f"{s:g}"}))
               for s in strengths]
    for each in configs:
        build_generator(each, pm)
    return configs


def strength_curve(configs: Sequence[Config], pm: pluggy.PluginManager | None, splits: Splits, real: ImageSet,
                   per_class: int, sink: Any) -> Curve:
    """The fidelity–diversity curve of :mod:`.curve` over ``configs`` (one per strength); logged into ``sink``.

    Sources: a seeded, stratified draw of ``per_class`` images of each class from the run's sample
    ``real``; one variation (number 0) of each, made by the generator the synthetic policy would use
    at that strength — :func:`fitted_generator` on the same sample, so a generator whose fit key
    leaves strength out (``pca``, ``ddpm``) loads one fit for every strength from the fit cache — and
    through the generation cache with the policy's salt, so a rerun generates nothing. Logs
    ``inspection/curve.csv``, ``inspection/curve.md`` and ``inspection/fidelity_diversity.png``.
    """
    config = configs[0]
    sources = real.subset(curve_sources(real.labels, per_class, config.seed))
    requests = [(i, 0) for i in range(len(sources))]
    cache = GenerationCache.from_config(config)
    by_strength = {float(c.generator_params()["strength"]): c for c in configs}
    fits: set[str | None] = set()

    def variations(strength: float) -> torch.Tensor:
        each = by_strength[strength]
        generator = fitted_generator(each, pm, splits, real)  # the run's fit, from the fit cache
        fits.add(generator.fit_key)
        made = fill(cache, generator, sources.images, sources.labels, requests, quiet=each.quiet,
                    salt=generation_salt(each, generator)).images
        refused = sum(image is None for image in made)
        if refused:
            raise SynthmedError(f"generator {generator.name!r} refused {refused} of the curve's variations at "
                                f"strength {strength:g}; the curve needs one of every source")
        return torch.stack(made)  # (N, 1, H, W) uint8

    reference = reference_for(splits, config)[0]
    curve = fidelity_diversity_curve(sources, variations, list(by_strength), reference, splits.classes, splits.train,
                                     seed=config.seed)
    sink.log_params({"inspection_curve_strengths": ",".join(f"{s:g}" for s in by_strength),
                     "inspection_curve_images_per_class": per_class, "inspection_curve_fits": len(fits)})
    sink.log_text(curve.table.to_csv(index=False), "inspection/curve.csv")
    sink.log_text(f"{curve.note()}\n\n{curve.markdown()}\n", "inspection/curve.md")
    sink.log_figure(fidelity_diversity_figure(curve), "inspection/fidelity_diversity.png")
    return curve


def run_audit(config: Config, *, fractions: tuple[float, ...] = DEFAULT_FRACTIONS, simulations: int = 3,
              features: bool = True, pairs: int = 12, output: Path | None = None,
              pm: pluggy.PluginManager | None = None) -> tuple[str, SplitAudit]:
    """Audit the split ``config`` describes (:func:`synthmed.inspection.split.audit_split`) in a new MLflow run.

    Logs the metrics, ``audit/report.md``, ``audit/lookup.json``, the distance histogram and the
    closest pairs; with ``output``, writes the same files there. Returns the run id and the audit.
    """
    pm = pm or default_plugin_manager()
    if output is not None:  # before any work: a folder that cannot take the files fails now, not after the audit
        output = check_folder_to_write(output, f"audit folder (--output) {output}", OUTPUT_FIX)
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
        if output is not None:  # all files or none: written beside, then moved in
            with staged_folder(output, f"audit folder (--output) {output}", OUTPUT_FIX) as stage:
                for path, fig in figures.items():
                    fig.savefig(stage / Path(path).name, dpi=110)
                for path, text in texts.items():
                    (stage / Path(path).name).write_text(text)
        return logger.run_id, audit
