"""Numbers for Grad-CAM maps: how much two maps agree, and how faithful a map is to the model.

All maps are ``(H, W)`` float arrays in ``[0, 1]`` (pytorch-grad-cam's output, min-max scaled
per image). Definitions, and how to read them, are in ``docs/gradcam.md``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

TOP_FRACTION = 0.2  # the "top-20%" region of a map
ROAD_PERCENTILE = 80  # ROAD removes the 20% most (and the 20% least) relevant pixels

# per-pair record fields that become metrics (prefix and class suffix added by summarize)
METRIC_FIELDS: tuple[str, ...] = (
    "agreement_pearson",
    "agreement_top20_iou",
    "baseline_pearson",
    "baseline_top20_iou",
    "faithfulness_real",
    "faithfulness_synthetic",
    "p_true_real",
    "p_true_synthetic",
    "empty_share_real",
    "empty_share_synthetic",
)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps' pixels, in ``[-1, 1]``.

    An empty (constant, in practice all-zero) map has no evidence to correlate: against a
    non-empty map the result is 0.0 (one shows evidence, the other none); when both are empty
    it is NaN (nothing to compare), and :func:`summarize` leaves it out of the means.
    """
    import numpy as np

    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    sx, sy = (x * x).sum(), (y * y).sum()
    if sx <= 1e-12 or sy <= 1e-12:
        return float("nan") if sx <= 1e-12 and sy <= 1e-12 else 0.0
    return float(np.clip((x * y).sum() / np.sqrt(sx * sy), -1.0, 1.0))


def top_region(cam: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Boolean mask of the map's top ``fraction`` of pixels (at or above the quantile, and > 0).

    Ties at the threshold are all kept, so the region can be a little larger than ``fraction``;
    an all-zero map has an empty region.
    """
    import numpy as np

    cam = np.asarray(cam, dtype=np.float64)
    threshold = np.quantile(cam, 1.0 - fraction)
    return (cam >= threshold) & (cam > 0)


def top_iou(a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Intersection over union of two maps' top-``fraction`` regions, in ``[0, 1]``.

    NaN when both regions are empty (two all-zero maps), 0.0 when only one is.
    """
    ra, rb = top_region(a, fraction), top_region(b, fraction)
    union = (ra | rb).sum()
    if union == 0:
        return float("nan")
    return float((ra & rb).sum() / union)


def is_empty(cam: np.ndarray) -> bool:
    """True for a map with no evidence at all (all zero after pytorch-grad-cam's min-max scaling)."""
    import numpy as np

    return bool(np.asarray(cam).max() <= 0)


def agreement(maps_a: np.ndarray, maps_b: np.ndarray) -> dict[str, np.ndarray]:
    """Pairwise agreement of ``(N, H, W)`` maps: ``{"pearson": (N,), "top20_iou": (N,)}``."""
    import numpy as np

    if maps_a.shape != maps_b.shape:
        raise ValueError(f"maps differ in shape: {maps_a.shape} vs {maps_b.shape}")
    return {
        "pearson": np.array([pearson(a, b) for a, b in zip(maps_a, maps_b)]),
        "top20_iou": np.array([top_iou(a, b) for a, b in zip(maps_a, maps_b)]),
    }


def faithfulness(
    model: nn.Module, inputs: torch.Tensor, maps: np.ndarray, targets: Sequence[int], *, seed: int = 0
) -> np.ndarray:
    """ROAD faithfulness of each map for its target class, ``(B,)`` in ``[-0.5, 0.5]``.

    pytorch-grad-cam's ``ROADCombined`` at one percentile: the softmax probability of the target
    class after removing (by noisy linear imputation) the map's 20% *least* relevant pixels,
    minus the probability after removing its 20% *most* relevant pixels, halved. Positive: the
    highlighted region matters more to the model than the rest. (Computed as the two ROAD
    curves' raw scores, which is ``ROADCombined`` without its two cancelling base-score passes.)

    The same numbers as pytorch-grad-cam's ``ROADLeastRelevantFirst`` and
    ``ROADMostRelevantFirst`` (same thresholds, same linear system, same noise draws in the same
    order; ``tests/test_gradcam.py`` checks it), about ten times faster: its imputer fills a
    ``lil_matrix`` element by element per image, which was most of a run's Grad-CAM panel; here
    the system is built from index arrays and both perturbed batches go through the model at once.

    Args:
        model: the classifier, in eval mode.
        inputs: ``(B, 1, H, W)`` float model input in ``[0, 1]``.
        maps: ``(B, H, W)`` maps of ``inputs``.
        targets: class index per image.
        seed: seeds the imputation noise (the global torch RNG is left untouched).
    """
    import numpy as np
    import torch

    images = inputs.detach().cpu()
    maps = np.asarray(maps, dtype=np.float32)
    devices = [inputs.device] if inputs.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        # least relevant first removes the top of (1 - map), i.e. the map's lowest pixels; the
        # same order of noise draws as pytorch-grad-cam: every image of that pass, then the other
        perturbed = [_road_impute(images[i], 1 - maps[i]) for i in range(len(maps))]
        perturbed += [_road_impute(images[i], maps[i]) for i in range(len(maps))]
    with torch.no_grad():
        probs = model(torch.stack(perturbed).to(inputs.device)).float().softmax(-1).cpu().numpy()
    rows, picked = np.arange(len(maps)), np.asarray(targets, dtype=np.int64)
    kept_top, lost_top = probs[rows, picked], probs[len(maps) + rows, picked]
    return ((kept_top - lost_top) / 2).astype("float64").reshape(-1)


# ROAD's noisy linear imputation (Rong et al. 2022, as in pytorch-grad-cam): each removed pixel
# becomes the weighted mean of its 8 neighbours (edge 1/6, corner 1/12), solved jointly for all
# removed pixels, plus N(0, 0.01²) noise
_ROAD_NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
                    ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))
_ROAD_NOISE = 0.01


def _road_impute(image: torch.Tensor, relevance: np.ndarray) -> torch.Tensor:
    """``image`` ``(C, H, W)`` with the pixels at or above ``relevance``'s 80th percentile imputed."""
    import numpy as np
    import torch
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    height, width = relevance.shape
    threshold = np.float32(np.percentile(relevance, ROAD_PERCENTILE))
    known = (relevance < threshold).reshape(-1)
    pixels = image.reshape(image.shape[0], -1)
    values = pixels.numpy()
    missing = np.flatnonzero(~known)
    n = len(missing)
    if n == 0:
        return image.clone()
    column = np.zeros(height * width, dtype=np.int64)
    column[missing] = np.arange(n)
    row0, col0 = missing // width, missing % width
    rhs = np.zeros((n, image.shape[0]))
    weight_sum = np.ones(n)
    rows, cols, data = [], [], []
    for (dr, dc), weight in _ROAD_NEIGHBOURS:
        r, c = row0 + dr, col0 + dc
        inside = (r >= 0) & (c >= 0) & (r < height) & (c < width)
        eq, neighbour = np.flatnonzero(inside), missing[inside] + dr * width + dc
        has_value = known[neighbour]
        rhs[eq[has_value]] -= weight * values[:, neighbour[has_value]].T  # float32 product, as in the reference
        rows.append(eq[~has_value])
        cols.append(column[neighbour[~has_value]])
        data.append(np.full(int((~has_value).sum()), weight))
        weight_sum[~inside] -= weight
    rows.append(np.arange(n))  # the diagonal: minus the weights of the neighbours inside the image
    cols.append(np.arange(n))
    data.append(-weight_sum)
    system = coo_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsc()
    solved = torch.tensor(spsolve(system, rhs), dtype=torch.float)  # (n,) for one channel, else (n, C)
    filled = pixels.clone()
    filled[:, missing] = solved.t() + _ROAD_NOISE * torch.randn_like(solved.t())
    return filled.reshape_as(image)


def finite_or_none(value: float) -> float | None:
    """``value`` as a float, or ``None`` for NaN (records are logged as strict JSON)."""
    import math

    return None if value is None or math.isnan(value) else float(value)


def metric_key(name: str) -> str:
    """A class name made safe for an MLflow metric key (letters, digits, ``_-. /``)."""
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", name)


def summarize(records: Iterable[dict[str, Any]], class_names: Sequence[str], prefix: str) -> dict[str, float]:
    """Mean of each per-pair value, overall (over all pairs) and per class (``_<Class>``).

    Values that are absent or NaN in a record (a class with one pair has no baseline; two empty
    maps have no agreement) are left out of the means; a mean over nothing is not reported.
    """
    import math

    import numpy as np

    records = list(records)
    out: dict[str, float] = {}
    groups: list[tuple[str, list[dict[str, Any]]]] = [("", records)]
    groups += [(f"_{metric_key(c)}", [r for r in records if r["class"] == c]) for c in class_names]
    for suffix, rows in groups:
        for field in METRIC_FIELDS:
            values = [r[field] for r in rows if r.get(field) is not None and not math.isnan(r[field])]
            if values:
                out[f"{prefix}_{field}{suffix}"] = float(np.mean(values))
    return out
