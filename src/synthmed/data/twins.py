"""Near-twins: pixel distances between images, nearest neighbours, and pseudo-subject groups.

The Alzheimer MRI dataset holds several slices of each brain, and neighbouring slices are nearly
the same image. Its train/test split was drawn image by image, so most test images have a
near-twin in the training split, and a lookup with no learning labels them (see ``docs/splits.md``).
This module measures that and links near-twins into groups that behave like subjects:

- :func:`rms_distances` — root-mean-square distance between images scaled to ``[0, 1]``, computed
  in blocks (``|a|^2 + |b|^2 - 2ab`` as one float32 matmul per block; its rounding error, about
  1e-5 of a squared distance at 64 px, is far below the twin gap; tested against scipy's ``cdist``);
- :func:`nearest` — the k nearest reference images of each query image;
- :func:`choose_threshold` — the linking distance read from the gap between the twin mode and the
  rest of the nearest-neighbour distances (Otsu's threshold on their logarithm);
- :func:`link_groups` — connected components of the graph "closer than the threshold"
  (scipy's ``connected_components``), numbered canonically so that the groups, and any split
  drawn from them, are a function of the images and the threshold alone: reordering the images
  changes nothing.

Distances are computed at :data:`GROUP_SIZE` px: :func:`as_vectors` area-averages larger images
down (smaller ones are used as they are), and ``load_splits`` decodes the dataset at that size
for linking whatever size a run trains at, so a dataset's groups, and its grouped split, do not
depend on the run's image size.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from synthmed.errors import SynthmedError

__all__ = ["GROUP_SIZE", "as_vectors", "canonical_keys", "choose_threshold", "link_groups", "nearest",
           "rms_distances"]

#: side (px) at which near-twins are measured and linked (the measurements in docs/splits.md use it)
GROUP_SIZE = 64
_BLOCK = 1024  # query rows per block: a 1024 × N float64 block of distances


def as_vectors(images: torch.Tensor, size: int | None = GROUP_SIZE) -> torch.Tensor:
    """``(N, 1, H, W)`` uint8 images as ``(N, D)`` float32 vectors in ``[0, 1]``, area-averaged to ``size`` px.

    ``size=None`` (or an image no larger than ``size``) keeps the images' own size.
    """
    if images.ndim != 4 or images.dtype != torch.uint8:
        raise SynthmedError(f"images must be (N, C, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    x = images.float().div_(255.0)
    if size is not None and images.shape[-1] > size:
        x = F.interpolate(x, size=(size, size), mode="area")
    return x.flatten(1)


def rms_distances(query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``(Nq, Nr)`` RMS distances between vectors (rows of :func:`as_vectors`); one block of queries."""
    q, r = query.float(), reference.float()
    d2 = (q * q).sum(1, keepdim=True) + (r * r).sum(1)[None, :] - 2.0 * (q @ r.T)
    return d2.clamp_(min=0).div_(q.shape[1]).sqrt_()


def nearest(query: torch.Tensor, reference: torch.Tensor, k: int = 1, *, exclude_self: bool = False,
            block: int = _BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest reference rows of each query row (RMS distance), in blocks of queries.

    Args:
        query, reference: ``(Nq, D)`` and ``(Nr, D)`` float vectors (:func:`as_vectors`).
        k: neighbours per query (at most ``Nr``, minus one with ``exclude_self``).
        exclude_self: ``query`` *is* ``reference``; row ``i`` never counts as its own neighbour.

    Returns:
        ``(distances, rows)``, each ``(Nq, k)``, nearest first.
    """
    if query.shape[1] != reference.shape[1]:
        raise SynthmedError(f"query vectors have {query.shape[1]} values, reference {reference.shape[1]}")
    available = len(reference) - (1 if exclude_self else 0)
    if k < 1 or k > available:
        raise SynthmedError(f"k={k} neighbours asked of {available} reference images")
    dists, rows = [], []
    for start in range(0, len(query), block):
        d = rms_distances(query[start:start + block], reference)
        if exclude_self:
            i = torch.arange(start, min(start + block, len(query)))
            d[i - start, i] = math.inf
        values, idx = torch.topk(d, k, dim=1, largest=False)
        dists.append(values)
        rows.append(idx)
    if not dists:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(dists), torch.cat(rows)


def choose_threshold(distances: torch.Tensor | np.ndarray) -> float:
    """The linking distance at the gap of a sample of nearest-neighbour distances.

    Otsu's method on ``log(distance)`` (256 bins): the cut that best separates the twin mode (a
    slice's neighbours in the same brain) from the rest. Distances of zero (exact copies) are
    left out of the histogram; they link at any threshold.
    """
    d = np.asarray(distances, dtype=np.float64).ravel()
    d = d[np.isfinite(d) & (d > 0)]
    if len(d) < 2 or d.min() == d.max():
        raise SynthmedError("too few distinct nearest-neighbour distances to choose a twin threshold — set it "
                            "(twin_threshold=...)")
    counts, edges = np.histogram(np.log(d), bins=256)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)
    w1 = w0[-1] - w0
    m0 = np.cumsum(counts * centers)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(np.exp(edges[int(np.argmax(between)) + 1]))


def canonical_keys(images: torch.Tensor, labels: torch.Tensor) -> list[str]:
    """A content key per image (sha1 of its label and pixels): orders groups independently of row order."""
    flat = images.contiguous().numpy().reshape(len(images), int(np.prod(images.shape[1:])))
    return [hashlib.sha1(int(label).to_bytes(4, "little") + row.tobytes()).hexdigest()
            for label, row in zip(labels.tolist(), flat)]


def link_groups(vectors: torch.Tensor, threshold: float, keys: list[str] | None = None) -> torch.Tensor:
    """Connected components of "RMS distance < ``threshold``" over the rows of ``vectors``.

    Args:
        vectors: ``(N, D)`` (:func:`as_vectors`).
        threshold: link distance (RMS, pixels in ``[0, 1]``).
        keys: a content key per row (:func:`canonical_keys`); groups are numbered in the order of
            their smallest key, so that the numbering, like the partition, ignores row order.
            ``None``: numbered in the order of their first row.

    Returns:
        ``(N,)`` int64 group ids ``0..G-1``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise SynthmedError(f"twin_threshold={threshold!r} must be a positive number (an RMS distance, e.g. 0.06)")
    n = len(vectors)
    src, dst = [], []
    for start in range(0, n, _BLOCK):
        d = rms_distances(vectors[start:start + _BLOCK], vectors)
        i, j = torch.nonzero(d < threshold, as_tuple=True)
        src.append((i + start).numpy())
        dst.append(j.numpy())
    i = np.concatenate(src) if src else np.empty(0, dtype=np.int64)
    j = np.concatenate(dst) if dst else np.empty(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    return _renumber(component, keys)


def _renumber(component: np.ndarray, keys: list[str] | None) -> torch.Tensor:
    """Group ids ``0..G-1`` in the order of each group's smallest key (or first row)."""
    first: dict[int, str | int] = {}
    for row, c in enumerate(component.tolist()):
        key = keys[row] if keys is not None else row
        if c not in first or key < first[c]:  # type: ignore[operator]
            first[c] = key
    order = {c: new for new, c in enumerate(sorted(first, key=lambda c: first[c]))}
    return torch.tensor([order[c] for c in component.tolist()], dtype=torch.long)
