"""Toy image sets the inspection tests share: four separable classes, class c bright in quadrant c."""

from __future__ import annotations

import torch

from synthmed.data.base import ImageSet


def quadrant_set(n_per_class: int, seed: int, size: int) -> ImageSet:
    """``4 * n_per_class`` uint8 ``(1, size, size)`` images: class c is bright in quadrant c, plus noise."""
    g = torch.Generator().manual_seed(seed)
    h = size // 2
    images, labels = [], []
    for c in range(4):
        x = torch.randint(0, 40, (n_per_class, 1, size, size), generator=g)
        r, q = divmod(c, 2)
        x[:, :, r * h:(r + 1) * h, q * h:(q + 1) * h] += 180
        images.append(x.clamp(0, 255).to(torch.uint8))
        labels.append(torch.full((n_per_class,), c))
    return ImageSet(torch.cat(images), torch.cat(labels))
