"""Realism at equal set sizes, beside its real-vs-real floor.

FD, KID and k-NN precision/recall all move with the number of images compared: FD is biased
upward by roughly ``tr(S) / n`` at ``n`` images, and a k-NN ball shrinks as its set grows. So a
value is comparable only with one measured at the same size, and it means something only next to
what two sets of *real* images of that size score. :func:`equal_size_draw` picks, from ``S``
synthetic images and a pool of ``P`` real images, ``m = min(S, P // 2)`` synthetic images, a
real half ``A`` and a disjoint real half ``B`` (``m`` each, seeded); :func:`realism` compares the
synthetic images with ``A`` and, as the floor, ``B`` with ``A``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from synthmed.inspection.metrics import frechet_distance, kid, knn_precision_recall

__all__ = ["EqualSizeDraw", "equal_size_draw", "realism"]


@dataclass(frozen=True)
class EqualSizeDraw:
    """Rows of one equal-size comparison: ``m`` synthetic rows, real half ``A`` and disjoint real half ``B``."""

    synth_rows: torch.Tensor  # (m,) rows of the synthetic set
    a_rows: torch.Tensor  # (m,) rows of the real pool compared with the synthetic images
    b_rows: torch.Tensor  # (m,) other rows of the pool: the real-vs-real floor's second set

    @property
    def size(self) -> int:
        return len(self.synth_rows)


def equal_size_draw(n_synth: int, n_pool: int, seed: int) -> EqualSizeDraw:
    """``m = min(n_synth, n_pool // 2)`` synthetic rows and two disjoint pool halves of ``m`` rows (seeded, sorted)."""
    m = min(n_synth, n_pool // 2)
    g = torch.Generator().manual_seed(seed)
    synth_rows = torch.randperm(n_synth, generator=g)[:m]
    pool_rows = torch.randperm(n_pool, generator=g)
    return EqualSizeDraw(synth_rows.sort().values, pool_rows[:m].sort().values, pool_rows[m:2 * m].sort().values)


def realism(f_synth: torch.Tensor, f_a: torch.Tensor, f_b: torch.Tensor, *, k: int, with_kid: bool,
            seed: int) -> dict[str, float]:
    """FD, KID and k-NN precision/recall of synthetic vs real ``A``, and the same of real ``B`` vs ``A``.

    Args:
        f_synth: ``(m, D)`` features of the drawn synthetic images.
        f_a: ``(m, D)`` features of real half ``A``.
        f_b: ``(m, D)`` features of real half ``B`` (disjoint from ``A``).
        k: neighbours of the k-NN manifolds.
        with_kid: also KID (10 subsets of ``min(1000, m)`` rows, the same draws for both comparisons).
        seed: KID subset seed.

    Returns:
        ``fd``, ``kid``, ``kid_std``, ``precision``, ``recall``, each also as ``<name>_floor``
        (``B`` in place of the synthetic images), and ``set_size`` (``m``). NaN where ``m`` is too small.
    """
    m = len(f_synth)
    if not len(f_a) == len(f_b) == m:
        raise ValueError(f"realism needs equal set sizes, got {m} synthetic, {len(f_a)} and {len(f_b)} real")
    out = {"set_size": float(m)}
    for suffix, other in (("", f_synth), ("_floor", f_b)):
        out[f"fd{suffix}"] = frechet_distance(f_a, other) if m > 1 else math.nan
        if with_kid:
            out[f"kid{suffix}"], out[f"kid_std{suffix}"] = kid(f_a, other, seed=seed)
        out[f"precision{suffix}"], out[f"recall{suffix}"] = knn_precision_recall(f_a, other, k)
    return out
