"""One experiment of the thesis, end to end (Chapters 4 and 7).

    data → stratified real sample → augmentation policy → model → Adam + cross-entropy
         → test-split evaluation → MLflow (params, metrics, artifacts, Grad-CAM, registry)

:func:`train` is the whole thing; each step below is a named function.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from synthmed.config import Config
from synthmed.data.loading import load_splits, present, sample_real  # the run's data (re-exported here)
from synthmed.evaluation import evaluate, predict_logits, to_input
from synthmed.runtime import (  # where and how it computes (re-exported here)
    autocast_dtype, precision_name, release_freed_memory, resolve_device, tune_memory)

if TYPE_CHECKING:
    import pluggy
    import torch
    from torch import nn

    from synthmed.data.base import ImageSet, Splits
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


def make_optimizer(params: Any, config: Config, device: str) -> torch.optim.Optimizer:
    """Adam in its fused form (one kernel over all parameters; CPU and CUDA), else foreach.

    Measured on the project's 2-core CPU (CNN, batch 32, 128 px): the optimizer step takes about
    half the time of the single-tensor form. Adam is elementwise, so the forms agree to float
    rounding; the same form is used for every run on a device, so the same seed gives the same metrics.
    """
    import torch

    try:
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, TypeError):  # a device or dtype without a fused kernel
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, foreach=True)


def _sum_dtype(device: str) -> torch.dtype:
    import torch

    return torch.float32 if device.startswith("mps") else torch.float64


class _Resident:
    """A training set's uint8 images and labels on the device, moved once (again only if the set changes)."""

    def __init__(self, device: str):
        self.device, self.source, self.value = device, None, None

    def get(self, data: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
        source = (data.images, data.labels)  # held, so identity checks cannot meet a recycled id
        if self.source is None or any(a is not b for a, b in zip(source, self.source)):
            self.source, self.value = source, (data.images.to(self.device), data.labels.to(self.device))
        return self.value


# --- the loop -------------------------------------------------------------------------------------
def fit(
    model: nn.Module,
    policy: AugmentationPolicy,
    train_set: ImageSet,
    val_set: ImageSet | None,
    config: Config,
    device: str,
    log_metrics: Any,
    max_steps: int | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Adam + cross-entropy for ``config.epochs`` (early stopping on val loss when ``patience``).

    With ``max_steps`` (``budget=steps``) it makes passes over the data until that many optimizer
    steps are taken, the last pass cut short; a "epoch" in the logs is then one pass. ``forward``
    computes the training logits (default: ``model``; runs pass their factory's
    :meth:`~synthmed.models.base.ModelFactory.training_forward`, which computes the same function).
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    opt = make_optimizer(model.parameters(), config, device)
    amp = autocast_dtype(config, device)
    device_type = device.split(":")[0]
    order_rng = torch.Generator().manual_seed(config.seed)  # batch order
    aug_rng = torch.Generator().manual_seed(config.seed + 1)  # augmentation draws
    best = {"val_loss": math.inf, "epoch": -1, "state": None}
    bad_epochs, steps, passes_run = 0, 0, 0
    passes = itertools.count() if max_steps is not None else range(config.epochs)
    bar = tqdm(passes, desc="epochs", unit="epoch", disable=config.quiet, leave=False,
               total=None if max_steps is not None else config.epochs)
    resident = _Resident(device)
    started = time.perf_counter()
    for epoch in bar:
        if max_steps is not None and steps >= max_steps:
            break
        data = policy.epoch_set(train_set, epoch, aug_rng)
        images, labels = resident.get(data)  # uint8 images and labels on the device, moved once per set
        perm = torch.randperm(len(data), generator=order_rng)
        if max_steps is not None:  # the last pass stops at the budget
            perm = perm[: (max_steps - steps) * config.batch_size]
        perm = perm.to(device)
        model.train()
        total = torch.zeros((), device=device, dtype=_sum_dtype(device))  # no host sync per step
        seen = 0
        for start in tqdm(range(0, len(perm), config.batch_size), desc=f"epoch {epoch + 1}", unit="batch",
                          disable=config.quiet, leave=False):
            rows = perm[start : start + config.batch_size]
            batch = policy.augment(images[rows], aug_rng)  # (B, 1, H, W) uint8, on the device
            x = to_input(batch).contiguous(memory_format=torch.channels_last)
            y = labels[rows]
            with torch.autocast(device_type=device_type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = (forward or model)(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(rows)
            seen += len(rows)
            steps += 1
        passes_run += 1
        epoch_metrics = {"train_loss": total.item() / max(seen, 1)}  # the one sync of the epoch
        if val_set is not None and len(val_set):
            val_logits = predict_logits(model, val_set.images, device=device)
            epoch_metrics["val_loss"] = F.cross_entropy(val_logits, val_set.labels).item()
        log_metrics(epoch_metrics, step=epoch)
        bar.set_postfix({k: f"{v:.4f}" for k, v in epoch_metrics.items()})
        if "val_loss" in epoch_metrics:
            if epoch_metrics["val_loss"] < best["val_loss"]:
                best = {"val_loss": epoch_metrics["val_loss"], "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
                bad_epochs = 0
            else:
                bad_epochs += 1
                if config.patience and bad_epochs >= config.patience:
                    break
    train_seconds = time.perf_counter() - started  # each epoch ended in a sync (its train loss), so this is real
    if best["state"] is not None:  # restore the best epoch by validation loss (never by test loss)
        model.load_state_dict(best["state"])
    return {"epochs_run": passes_run, "best_epoch": best["epoch"] + 1 if best["epoch"] >= 0 else passes_run,
            "optimizer_steps": steps, "train_seconds": train_seconds}


def step_budget(config: Config, full_train_size: int) -> int | None:
    """``budget=steps``: the optimizer steps of ``epochs`` passes over the full training split; else ``None``."""
    if config.budget != "steps":
        return None
    return config.epochs * math.ceil(full_train_size / config.batch_size)


def augmented_examples(train_set: ImageSet, policy: AugmentationPolicy, config: Config,
                       n: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` training images after the policy (images, labels, synthetic flags), for the run's grid figure.

    Drawn from their own generator (seeded by the run's seed), so showing them changes no draw of training.
    """
    import torch

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
    from synthmed import tracking

    job = setup(config, splits=splits, pm=pm, **overrides)
    try:
        with tracking.run(job.config, job.splits, parent_run_id=parent_run_id, tags=tags, run_name=run_name) as logger:
            prepared = prepare(job, logger)
            info = fit(prepared.model, job.policy, prepared.train_set, prepared.val, job.config, job.device,
                       logger.log_metrics, max_steps=prepared.max_steps, forward=prepared.forward)
            return finish(job, prepared, info, logger)
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


@dataclass
class Prepared:
    """What :func:`prepare` makes inside the run: the real sample, the training set, the fresh model."""

    real: ImageSet
    val: ImageSet | None
    train_set: ImageSet
    model: nn.Module
    max_steps: int | None
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # the factory's training_forward(model)


def setup(config: Config | None = None, *, splits: Splits | None = None, pm: pluggy.PluginManager | None = None,
          **overrides: Any) -> Job:
    """Resolve every plugin first (a typo fails before minutes of data loading), the device and the data."""
    from synthmed import tracking
    from synthmed.generators.build import generator_class
    from synthmed.plugins import default_plugin_manager, registry

    tune_memory()  # huge pages in time only if torch has allocated nothing yet in this process (see use_huge_pages)
    config = config or Config()
    if overrides:
        config = config.replace(**overrides)
    pm = pm or default_plugin_manager()
    factory = registry("models", pm).get(config.model)()
    policy = registry("policies", pm).get(config.policy).from_config(config, pm)
    if config.gradcam or config.policy == "synthetic":  # a typo or an external generator fails now, not after loading
        generator_class(config, pm)
    device = resolve_device(config)
    tracking.prepare_store(config)  # a silent tracking server fails now; ghost runs are marked KILLED
    splits = present(splits, config, pm) if splits is not None else load_splits(config, pm)
    return Job(config, pm, factory, policy, device, splits)


def prepare(job: Job, logger: Any) -> Prepared:
    """Inside the run: the real sample, the policy's training set (logged) and the seeded fresh model."""
    import torch

    from synthmed.policies.base import PolicyContext

    config, splits = job.config, job.splits
    real, val = sample_real(splits, config)
    ctx = PolicyContext(config, splits, job.pm, log_metrics=logger.log_metrics, log_params=logger.log_params,
                        log_artifact=logger.log_artifact)
    train_set = job.policy.training_set(real, ctx)
    logger.log_training_set(train_set, val, splits, shown=augmented_examples(train_set, job.policy, config))
    logger.tag_open_set()  # a warm-started learned generator may carry data from outside the sample
    if config.inspect:  # what the generator made: realism, label fidelity, memorization (no-op without)
        from synthmed.inspection.run import check_run

        check_run(train_set, real, splits, config, logger)
    torch.manual_seed(config.seed)
    model = job.factory.create(splits.num_classes, config.image_size, config).to(job.device)
    model = model.to(memory_format=torch.channels_last)
    return Prepared(real, val, train_set, model, step_budget(config, len(splits.train)),
                    job.factory.training_forward(model))


def finish(job: Job, prepared: Prepared, info: dict[str, Any], logger: Any) -> TrainResult:
    """After training: log how it ran, evaluate on the test split, Grad-CAM, the model."""
    import torch

    from synthmed.gradcam.panel import log_run_gradcam

    config, splits, device, model = job.config, job.splits, job.device, prepared.model
    logger.log_params({"epochs_run": info["epochs_run"], "best_epoch": info["best_epoch"], "device_used": device,
                       "optimizer_steps": info["optimizer_steps"], "precision_used": precision_name(config, device),
                       "torch_threads": torch.get_num_threads()})
    if "train_seconds" in info:  # wall time of the training loop; for k runs trained at once, their shared time
        logger.log_metrics({"train_seconds": info["train_seconds"]})
    result = evaluate(predict_logits(model, splits.test.images, device=device), splits.test.labels, splits.classes)
    metrics = {f"test_{k}": v for k, v in result.metrics.items()}
    logger.log_metrics(metrics)
    logger.log_evaluation(result, splits.classes, splits.display_classes)
    if config.gradcam:
        metrics.update(log_run_gradcam(model=model, factory=job.factory, splits=splits, real=prepared.real,
                                       config=config, device=device, sink=logger, pm=job.pm))
    model_uri, version = logger.log_model(model, splits, config) if config.log_model else (None, None)
    return TrainResult(logger.run_id, metrics, model_uri, version)
