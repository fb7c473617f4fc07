"""The arithmetic of the synthetic policy: how many synthetic images per class, from which sources.

Exact rational arithmetic (``fractions.Fraction``), so the counts never drift by a float rounding.
See docs/synthetic.md for the rules in prose.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import torch

from synthmed.errors import SynthmedError

__all__ = ["SyntheticPlan", "apportion", "plan_synthetic", "synthetic_counts", "synthetic_total"]


def synthetic_total(full_size: int, real_size: int, synth_frac: float | None) -> int:
    """S: ``full_size - real_size`` when ``synth_frac`` is unset (fill up to the full training
    set, as in the thesis), else ``floor(synth_frac * full_size + 0.5)``."""
    if synth_frac is None:
        return max(0, full_size - real_size)
    return math.floor(Fraction(synth_frac) * full_size + Fraction(1, 2))


def apportion(quotas: Sequence[Fraction], total: int) -> list[int]:
    """Largest-remainder rounding of ``quotas`` (scaled to sum to ``total``) to integers summing to ``total``.

    Ties in the remainder go to the larger quota, then to the lower index.
    """
    weight = sum(quotas, Fraction(0))
    if total == 0 or weight == 0:
        return [0] * len(quotas)
    exact = [Fraction(q) * total / weight for q in quotas]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda c: (-(exact[c] - counts[c]), -exact[c], c))
    for c in order[: total - sum(counts)]:
        counts[c] += 1
    return counts


def synthetic_counts(full_counts: Sequence[int], real_counts: Sequence[int], total: int, *, balance: bool = False) -> list[int]:
    """s_c, the synthetic images of each class; they sum to ``total`` (S).

    Only classes with at least one real source can receive synthetic images. With ``R`` real
    images and ``M = R + S`` images in the mixed set:

    * default — the mixed set follows the *full* training set's class proportions: class ``c``
      aims at ``M * n_c / N`` images, so its quota is ``max(0, M * n_c / N - r_c)``. When
      ``M == N`` (the thesis' fill-up) that is exactly ``n_c - r_c``: every class is restored to
      its full size whatever the real sample's rounding.
    * ``balance`` — water-filling: every class is topped up to one common level ``L`` (quota
      ``max(0, L - r_c)``, with ``L`` chosen so the quotas sum to ``S``); a class already above
      ``L`` gets none. Rare classes therefore get at least as many as by default (up to rounding).

    The quotas are rounded by :func:`apportion`.
    """
    if len(full_counts) != len(real_counts):
        raise ValueError("full_counts and real_counts must have one entry per class")
    eligible = [r > 0 for r in real_counts]
    if total <= 0:
        return [0] * len(real_counts)
    if not any(eligible):
        raise SynthmedError("the real sample is empty: there is no source image to make synthetic variations of")
    if balance:
        level = _water_level([r for r, ok in zip(real_counts, eligible) if ok], total)
        quotas = [max(Fraction(0), level - r) if ok else Fraction(0) for r, ok in zip(real_counts, eligible)]
    else:
        n = sum(full_counts)
        mixed = sum(real_counts) + total
        quotas = [max(Fraction(0), Fraction(mixed * n_c, n) - r) if ok else Fraction(0)
                  for n_c, r, ok in zip(full_counts, real_counts, eligible)]
        if sum(quotas) == 0:  # every eligible class is already above its share: follow the proportions
            quotas = [Fraction(n_c) if ok else Fraction(0) for n_c, ok in zip(full_counts, eligible)]
    return apportion(quotas, total)


def _water_level(real_counts: list[int], total: int) -> Fraction:
    """The level L with ``sum(max(0, L - r)) == total`` over ``real_counts``."""
    ordered = sorted(real_counts)
    filled = 0
    for k, r in enumerate(ordered, start=1):
        filled += r
        level = Fraction(total + filled, k)
        if k == len(ordered) or level <= ordered[k]:
            return level
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class SyntheticPlan:
    """Which variations a run uses.

    Attributes:
        counts: s_c per class (what the run asks for).
        pool: k_c per class — variations per source the pool holds for that class
            (``max(variations_per_image, ceil(s_c / r_c))``).
        requests: ``(row in the real set, variation index)`` per synthetic image, sorted.
    """

    counts: list[int]
    pool: list[int]
    requests: list[tuple[int, int]]


def plan_synthetic(
    real_labels: torch.Tensor, counts: Sequence[int], *, variations_per_image: int, seed: int
) -> SyntheticPlan:
    """Spread each class's s_c synthetic images over its real sources and pick their variations.

    Every source of class ``c`` gets ``floor(s_c / r_c)`` or one more variation (the run seed
    picks which sources get one more); each source's variation indices are a seeded random
    subset of ``range(k_c)``. The pool (what the cache may end up holding) is thus ``r_c * k_c``
    images per class, shared by every run, while each run uses ``s_c`` of them.
    """
    g = torch.Generator().manual_seed(int(hashlib.sha256(f"synthetic-plan:{seed}".encode()).hexdigest()[:15], 16))
    requests: list[tuple[int, int]] = []
    pool = []
    for c, s_c in enumerate(counts):
        rows = (real_labels == c).nonzero().flatten().tolist()  # ascending rows of class c
        if s_c and not rows:
            raise SynthmedError(f"class {c} has no real source image but {s_c} synthetic images were planned")
        k_c = max(variations_per_image, math.ceil(s_c / len(rows))) if s_c else variations_per_image
        pool.append(k_c)
        if not s_c:
            continue
        q, extra = divmod(s_c, len(rows))
        more = set(torch.randperm(len(rows), generator=g)[:extra].tolist())
        for j, row in enumerate(rows):
            used = q + (j in more)
            picks = torch.randperm(k_c, generator=g)[:used].tolist()
            requests.extend((row, v) for v in sorted(picks))
    return SyntheticPlan(list(counts), pool, sorted(requests))
