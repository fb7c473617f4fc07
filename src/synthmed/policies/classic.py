"""Classic augmentation policies (Chapter 6.1 and 6.2): none, basic, AutoAugment and kin.

All work on uint8 batches ``(B, 1, H, W)`` and draw every random number from the ``rng`` they
are given, so the same generator state gives the same images. ``basic`` is one batched
``affine_grid``/``grid_sample`` call; torchvision's AutoAugment family is applied image by image
(each image gets its own sub-policy, as in the thesis) under a torch RNG seeded from ``rng``.
See docs/policies.md for why each ``basic`` op suits brain MRI.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from synthmed.hookspecs import hookimpl
from synthmed.policies.base import AugmentationPolicy

if TYPE_CHECKING:
    import torch


class NoAugmentation(AugmentationPolicy):
    """``--policy none``: train on the images as they are."""

    name = "none"

    def augment(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return images


class BasicAugmentation(AugmentationPolicy):
    """``--policy basic``: mild, per-image random geometry and intensity changes.

    Each image gets, independently: a horizontal flip with probability ``flip_p``, a rotation
    in ``±degrees``, a shift in ``±translate`` of the side along each axis, a zoom in
    ``1 ± scale``, then brightness and contrast factors in ``1 ± brightness`` / ``1 ± contrast``.
    Pixels moved in from outside the image are black (the MRI background). No vertical flips,
    crops or colour changes.

    Args:
        flip_p: probability of a left-right flip.
        degrees: largest rotation, in degrees.
        translate: largest shift, as a fraction of the image side.
        scale: largest relative zoom in or out.
        brightness: largest relative brightness change.
        contrast: largest relative contrast change (around each image's mean).
    """

    name = "basic"

    def __init__(
        self,
        flip_p: float = 0.5,
        degrees: float = 10.0,
        translate: float = 0.05,
        scale: float = 0.05,
        brightness: float = 0.1,
        contrast: float = 0.1,
    ):
        from synthmed.options import coerce_value

        def number(key: str, value: object, high: float) -> float:  # options arrive as strings
            return coerce_value(f"policy {self.name!r}", key, value, float, low=0.0, high=high)

        self.flip_p, self.degrees = number("flip_p", flip_p, 1.0), number("degrees", degrees, 180.0)
        self.translate, self.scale = number("translate", translate, 0.5), number("scale", scale, 0.9)
        self.brightness, self.contrast = number("brightness", brightness, 1.0), number("contrast", contrast, 1.0)

    def augment(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        B = images.shape[0]
        if B == 0:
            return images

        def uniform(amount: float) -> torch.Tensor:  # (B,) in [-amount, amount]
            u = torch.rand(B, generator=rng, device=rng.device, dtype=torch.float32)
            return ((2 * u - 1) * amount).to(images.device)

        flip = torch.rand(B, generator=rng, device=rng.device).to(images.device) < self.flip_p
        angle = uniform(math.radians(self.degrees))
        zoom = 1 + uniform(self.scale)
        shift = torch.stack([uniform(2 * self.translate), uniform(2 * self.translate)], dim=1)  # (B, 2), [-1, 1] coords
        bright, contrast = 1 + uniform(self.brightness), 1 + uniform(self.contrast)

        # Per-image affine map from output to input coordinates: rotate, zoom, shift, flip x.
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        sign = 1 - 2 * flip.float()  # -1 flips left-right
        theta = torch.stack([
            torch.stack([cos * sign, -sin, shift[:, 0]], dim=1),
            torch.stack([sin * sign, cos, shift[:, 1]], dim=1),
        ], dim=1)  # (B, 2, 3)

        x = images.float() / 255  # (B, 1, H, W) in [0, 1]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = x * bright.view(B, 1, 1, 1)  # brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast.view(B, 1, 1, 1) + mean  # contrast around the image mean
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)


class TorchvisionPolicy(AugmentationPolicy):
    """A torchvision v2 random transform applied to each image, seeded from ``rng``.

    torchvision draws from the global torch RNG; each batch forks it, seeds it from ``rng`` and
    restores it afterwards, so results depend on ``rng`` alone and the caller's RNG is untouched.
    """

    fill: ClassVar[int] = 0  # black (the MRI background) for pixels rotated or shifted in

    def __init__(self) -> None:
        self.transform = self.build()

    def build(self) -> Any:
        """Return the torchvision transform (called once per policy)."""
        raise NotImplementedError

    def augment(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        import torch

        if images.shape[0] == 0:
            return images
        seed = int(torch.randint(2**62, (1,), generator=rng, device=rng.device))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([self.transform(image) for image in images])  # (B, 1, H, W) uint8


class AutoAugmentPolicy(TorchvisionPolicy):
    """``--policy autoaugment``: torchvision's AutoAugment with the ImageNet policy (the thesis)."""

    name = "autoaugment"

    def build(self) -> Any:
        from torchvision.transforms import v2

        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, fill=self.fill)


class RandAugmentPolicy(TorchvisionPolicy):
    """``--policy randaugment``: torchvision's RandAugment (2 ops, magnitude 9)."""

    name = "randaugment"

    def build(self) -> Any:
        from torchvision.transforms import v2

        return v2.RandAugment(fill=self.fill)


class TrivialAugmentPolicy(TorchvisionPolicy):
    """``--policy trivialaugment``: torchvision's TrivialAugmentWide (one op, random strength)."""

    name = "trivialaugment"

    def build(self) -> Any:
        from torchvision.transforms import v2

        return v2.TrivialAugmentWide(fill=self.fill)


@hookimpl
def register_policies() -> list[type[AugmentationPolicy]]:
    return [NoAugmentation, BasicAugmentation, AutoAugmentPolicy, RandAugmentPolicy, TrivialAugmentPolicy]
