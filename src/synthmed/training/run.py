"""One experiment of the thesis, end to end (Chapters 4 and 7): setup → prepare → fit → finish.

    data → stratified real sample → augmentation policy → model → Adam + cross-entropy
         → test-split evaluation → MLflow (params, metrics, artifacts, Grad-CAM, registry)

:func:`train` is the whole thing; each phase below is a named function, and the loop itself is
:func:`synthmed.training.loop.fit`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch

from synthmed import tracking
from synthmed.config import Config
from synthmed.data.loading import (  # the run's data (re-exported here)
    load_splits, present, sample_real, split_as_configured, unsampled_rest)
from synthmed.evaluation import evaluate, predict_logits, to_input
from synthmed.generators.build import build_generator, fitted_generator
from synthmed.gradcam.panel import log_run_gradcam, panel_classes
from synthmed.inspection.run import check_run
from synthmed.lookup import lookup_baseline
from synthmed.plugins import default_plugin_manager, registry
from synthmed.policies.base import PolicyContext
from synthmed.runtime import (  # where and how it computes (re-exported here)
    autocast_dtype, precision_name, release_freed_memory, resolve_device, tune_memory)
from synthmed.serving.registry import log_run_model
from synthmed.tracking.names import HELDOUT_LOSS, KERAS_VAL_LOSS, PRIOR_CE, REST_LOSS, TAG_RESUMED, TAG_RESUMED_FROM
from synthmed.training import loop
from synthmed.training.loop import step_budget
from synthmed.training.resume import copy_epoch_metrics, find_resumable

if TYPE_CHECKING:
    import pluggy
    from torch import nn

    from synthmed.data.base import ImageSet, Splits
    from synthmed.generators.base import Generator
    from synthmed.policies.base import AugmentationPolicy

__all__ = ["TrainResult", "autocast_dtype", "load_splits", "resolve_device", "sample_real", "to_input", "train"]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_id: the MLflow run.
        metrics: final metrics (``test_cross_entropy``, ``test_accuracy``, ...).
        model_uri: the logged model's URI (``models:/m-...``; ``None`` with ``log_model=False``).
        registered_version: version in the model registry, or ``None`` when not registered.
    """

    run_id: str
    metrics: dict[str, float]
    model_uri: str | None
    registered_version: str | None


def augmented_examples(train_set: ImageSet, policy: AugmentationPolicy, config: Config,
                       n: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` training images after the policy (images, labels, synthetic flags), for the run's grid figure.

    Drawn from their own generator (seeded by the run's seed), so showing them changes no draw of training.
    """
    rng = torch.Generator().manual_seed(config.seed)
    rows = torch.randperm(len(train_set), generator=rng)[:n]
    return policy.augment(train_set.images[rows], rng), train_set.labels[rows], train_set.synthetic[rows]


# --- the experiment ---------------------------------------------------------------------------------
def train(
    config: Config | None = None,
    *,
    splits: Splits | None = None,
    pm: pluggy.PluginManager | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    run_name: str | None = None,
    **overrides: Any,
) -> TrainResult:
    """Run one experiment and log it to MLflow.

    Args:
        config: the experiment; ``None`` means all defaults. ``overrides`` replace fields.
        splits: an already loaded dataset (sweeps load it once per process).
        pm: plugin manager (default: the process-wide one).
        parent_run_id: nest this run under that MLflow run (one level; sweeps).
        tags: extra MLflow tags.
        run_name: MLflow run name (default: ``<model>-<policy>-<real_frac>``).

    Returns:
        The run id, final metrics, model URI and registered version.
    """
    job = setup(config, splits=splits, pm=pm, **overrides)
    resume = find_resumable(job.config, parent_run_id, run_name)  # a killed run of this same command, if any
    launched = parent_run_id is None and bool(os.environ.get("MLFLOW_RUN_ID"))  # `mlflow run` gave the run
    try:
        with tracking.run(job.config, job.splits, parent_run_id=parent_run_id, tags=tags, run_name=run_name,
                          resume_run_id=None if launched else resume.run_id) as logger:
            checkpoint = resume.checkpointer(job.config, logger.run_id)
            prepared = prepare(job, logger)
            # a stop signal ends training after its current step, with a checkpoint of that step
            info = loop.fit(prepared.model, job.policy, prepared.train_set, prepared.val, job.config, job.device,
                            logger.log_metrics, max_steps=prepared.max_steps, forward=prepared.forward,
                            watch=prepared.watch, checkpoint=checkpoint)
            if checkpoint.resumed_step is not None:
                logger.set_tags({TAG_RESUMED: str(checkpoint.resumed_step)})
                if resume.run_id is not None and resume.run_id != logger.run_id:  # continued another run's state
                    logger.set_tags({TAG_RESUMED_FROM: resume.run_id})
                    copy_epoch_metrics(resume.run_id, logger.run_id, ["train_loss", "val_loss", *(prepared.watch or {})],
                                       last_step=int(checkpoint.resumed_epoch or 0) - 1)
            if checkpoint.saves:
                logger.log_metrics({"checkpoint_seconds": checkpoint.seconds, "checkpoint_saves": checkpoint.saves})
            result = finish(job, prepared, info, logger)
            checkpoint.clear()  # finished: nothing left to resume
            return result
    finally:
        release_freed_memory()  # the next run of a sweep starts from this run's working set, not its leftovers


# --- the phases of train(), so that a batched sweep can train several runs' models together ----------
@dataclass
class Job:
    """A run's resolved plugins, device and dataset (:func:`setup`)."""

    config: Config
    pm: Any
    factory: Any
    policy: AugmentationPolicy
    device: str
    splits: Splits
    generator: Generator | None = None  # built (not bound, not fitted) when the policy or the Grad-CAM panel uses one


@dataclass
class Prepared:
    """What :func:`prepare` makes inside the run: the real sample, the training set, the fresh model,
    and the run's one fitted generator (``None`` when neither the policy nor the Grad-CAM panel uses one)."""

    real: ImageSet
    val: ImageSet | None
    train_set: ImageSet
    model: nn.Module
    max_steps: int | None
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # the factory's training_forward(model)
    generator: Generator | None = None  # the instance the policy used; finish() hands it to the Grad-CAM panel
    watch: dict[str, ImageSet] | None = None  # protocol=thesis: sets whose loss is logged every epoch (watched_sets)


def setup(config: Config | None = None, *, splits: Splits | None = None, pm: pluggy.PluginManager | None = None,
          **overrides: Any) -> Job:
    """Resolve every plugin first (a typo fails before minutes of data loading), the device and the data."""
    tune_memory()  # huge pages in time only if torch has allocated nothing yet in this process (see use_huge_pages)
    config = config or Config()
    if overrides:
        config = config.replace(**overrides)
    pm = pm or default_plugin_manager()
    factory = registry("models", pm).get(config.model)()
    policy = registry("policies", pm).get(config.policy).from_config(config, pm)
    generator = None  # the run's one instance, built now so that a typo or a bad option fails before loading
    if config.gradcam or policy.uses_generator:
        generator = build_generator(config, pm)
    device = resolve_device(config)
    tracking.prepare_store(config)  # a silent tracking server fails now; ghost runs are marked KILLED
    splits = present(split_as_configured(splits, config), config, pm) if splits is not None else load_splits(config, pm)
    return Job(config, pm, factory, policy, device, splits, generator)


def prepare(job: Job, logger: Any) -> Prepared:
    """Inside the run: the real sample, the run's one fitted generator, the policy's training set (logged)
    and the seeded fresh model."""
    config, splits = job.config, job.splits
    real, val = sample_real(splits, config)
    generator = None  # built and fitted on `real` once; the policy and the Grad-CAM panel get this instance
    if job.policy.uses_generator:  # the run trains on its images: its fit is part of the run's record
        generator = fitted_generator(config, job.pm, splits, real, built=job.generator,
                                     log_metrics=logger.log_metrics, log_params=logger.log_params)
    elif config.gradcam and panel_classes(job.factory, splits, real):  # only the panel draws from it
        generator = fitted_generator(config, job.pm, splits, real, built=job.generator)
    ctx = PolicyContext(config, splits, job.pm, log_metrics=logger.log_metrics, log_params=logger.log_params,
                        log_artifact=logger.log_artifact, generator=generator, validation=val)
    train_set = job.policy.training_set(real, ctx)
    logger.log_training_set(train_set, val, splits, shown=augmented_examples(train_set, job.policy, config))
    logger.tag_open_set()  # a warm-started learned generator may carry data from outside the sample
    if config.inspect:  # what the generator made: realism, label fidelity, memorization (no-op without)
        check_run(train_set, real, splits, config, logger)
    torch.manual_seed(config.seed)
    model = job.factory.create(splits.num_classes, config.image_size, config).to(job.device)
    model = model.to(memory_format=torch.channels_last)
    return Prepared(real, val, train_set, model, step_budget(config, len(splits.train)),
                    job.factory.training_forward(model), generator, watched_sets(splits, config))


def watched_sets(splits: Splits, config: Config) -> dict[str, ImageSet]:
    """``protocol=thesis``: the sets whose loss the loop logs every epoch, each a reading of the thesis's
    "validation loss" (the held-out split; the unsampled rest of the training split, a seeded draw of at
    most as many images as the held-out split, since both are evaluated every epoch). ``protocol=sound``:
    none — the test split is read once, after training."""
    if config.protocol != "thesis":
        return {}
    watch = {HELDOUT_LOSS: splits.test}
    rest = unsampled_rest(splits, config)
    if len(rest) > len(splits.test):  # read every epoch: a seeded draw as large as the held-out split is enough
        rows = torch.randperm(len(rest), generator=torch.Generator().manual_seed(config.seed))[: len(splits.test)]
        rest = rest.subset(rows.sort().values)
    if len(rest):
        watch[REST_LOSS] = rest
    return watch


def protocol_readings(config: Config, info: dict[str, Any]) -> dict[str, float]:
    """The run's final readings: under ``protocol=thesis`` each watched loss's last value, minimum and its
    epoch, and the Keras-style validation loss; under ``sound`` the validation loss at the kept epoch."""
    readings = dict(info.get("readings", {}))
    if config.protocol == "thesis":
        return {(KERAS_VAL_LOSS + k[len("val_loss"):] if k.startswith("val_loss") else k): v
                for k, v in readings.items()}
    return {k: v for k, v in readings.items() if k == "val_loss_min"}


def reference_scores(prepared: Prepared, splits: Splits, config: Config, device: str) -> dict[str, float]:
    """The 1-NN pixel lookup (:mod:`synthmed.lookup`) and the class prior, from the run's real images only."""
    found = lookup_baseline(prepared.real, splits.test, splits.num_classes, validation=prepared.val, device=device,
                            seed=config.seed)
    prior = torch.bincount(prepared.real.labels, minlength=splits.num_classes).double()
    log_prior = (prior / prior.sum()).log()
    return {**found.metrics(), PRIOR_CE: float(-log_prior[splits.test.labels].mean())}


def selection(config: Config, prepared: Prepared) -> str:
    """Which epoch's model the run evaluates, in words (logged as the ``selection`` param)."""
    if config.protocol == "thesis":
        return "last epoch (protocol=thesis; validation and held-out losses are readings only)"
    if prepared.val is not None and len(prepared.val):
        return "lowest validation loss (carve of the sample" + (", by subject)" if prepared.val.grouped else ")")
    return "last epoch (no validation carve)"


def finish(job: Job, prepared: Prepared, info: dict[str, Any], logger: Any) -> TrainResult:
    """After training: log how it ran, evaluate on the test split, Grad-CAM, the model."""
    config, splits, device, model = job.config, job.splits, job.device, prepared.model
    logger.log_params({"epochs_run": info["epochs_run"], "best_epoch": info["best_epoch"], "device_used": device,
                       "optimizer_steps": info["optimizer_steps"], "precision_used": precision_name(config, device),
                       "torch_threads": torch.get_num_threads(), "kept_epoch": info.get("kept_epoch"),
                       "kept_optimizer_steps": info.get("kept_steps"), "selection": selection(config, prepared)})
    readings = protocol_readings(config, info)
    if readings:
        logger.log_metrics(readings)
    if "train_seconds" in info:  # wall time of the training loop; for k runs trained at once, their shared time
        logger.log_metrics({"train_seconds": info["train_seconds"]})
    result = evaluate(predict_logits(model, splits.test.images, device=device), splits.test.labels, splits.classes)
    metrics = {f"test_{k}": v for k, v in result.metrics.items()}
    logger.log_metrics(metrics)
    metrics.update(readings)
    logger.log_evaluation(result, splits.classes, splits.display_classes)
    if config.lookup:  # beside the model: what a lookup with no learning, and the class prior, score
        reference = reference_scores(prepared, splits, config, device)
        logger.log_metrics(reference)
        metrics.update(reference)
    if config.gradcam:
        metrics.update(log_run_gradcam(model=model, factory=job.factory, splits=splits, real=prepared.real,
                                       config=config, device=device, sink=logger, generator=prepared.generator))
    model_uri, version = log_run_model(logger.run_id, model, splits, config) if config.log_model else (None, None)
    return TrainResult(logger.run_id, metrics, model_uri, version)
