"""Evaluation on the held-out split (Chapter 4.2): cross-entropy first, then the rest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from torch import nn


@dataclass
class Evaluation:
    """Metrics of one model on one split.

    Attributes:
        metrics: flat ``{name: value}``: ``cross_entropy`` (mean over images, natural log — the
            thesis's headline), ``accuracy``, ``balanced_accuracy`` (mean per-class recall),
            ``macro_f1`` and ``recall_<Class>`` / ``precision_<Class>`` / ``f1_<Class>``.
        confusion: ``(C, C)`` counts, rows = true class, columns = predicted class.
        probs: ``(N, C)`` predicted probabilities.
    """

    metrics: dict[str, float]
    confusion: np.ndarray
    probs: np.ndarray


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 1, H, W)`` → float ``(B, 1, H, W)`` in ``[0, 1]``: what every model takes."""
    return images.float().div_(255.0)


def predict_logits(model: nn.Module, images: torch.Tensor, *, batch_size: int | None = None,
                   device: str = "cpu") -> torch.Tensor:
    """Logits ``(N, C)`` in float32 for uint8 images, in eval mode, without gradients.

    ``batch_size`` defaults to 64 on the CPU, where larger batches only hold more memory for the
    same speed, and 256 on accelerators.
    """
    batch_size = batch_size or (64 if device.startswith("cpu") else 256)

    was_training = model.training
    _set_training(model, False)
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = to_input(images[start : start + batch_size].to(device))  # (B, 1, H, W) float
            out.append(model(x).float().cpu())
    _set_training(model, was_training)
    return torch.cat(out) if out else torch.empty(0)


def _set_training(model: nn.Module, mode: bool) -> None:
    """``model.train(mode)``; a graph loaded from MLflow's pt2 format refuses it and is already what it was
    exported as (eval mode: the logged model is exported from ``model.eval()``)."""
    try:
        model.train(mode)
    except NotImplementedError:
        pass


def evaluate(logits: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...]) -> Evaluation:
    """Cross-entropy, accuracy, balanced accuracy, macro-F1, per-class metrics, confusion matrix."""
    num_classes = len(classes)
    ce = F.cross_entropy(logits, labels).item()
    pred = logits.argmax(1)
    y, p = labels.numpy(), pred.numpy()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (y, p), 1)
    support = confusion.sum(1)
    predicted = confusion.sum(0)
    tp = np.diag(confusion)
    recall = np.divide(tp, support, out=np.zeros(num_classes), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(num_classes), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(num_classes), where=denom > 0)
    present = support > 0  # classes absent from the split do not count in macro averages
    metrics = {
        "cross_entropy": ce,
        "accuracy": float((y == p).mean()) if len(y) else float("nan"),
        "balanced_accuracy": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
    }
    for i, name in enumerate(classes):
        metrics[f"recall_{name}"] = float(recall[i])
        metrics[f"precision_{name}"] = float(precision[i])
        metrics[f"f1_{name}"] = float(f1[i])
    probs = logits.softmax(1).numpy()
    return Evaluation(metrics, confusion, probs)
