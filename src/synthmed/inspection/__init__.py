"""What was generated, checked: quality, label fidelity and memorization of synthetic images.

:func:`inspect_generation` compares synthetic images with the real training images they came
from, and returns metrics (MLflow-safe names), figures and a table of the most copy-like images.
:func:`log_inspection` sends a result to any tracker through plain callables (no MLflow import).

Features come from a :class:`~synthmed.inspection.reference.ReferenceClassifier` (the ``cnn``
trained on the real training split), not from Inception: there is no weight download here, and
grayscale MRI is far from ImageNet. These FD/KID values are therefore NOT comparable to published
FID/KID numbers. The reference classifier only measures; it is never used to train or select anything.

Metrics (the names of the full check, ``synthmed inspect-generator``; the cheap per-run check inside
every synthetic training run logs the same under the prefix ``check_``, e.g. ``check_quality_fd``):
    realism at equal set sizes (:mod:`.realism`): ``quality_set_size`` (m), ``quality_fd``,
    ``quality_kid``, ``quality_kid_std`` (full mode only), ``quality_precision``, ``quality_recall``
    (k-NN manifolds, k = 3) of m synthetic images vs a real half A of the pool, each beside its
    ``<name>_floor``: the same between A and a disjoint real half B of the same size; per class
    ``quality_precision_<class>``, ``quality_recall_<class>`` (the classes of those draws);
    ``fidelity`` and ``fidelity_<class>``: share of synthetic images the reference classifier
    assigns their intended class, ``fidelity_real`` (+ ``_<class>``) the same on the real sources,
    ``fidelity_real_blurred`` (+ ``_<class>``, full mode) on the real sources blurred by a Gaussian of
    1.25% of the side — a blur no reader would call another diagnosis, so a class that falls there is
    judged by its sharpness as much as by its anatomy;
    ``memorization_near_copies_pixel`` / ``_feature`` and
    ``memorization_near_copies_<class>`` (pixel): SHARE (0..1) of synthetic images whose nearest
    real training image other than their own source is closer than 1/3 of the second nearest
    (Gu et al. 2023), beside ``memorization_near_copies_pixel_floor`` / ``_feature_floor``: the same
    share for the real sources against the other real sources; ``memorization_source_distance`` and ``memorization_nearest_other_distance``:
    mean RMS pixel distance (images scaled to [0, 1]) to the own source and to the nearest other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
import torchvision.transforms.functional as TF

from synthmed.inspection.curve import Curve, curve_sources, fidelity_diversity_curve
from synthmed.inspection.figures import per_class_figure, worst_pairs_figure
from synthmed.inspection.metrics import (
    frechet_distance,
    kid,
    knn_precision_recall,
    label_fidelity,
    memorization,
    metric_suffix,
    pixel_vectors,
)
from synthmed.inspection.realism import equal_size_draw, realism
from synthmed.inspection.reference import ReferenceClassifier

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from synthmed.data.base import ImageSet

__all__ = [
    "CHECK_PREFIX",
    "Curve",
    "InspectionResult",
    "ReferenceClassifier",
    "curve_sources",
    "fidelity_diversity_curve",
    "frechet_distance",
    "inspect_generation",
    "kid",
    "knn_precision_recall",
    "label_fidelity",
    "log_inspection",
    "memorization",
    "metric_suffix",
]

K = 3
ROWS_PER_CLASS = 8  # per-class figure rows (full mode)
OVERVIEW_PER_CLASS = 2
WORST = 16
#: what the cheap per-run check puts before every metric name, so its numbers never share a name
#: (an MLflow column) with the full check's
CHECK_PREFIX = "check_"


@dataclass
class InspectionResult:
    metrics: dict[str, float]
    figures: dict[str, Figure] = field(default_factory=dict)
    worst_pairs: pd.DataFrame | None = None


BLUR_SIGMA = 0.0125  # of the image side: 0.8 px at 64 px, 1.6 px at 128 px


def blur(images: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """``(N, 1, H, W)`` uint8 blurred by a Gaussian of ``sigma`` x the side (the sharpness calibration)."""
    s = sigma * images.shape[-1]
    k = 2 * math.ceil(3 * s) + 1
    return TF.gaussian_blur(images.float(), [k, k], [s, s]).round().clamp(0, 255).to(torch.uint8)


def _mean(t: torch.Tensor) -> float:
    t = t[torch.isfinite(t)]
    return float(t.double().mean()) if len(t) else math.nan


def inspect_generation(
    real: ImageSet,
    synth: ImageSet,
    reference: ReferenceClassifier,
    classes: Sequence[str],
    *,
    pool: ImageSet | None = None,
    cheap: bool = True,
    max_images: int = 512,
    seed: int = 0,
) -> InspectionResult:
    """Quality, label fidelity and memorization of ``synth`` against the real training images.

    Args:
        real: the real training images (the generator's sources); ``real.index`` are their ids.
        synth: the synthetic images; ``synth.index`` holds each one's source id (same space as
            ``real.index``), ``synth.labels`` its intended class.
        reference: the reference classifier (features and predicted labels).
        classes: class names, for metric names and figure titles.
        pool: the real images the realism metrics draw their two disjoint halves from (default
            ``real``): ``m = min(len(synth), len(pool) // 2)`` synthetic images vs half ``A``, and
            the floor, ``A`` vs half ``B`` (:mod:`synthmed.inspection.realism`).
        cheap: subsample at most ``max_images`` synthetic images (seeded), skip KID, and make one
            overview figure instead of one per class. ``cheap=False`` uses everything.
        seed: subsampling, half-drawing and KID subset seed.
    """
    num_classes = len(classes)
    pool = real if pool is None else pool
    if cheap and len(synth) > max_images:
        rows = torch.randperm(len(synth), generator=torch.Generator().manual_seed(seed))[:max_images].sort().values
        synth = synth.subset(rows)
    names = [metric_suffix(c) for c in classes]
    m: dict[str, float] = {}

    f_real = reference.features(real.images).double()
    f_synth = reference.features(synth.images).double()

    # realism at equal sizes: m synthetic vs real half A, beside the floor A vs real half B
    draw = equal_size_draw(len(synth), len(pool), seed)
    halves = pool.subset(torch.cat([draw.a_rows, draw.b_rows]))
    f_halves = reference.features(halves.images).double()
    f_a, f_b = f_halves[:draw.size], f_halves[draw.size:]
    f_s, s_labels, a_labels = f_synth[draw.synth_rows], synth.labels[draw.synth_rows], halves.labels[:draw.size]
    for key, value in realism(f_s, f_a, f_b, k=K, with_kid=not cheap, seed=seed).items():
        m[f"quality_{key}"] = value
    for c, name in enumerate(names):
        p, r = knn_precision_recall(f_a[a_labels == c], f_s[s_labels == c], K)
        m[f"quality_precision_{name}"], m[f"quality_recall_{name}"] = p, r

    pred = reference.predict_from_features(f_synth)  # same network pass as the features
    fid = label_fidelity(pred, synth.labels, num_classes)
    m["fidelity"] = fid["overall"]
    for name, v in zip(names, fid["per_class"]):
        m[f"fidelity_{name}"] = v
    # the same score on the real sources: the reference's own ceiling (it was trained on them), so a
    # class it cannot recognise in real images either says nothing about the generator
    real_fid = label_fidelity(reference.predict_from_features(f_real), real.labels, num_classes)
    m["fidelity_real"] = real_fid["overall"]
    for name, v in zip(names, real_fid["per_class"]):
        m[f"fidelity_real_{name}"] = v
    if not cheap:  # the same on the real sources slightly blurred: how much of "fidelity" is sharpness
        blurred = label_fidelity(reference.predict(blur(real.images)), real.labels, num_classes)
        m["fidelity_real_blurred"] = blurred["overall"]
        for name, v in zip(names, blurred["per_class"]):
            m[f"fidelity_real_blurred_{name}"] = v

    real_px = pixel_vectors(real.images)  # (R, H*W): the sources, for the synthetic images and the floor
    mem_px = memorization(pixel_vectors(synth.images), synth.index, real_px, real.index)
    mem_ft = memorization(f_synth, synth.index, f_real, real.index)
    m["memorization_near_copies_pixel"] = mem_px["near_copy_rate"]
    m["memorization_near_copies_feature"] = mem_ft["near_copy_rate"]
    # the floor: the same test for each real source against the other real sources (near-twins, slices
    # of one brain, make it far from 0 on this dataset); a generator copying no more than that adds none
    m["memorization_near_copies_pixel_floor"] = memorization(real_px, real.index, real_px, real.index)["near_copy_rate"]
    m["memorization_near_copies_feature_floor"] = memorization(f_real, real.index, f_real, real.index)["near_copy_rate"]
    for c, name in enumerate(names):
        mask = synth.labels == c
        m[f"memorization_near_copies_{name}"] = float(mem_px["near_copy"][mask].double().mean()) if mask.any() else math.nan
    m["memorization_source_distance"] = _mean(mem_px["source_distance"])
    m["memorization_nearest_other_distance"] = _mean(mem_px["nearest_other"])

    # table: most copy-like first (smallest nearest/second ratio in pixel space)
    pos = {int(i): j for j, i in enumerate(real.index.tolist())}
    df = pd.DataFrame({
        "synthetic_row": range(len(synth)),
        "source_id": synth.index.tolist(),
        "intended": [classes[int(c)] for c in synth.labels],
        "predicted": [classes[int(c)] for c in pred],
        "source_distance": mem_px["source_distance"].tolist(),
        "nearest_other_id": mem_px["nearest_other_id"].tolist(),
        "nearest_other_distance": mem_px["nearest_other"].tolist(),
        "second_other_distance": mem_px["second_other"].tolist(),
        "ratio": mem_px["ratio"].tolist(),
        "near_copy_pixel": mem_px["near_copy"].tolist(),
        "near_copy_feature": mem_ft["near_copy"].tolist(),
    }).sort_values(["ratio", "nearest_other_distance"], kind="stable").reset_index(drop=True)

    def real_image(real_id: int) -> torch.Tensor | None:
        j = pos.get(int(real_id))
        return real.images[j] if j is not None else None

    def rows_figure(rows: list[int], title: str, labels: list[str] | None = None) -> Figure:
        sd, nd = mem_px["source_distance"], mem_px["nearest_other"]
        nearest = [real_image(int(mem_px["nearest_other_id"][i])) for i in rows]
        return per_class_figure(
            [real_image(int(synth.index[i])) for i in rows],
            synth.images[rows] if rows else synth.images[:0],
            nearest, [float(sd[i]) for i in rows], [float(nd[i]) for i in rows], title, labels=labels,
        )

    figures: dict[str, Figure] = {}
    g = torch.Generator().manual_seed(seed)
    per_class_rows = []
    for c in range(num_classes):
        idx = torch.nonzero(synth.labels == c).flatten()
        per_class_rows.append(idx[torch.randperm(len(idx), generator=g)].tolist())
    overview = [(i, classes[c]) for c in range(num_classes) for i in per_class_rows[c][:OVERVIEW_PER_CLASS]]
    figures["inspection/overview.png"] = rows_figure(
        [i for i, _ in overview], "source | synthetic | nearest other real (RMS pixel distance)", [n for _, n in overview])
    if not cheap:
        for c, name in enumerate(names):
            figures[f"inspection/class_{name}.png"] = rows_figure(
                per_class_rows[c][:ROWS_PER_CLASS], f"{classes[c]}: source | synthetic | nearest other real")
    worst = df.head(WORST)
    figures["inspection/worst_pairs.png"] = worst_pairs_figure(
        synth.images[worst["synthetic_row"].tolist()] if len(worst) else synth.images[:0],
        [real_image(i) for i in worst["nearest_other_id"]],
        worst["nearest_other_distance"].tolist(), worst["ratio"].tolist(), labels=worst["intended"].tolist(),
    )
    return InspectionResult(metrics=m, figures=figures, worst_pairs=df)


def log_inspection(
    result: InspectionResult,
    log_metrics: Callable[[dict[str, float]], Any],
    log_figure: Callable[[Figure, str], Any],
    log_text: Callable[[str, str], Any],
    *,
    prefix: str = "",
) -> None:
    """Send a result to a tracker: e.g. ``mlflow.log_metrics``, ``mlflow.log_figure``, ``mlflow.log_text``.

    NaN metrics (a class without images) are left out; every metric name gets ``prefix``
    (:data:`CHECK_PREFIX` for the per-run check); the worst-pairs table goes as CSV text.
    """
    log_metrics({f"{prefix}{k}": float(v) for k, v in result.metrics.items() if v == v})
    for name, fig in result.figures.items():
        log_figure(fig, name)
    if result.worst_pairs is not None:
        log_text(result.worst_pairs.to_csv(index=False), "inspection/worst_pairs.csv")
