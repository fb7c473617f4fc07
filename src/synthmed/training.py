"""One experiment of the thesis, end to end (Chapters 4 and 7).

    data → stratified real sample → augmentation policy → model → Adam + cross-entropy
         → test-split evaluation → MLflow (params, metrics, artifacts, Grad-CAM, registry)

:func:`train` is the whole thing; each step below is a named function.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from synthmed.config import Config
from synthmed.evaluation import evaluate, predict_logits, to_input

if TYPE_CHECKING:
    import pluggy
    import torch
    from torch import nn

    from synthmed.data.base import ImageSet, Splits
    from synthmed.policies.base import AugmentationPolicy

__all__ = ["TrainResult", "train", "to_input", "load_splits", "resolve_device"]


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


# --- setup ------------------------------------------------------------------------------------------
def load_splits(config: Config, pm: pluggy.PluginManager | None = None) -> Splits:
    """Load the configured dataset through its plugin."""
    from synthmed.plugins import registry

    return registry("datasets", pm).get(config.dataset)().load(config)


def resolve_device(config: Config) -> str:
    """``config.device`` checked against this machine (``auto``: CUDA when available)."""
    import torch

    from synthmed.errors import SynthmedError

    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(config.device)
    except RuntimeError:
        raise SynthmedError(f"device={config.device!r} is not a torch device — use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count or count == 0:
            raise SynthmedError(f"device={config.device!r} but this machine has {count} CUDA device(s) — "
                                "use device=cpu or auto")
    elif device.type != "cpu":
        raise SynthmedError(f"device={config.device!r} is not supported — use auto, cpu, cuda or cuda:N")
    return config.device


def autocast_dtype(config: Config, device: str) -> torch.dtype | None:
    """bf16 autocast where it pays (CUDA with bf16, CPUs with AVX-512 bf16), else fp32."""
    import torch

    if config.precision == "fp32":
        return None
    if config.precision == "bf16":
        return torch.bfloat16
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if _cpu_has_bf16() else None


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def sample_real(splits: Splits, config: Config) -> tuple[ImageSet, ImageSet | None]:
    """The stratified real sample (fraction X) and, when ``val_frac`` > 0, a validation part carved from it."""
    from synthmed.data.sampling import split_validation, stratified_sample

    rows = stratified_sample(splits.train.labels, config.real_frac, config.seed)
    real = splits.train.subset(rows)
    if not config.val_frac:
        return real, None
    train_rows, val_rows = split_validation(real.labels, config.val_frac, config.seed)
    return real.subset(train_rows), real.subset(val_rows)


# --- the loop -------------------------------------------------------------------------------------
def fit(
    model: nn.Module,
    policy: AugmentationPolicy,
    train_set: ImageSet,
    val_set: ImageSet | None,
    config: Config,
    device: str,
    log_metrics: Any,
) -> dict[str, Any]:
    """Adam + cross-entropy for ``config.epochs`` (early stopping on val loss when ``patience``)."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    amp = autocast_dtype(config, device)
    order_rng = torch.Generator().manual_seed(config.seed)  # batch order
    aug_rng = torch.Generator().manual_seed(config.seed + 1)  # augmentation draws
    best = {"val_loss": math.inf, "epoch": -1, "state": None}
    bad_epochs = 0
    bar = tqdm(range(config.epochs), desc="epochs", unit="epoch", disable=config.quiet, leave=False)
    for epoch in bar:
        data = policy.epoch_set(train_set, epoch, aug_rng)
        perm = torch.randperm(len(data), generator=order_rng)
        model.train()
        total, seen = 0.0, 0
        for start in tqdm(range(0, len(perm), config.batch_size), desc=f"epoch {epoch + 1}", unit="batch",
                          disable=config.quiet, leave=False):
            rows = perm[start : start + config.batch_size]
            images = policy.augment(data.images[rows], aug_rng)  # (B, 1, H, W) uint8
            x = to_input(images.to(device)).contiguous(memory_format=torch.channels_last)
            y = data.labels[rows].to(device)
            with torch.autocast(device_type=device.split(":")[0], dtype=amp or torch.float32, enabled=amp is not None):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
            seen += len(rows)
        epoch_metrics = {"train_loss": total / max(seen, 1)}
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
    if best["state"] is not None:  # restore the best epoch by validation loss (never by test loss)
        model.load_state_dict(best["state"])
    return {"epochs_run": epoch + 1, "best_epoch": best["epoch"] + 1 if best["epoch"] >= 0 else epoch + 1}


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
    import torch

    from synthmed import tracking
    from synthmed.plugins import default_plugin_manager, registry
    from synthmed.policies.base import PolicyContext

    config = config or Config()
    if overrides:
        config = config.replace(**overrides)
    pm = pm or default_plugin_manager()
    # Resolve every plugin first: a typo fails before minutes of data loading.
    factory = registry("models", pm).get(config.model)()
    policy = registry("policies", pm).get(config.policy).from_config(config)
    if config.gradcam or config.policy == "synthetic":  # a typo or an external generator fails now, not after loading
        from synthmed.policies.synthetic import check_external

        check_external(registry("generators", pm).get(config.generator), config)
    device = resolve_device(config)
    tracking.prepare_store(config)  # a silent tracking server fails now; ghost runs are marked KILLED
    splits = splits if splits is not None else load_splits(config, pm)

    with tracking.run(config, splits, parent_run_id=parent_run_id, tags=tags, run_name=run_name) as logger:
        real, val = sample_real(splits, config)
        ctx = PolicyContext(config, splits, pm, log_metrics=logger.log_metrics, log_params=logger.log_params,
                            log_artifact=logger.log_artifact)
        train_set = policy.training_set(real, ctx)
        logger.log_training_set(train_set, real, val, splits, policy)

        torch.manual_seed(config.seed)
        model = factory.create(splits.num_classes, config.image_size, config).to(device)
        model = model.to(memory_format=torch.channels_last)
        info = fit(model, policy, train_set, val, config, device, logger.log_metrics)
        amp = autocast_dtype(config, device)
        logger.log_params({"epochs_run": info["epochs_run"], "best_epoch": info["best_epoch"], "device_used": device,
                           "precision_used": "bf16" if amp is not None else "fp32",
                           "torch_threads": torch.get_num_threads()})

        result = evaluate(predict_logits(model, splits.test.images, device=device), splits.test.labels, splits.classes)
        metrics = {f"test_{k}": v for k, v in result.metrics.items()}
        logger.log_metrics(metrics)
        logger.log_evaluation(result, splits.classes)

        if config.gradcam:
            metrics.update(logger.log_gradcam(model, factory, splits, real, config, device, pm))
        model_uri, version = logger.log_model(model, splits, config) if config.log_model else (None, None)
        return TrainResult(logger.run_id, metrics, model_uri, version)
