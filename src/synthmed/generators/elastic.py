"""``elastic``: the default generator — a local, free, non-learned baseline.

Each variation is a random elastic deformation (a smooth displacement field, bicubically
interpolated from Gaussian noise on a coarse grid of control points, as in torchio's
``RandomElasticDeformation``) followed by an intensity jitter (a random gamma and gain; black
background stays black). Nothing leaves the machine, nothing is learned, and the output is a
pure function of (source image, variation, seed), so the synthetic policy runs offline, in
tests, and reproducibly. It answers "does *any* plausible variation of the sampled images help?"
— the baseline a learned generator (DALL-E 2 in the thesis) has to beat.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from synthmed.generators.base import Generator, coerce_option, item_seed
from synthmed.hookspecs import hookimpl


class ElasticGenerator(Generator):
    """Random elastic deformation + gamma/gain jitter, vectorised over a batch on the CPU.

    Args:
        alpha: displacement scale as a fraction of the image side (std of the control-point
            displacements; the default 0.015 moves tissue by ~2 px on a 128 px image).
        sigma: control-point spacing as a fraction of the side (larger = smoother warps).
        gamma: the log-gamma is drawn uniformly from ``[-gamma, gamma]``.
        gain: the brightness gain is drawn uniformly from ``[1 - gain, 1 + gain]``.
    """

    name = "elastic"
    deterministic = True
    batch_size = 64

    def __init__(self, alpha: Any = 0.015, sigma: Any = 0.25, gamma: Any = 0.15, gain: Any = 0.1):
        self.alpha = coerce_option(self.name, "alpha", alpha, float, low=0.0, high=0.25)
        self.sigma = coerce_option(self.name, "sigma", sigma, float, low=0.02, high=1.0)
        self.gamma = coerce_option(self.name, "gamma", gamma, float, low=0.0, high=1.0)
        self.gain = coerce_option(self.name, "gain", gain, float, low=0.0, high=0.9)

    def output_params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "sigma": self.sigma, "gamma": self.gamma, "gain": self.gain, "version": 1}

    def generate(self, images: torch.Tensor, labels: torch.Tensor, *, variation: int, seed: int) -> torch.Tensor:
        return self._vary(images, [item_seed(img, variation, seed) for img in images])

    def iter_generate(
        self, images: torch.Tensor, labels: torch.Tensor, *, variations: Sequence[int], seeds: Sequence[int]
    ) -> Iterator[tuple[int, torch.Tensor | None]]:
        out = self._vary(images, [item_seed(img, v, s) for img, v, s in zip(images, variations, seeds)])
        yield from enumerate(out)

    def _vary(self, images: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        b, _, h, w = images.shape
        g = max(2, round(1 / self.sigma) + 1)  # control points per side
        coarse, jitter = [], []
        for s in seeds:  # per-image draws: the output never depends on the rest of the batch
            gen = torch.Generator().manual_seed(s)
            coarse.append(torch.randn(2, g, g, generator=gen))
            jitter.append(torch.rand(2, generator=gen))
        field = torch.stack(coarse) * (2 * self.alpha)  # (B, 2, g, g) in grid units ([-1, 1] = one side)
        field = F.interpolate(field, size=(h, w), mode="bicubic", align_corners=True)  # (B, 2, H, W)
        field = field.clamp(-6 * self.alpha, 6 * self.alpha)
        ys = torch.linspace(-1, 1, h)
        xs = torch.linspace(-1, 1, w)
        base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
        grid = base.unsqueeze(0) + field.permute(0, 2, 3, 1)  # (B, H, W, 2)
        x = images.float() / 255.0  # (B, 1, H, W) in [0, 1]
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        u = torch.stack(jitter)  # (B, 2) uniform in [0, 1)
        log_gamma = (u[:, 0] * 2 - 1) * self.gamma
        gain = 1 + (u[:, 1] * 2 - 1) * self.gain
        x = x.clamp(0, 1) ** log_gamma.exp().view(b, 1, 1, 1) * gain.view(b, 1, 1, 1)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)



@hookimpl
def register_generators() -> list[type[Generator]]:
    return [ElasticGenerator]
