"""``mirror-jitter``: a minimal synthmed generator plugin (the one the plugin tutorial builds).

Each variation mirrors the image left-right (brains are roughly symmetric), shifts it by a few
pixels and jitters its brightness. Local, free and deterministic: the output depends only on
(image, variation, seed).
"""

from __future__ import annotations

from typing import Any

import torch

import synthmed
from synthmed.generators import Generator, coerce_option, item_seed

__all__ = ["MirrorJitter", "register_generators"]


class MirrorJitter(Generator):
    """Mirror left-right, shift by up to ``shift`` pixels, scale brightness by ``1 ± gain``.

    Args:
        shift: largest shift in pixels, each axis.
        gain: largest relative brightness change.
    """

    name = "mirror-jitter"
    deterministic = True

    def __init__(self, shift: Any = 2, gain: Any = 0.1):
        self.shift = coerce_option(self.name, "shift", shift, int, low=0, high=16)
        self.gain = coerce_option(self.name, "gain", gain, float, low=0.0, high=0.5)

    def output_params(self) -> dict[str, Any]:
        return {"shift": self.shift, "gain": self.gain, "version": 1}

    def generate(self, images: torch.Tensor, labels: torch.Tensor, *, variation: int, seed: int) -> torch.Tensor:
        out = []
        for image in images:  # (1, H, W) uint8; one private random stream per image
            rng = torch.Generator().manual_seed(item_seed(image, variation, seed))
            dy, dx = torch.randint(-self.shift, self.shift + 1, (2,), generator=rng).tolist()
            gain = 1 + (torch.rand(1, generator=rng).item() * 2 - 1) * self.gain
            x = image.flip(-1).roll((dy, dx), dims=(-2, -1)).float() * gain  # (1, H, W)
            out.append(x.clamp(0, 255).round().to(torch.uint8))
        return torch.stack(out)  # (B, 1, H, W) uint8



@synthmed.hookimpl
def register_generators() -> list[type[Generator]]:
    return [MirrorJitter]
