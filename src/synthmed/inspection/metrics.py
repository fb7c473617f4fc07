"""Pure metric functions for inspecting generated images (torch / numpy in, floats / tensors out).

No MLflow, no plotting. Features are whatever the caller passes: flattened pixels or the
reference classifier's penultimate activations (see :mod:`synthmed.inspection.reference`).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import torch

CHUNK = 256  # synthetic rows per cdist chunk: 256 x 5120 floats = 5 MB


def metric_suffix(name: str) -> str:
    """A class name as an MLflow-safe metric-name suffix (alphanumerics, ``_``, ``-``, ``.``)."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name.strip()) or "class"


def pixel_vectors(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 1, H, W)`` → float ``(N, H*W)`` in [0, 1] / sqrt(H*W): L2 distance = RMS pixel distance."""
    x = images.reshape(len(images), -1).float().div_(255.0)
    return x.div_(math.sqrt(max(x.shape[1], 1)))


def _np64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _t64(x: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double()


def frechet_distance(a: Any, b: Any) -> float:
    """Fréchet distance between Gaussians fitted to features ``a`` (N, D) and ``b`` (M, D).

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr sqrtm(S_a S_b)`` with unbiased (N - 1) covariances.
    The square roots of the eigenvalues of ``S_a S_b`` are the singular values of the centred
    cross-product ``A_c B_c^T / sqrt((N - 1)(M - 1))``, computed from the triangular factors of
    ``A_c = Q_a R_a`` and ``B_c = Q_b R_b`` as those of ``R_a R_b^T``: no matrix square root, no
    square root of a near-zero eigenvalue, no regularising epsilon, so the value is exact to
    round-off also for singular covariances (dead feature units, fewer rows than dimensions).
    NaN with fewer than two rows on a side; a round-off below 0 is returned as 0.
    """
    a, b = _np64(a), _np64(b)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    ac, bc = a - a.mean(0), b - b.mean(0)  # (N, D), (M, D)
    r_a, r_b = np.linalg.qr(ac, mode="r"), np.linalg.qr(bc, mode="r")  # (min(N, D), D), (min(M, D), D)
    root_trace = np.linalg.svd(r_a @ r_b.T, compute_uv=False).sum() / math.sqrt((len(a) - 1) * (len(b) - 1))
    diff = a.mean(0) - b.mean(0)
    fd = diff @ diff + (ac * ac).sum() / (len(a) - 1) + (bc * bc).sum() / (len(b) - 1) - 2.0 * root_trace
    return max(float(fd), 0.0)


def kid(a: Any, b: Any, *, subsets: int = 10, subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (here over any features): unbiased MMD² with ``(x·y/D + 1)^3``.

    Returns the mean and standard deviation over ``subsets`` random subsets of ``subset_size``
    rows of each side (default: ``min(1000, len(a), len(b))``), drawn without replacement.
    """
    a, b = _t64(a), _t64(b)
    d = a.shape[1]
    m = subset_size or min(1000, len(a), len(b))
    m = min(m, len(a), len(b))
    if m < 2:
        return float("nan"), float("nan")
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=g)[:m]]
        y = b[torch.randperm(len(b), generator=g)[:m]]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
               + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
               - 2 * kxy.mean())
        vals.append(float(mmd))
    v = np.array(vals)
    return float(v.mean()), float(v.std())


def _kth_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row to its k-th nearest other row (self excluded)."""
    out = []
    for s in range(0, len(x), CHUNK):
        d = torch.cdist(x[s:s + CHUNK], x)  # (c, N)
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # column 0 is self (0)
    return torch.cat(out)


def _covered(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Bool per query row: inside at least one ball ``B(ref_j, radii_j)``."""
    out = []
    for s in range(0, len(query), CHUNK):
        d = torch.cdist(query[s:s + CHUNK], ref)  # (c, R)
        out.append((d <= radii[None, :]).any(1))
    return torch.cat(out)


def knn_precision_recall(real: Any, fake: Any, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN radius manifolds.

    Precision: share of ``fake`` rows inside the real manifold (union of balls around each real
    row with its k-th nearest real neighbour's distance); recall: share of ``real`` rows inside
    the fake manifold. NaN when either side has no more than ``k`` rows.
    """
    real, fake = _t64(real).float(), _t64(fake).float()  # float32: 4x faster cdist, ample for radii
    if len(real) <= k or len(fake) <= k:
        return float("nan"), float("nan")
    precision = _covered(fake, real, _kth_radius(real, k)).double().mean().item()
    recall = _covered(real, fake, _kth_radius(fake, k)).double().mean().item()
    return float(precision), float(recall)


def label_fidelity(pred: Any, intended: Any, num_classes: int) -> dict[str, Any]:
    """Agreement of predicted with intended labels.

    Returns ``{"overall": float, "per_class": [float] * num_classes, "counts": [int]}``; a class
    without images gets NaN.
    """
    pred = torch.as_tensor(pred).long().flatten()
    intended = torch.as_tensor(intended).long().flatten()
    agree = pred == intended
    overall = agree.double().mean().item() if len(agree) else float("nan")
    per_class, counts = [], []
    for c in range(num_classes):
        mask = intended == c
        n = int(mask.sum())
        counts.append(n)
        per_class.append(agree[mask].double().mean().item() if n else float("nan"))
    return {"overall": float(overall), "per_class": per_class, "counts": counts}


def memorization(
    synth: Any, synth_source: Any, real: Any, real_ids: Any, *, ratio: float = 1 / 3, chunk: int = CHUNK,
) -> dict[str, Any]:
    """Per synthetic image: distance to its own source and to the nearest OTHER real images.

    Args:
        synth: ``(S, D)`` flattened pixels or features of the synthetic images.
        synth_source: ``(S,)`` id of each synthetic image's real source.
        real: ``(R, D)`` the real training images, same representation.
        real_ids: ``(R,)`` their ids (same id space as ``synth_source``).
        ratio: near-copy threshold (Gu et al. 2023): ``nearest < ratio * second``.

    Returns:
        ``source_distance`` (S,) (NaN where the source is not among ``real``), ``nearest_other``,
        ``second_other`` (S,), ``nearest_other_id`` (S,) int64, ``ratio`` (S,),
        ``near_copy`` (S,) bool, and ``n``, ``near_copies`` (int), ``near_copy_rate`` (float).

    Distances are found with chunked ``torch.cdist`` (``chunk`` synthetic rows at a time) and the
    three best candidates are recomputed exactly, so an exact copy has distance 0.
    """
    synth = torch.as_tensor(synth).float()
    real = torch.as_tensor(real).float()
    src = torch.as_tensor(synth_source).long()
    rid = torch.as_tensor(real_ids).long()
    s_n = len(synth)
    source_d = torch.full((s_n,), float("nan"), dtype=torch.float64)
    nearest = torch.full((s_n,), float("inf"), dtype=torch.float64)
    second = torch.full((s_n,), float("inf"), dtype=torch.float64)
    nearest_id = torch.full((s_n,), -1, dtype=torch.long)
    pos = {int(i): j for j, i in enumerate(rid.tolist())}
    kk = min(3, len(real))
    for s in range(0, s_n, chunk):
        x = synth[s:s + chunk]
        d = torch.cdist(x, real)  # (c, R) float32, matrix-multiply mode: approximate
        d[rid[None, :] == src[s:s + chunk, None]] = float("inf")  # exclude each row's own source
        cand = d.topk(kk, dim=1, largest=False).indices  # (c, kk)
        cand_valid = torch.isfinite(d.gather(1, cand))
        exact = (x[:, None, :].double() - real[cand].double()).norm(dim=2)  # (c, kk)
        exact[~cand_valid] = float("inf")
        order = exact.argsort(1)
        exact = exact.gather(1, order)
        cand = cand.gather(1, order)
        nearest[s:s + chunk] = exact[:, 0]
        nearest_id[s:s + chunk] = torch.where(torch.isfinite(exact[:, 0]), rid[cand[:, 0]], -1)
        if kk > 1:
            second[s:s + chunk] = exact[:, 1]
    for i, sid in enumerate(src.tolist()):
        j = pos.get(int(sid))
        if j is not None:
            source_d[i] = (synth[i].double() - real[j].double()).norm()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = torch.where(second > 0, nearest / second, torch.where(nearest > 0, torch.inf, 0.0))
    near = nearest < ratio * second
    near |= (nearest == 0) & (second == 0)  # two exact copies: also a near copy
    n_near = int(near.sum())
    return {
        "source_distance": source_d,
        "nearest_other": nearest,
        "second_other": second,
        "nearest_other_id": nearest_id,
        "ratio": r,
        "near_copy": near,
        "n": s_n,
        "near_copies": n_near,
        "near_copy_rate": n_near / s_n if s_n else math.nan,
    }
