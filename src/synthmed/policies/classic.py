"""Classic augmentation policies (Chapter 6.1 and 6.2): none, basic, AutoAugment and kin.

All work on uint8 batches ``(B, 1, H, W)`` and draw every random number from the ``rng`` they
are given, so the same generator state gives the same images. ``basic`` is one batched
``affine_grid``/``grid_sample`` call; torchvision's AutoAugment family gives each image its own
draw (its own sub-policy, as in the thesis) and applies torchvision's ops to groups of images.
Both take the batches of k simulations trained at once in one go (``augment_many``).
See docs/policies.md for why each ``basic`` op suits brain MRI.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from synthmed.hookspecs import hookimpl
from synthmed.options import coerce_value
from synthmed.policies.base import AugmentationPolicy


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
        def number(key: str, value: object, high: float) -> float:  # options arrive as strings
            return coerce_value(f"policy {self.name!r}", key, value, float, low=0.0, high=high)

        self.flip_p, self.degrees = number("flip_p", flip_p, 1.0), number("degrees", degrees, 180.0)
        self.translate, self.scale = number("translate", translate, 0.5), number("scale", scale, 0.9)
        self.brightness, self.contrast = number("brightness", brightness, 1.0), number("contrast", contrast, 1.0)

    def augment(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return self.augment_many([images], [rng])[0]

    def augment_many(self, batches: list[torch.Tensor], rngs: list[torch.Generator]) -> list[torch.Tensor]:
        """Each batch's draws from its own generator, then one resample over all their images."""
        draws = [self.draw(images.shape[0], rng) for images, rng in zip(batches, rngs) if images.shape[0]]
        if not draws:
            return list(batches)
        images = torch.cat([b for b in batches if b.shape[0]])
        params = {k: torch.cat([d[k] for d in draws]).to(images.device) for k in draws[0]}
        out = self.apply(images, **params)
        return list(out.split([b.shape[0] for b in batches]))

    def draw(self, n: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        """``n`` images' random draws from ``rng``, each ``(n,)``, on ``rng``'s device."""
        def uniform(amount: float) -> torch.Tensor:  # (n,) in [-amount, amount]
            u = torch.rand(n, generator=rng, device=rng.device, dtype=torch.float32)
            return (2 * u - 1) * amount

        flip = torch.rand(n, generator=rng, device=rng.device) < self.flip_p
        angle = uniform(math.radians(self.degrees))
        zoom = 1 + uniform(self.scale)
        shift_x, shift_y = uniform(2 * self.translate), uniform(2 * self.translate)  # [-1, 1] coordinates
        bright, contrast = 1 + uniform(self.brightness), 1 + uniform(self.contrast)
        return {"flip": flip, "angle": angle, "zoom": zoom, "shift_x": shift_x, "shift_y": shift_y,
                "bright": bright, "contrast": contrast}

    @staticmethod
    def apply(images: torch.Tensor, flip: torch.Tensor, angle: torch.Tensor, zoom: torch.Tensor,
              shift_x: torch.Tensor, shift_y: torch.Tensor, bright: torch.Tensor,
              contrast: torch.Tensor) -> torch.Tensor:
        """The drawn changes, image by image in one batched resample: ``(B, 1, H, W)`` uint8 in and out."""
        B = images.shape[0]
        # Per-image affine map from output to input coordinates: rotate, zoom, shift, flip x.
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        sign = 1 - 2 * flip.float()  # -1 flips left-right
        theta = torch.stack([
            torch.stack([cos * sign, -sin, shift_x], dim=1),
            torch.stack([sin * sign, cos, shift_y], dim=1),
        ], dim=1)  # (B, 2, 3)

        x = images.float() / 255  # (B, 1, H, W) in [0, 1]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = x * bright.view(B, 1, 1, 1)  # brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast.view(B, 1, 1, 1) + mean  # contrast around the image mean
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)


Step = tuple[str, float]  # one op of torchvision's augmentation space and its magnitude


class TorchvisionPolicy(AugmentationPolicy):
    """A torchvision v2 AutoAugment-family transform, one draw per image, applied in batches.

    torchvision's transform draws once per call from the global torch RNG, so on a batch it would
    give every image the same ops; synthmed gives each image its own draw. Each batch draws one seed
    from ``rng``; a generator seeded with it then makes each image's draws in turn, exactly as the
    transform's ``forward`` makes them (:meth:`draw`), which gives each image a list of steps (op,
    magnitude). Images whose i-th steps are the same go through torchvision's own op together, one
    call per distinct step, on the images' device. The images are those of calling the transform
    image by image with the global RNG seeded from ``rng`` (the way synthmed applied these policies
    before; ``tests/test_policies.py`` checks it pixel for pixel), at a fraction of the calls.

    The results depend on ``rng`` alone; the caller's global RNG state is not touched.
    """

    fill: ClassVar[int] = 0  # black (the MRI background) for pixels rotated or shifted in

    def __init__(self) -> None:
        self.transform = self.build()
        self._magnitudes: dict[tuple[str, int, int], list[float] | None] = {}

    def build(self) -> Any:
        """Return the torchvision transform (called once per policy)."""
        raise NotImplementedError

    def draw(self, g: torch.Generator, height: int, width: int) -> list[Step]:
        """One image's steps, drawn from ``g`` in the order the transform's ``forward`` draws them."""
        raise NotImplementedError

    def magnitudes(self, op: str, bins: int, height: int, width: int) -> list[float] | None:
        """The op's magnitude per bin (as the transform computes them), or ``None`` for ops without one."""
        key = (op, bins, height, width)
        if key not in self._magnitudes:
            values = self.transform._AUGMENTATION_SPACE[op][0](bins, height, width)
            self._magnitudes[key] = None if values is None else [float(v) for v in values]
        return self._magnitudes[key]

    def signed(self, op: str, magnitude: float, g: torch.Generator) -> float:
        """The magnitude, negated on a coin flip for signed ops (drawn only for those, as torchvision does)."""
        if self.transform._AUGMENTATION_SPACE[op][1] and torch.rand((), generator=g) <= 0.5:
            return -magnitude
        return magnitude

    def augment(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return self.augment_many([images], [rng])[0]

    def augment_many(self, batches: list[torch.Tensor], rngs: list[torch.Generator]) -> list[torch.Tensor]:
        plans: list[list[Step]] = []
        for images, rng in zip(batches, rngs):
            if images.shape[0] == 0:
                continue  # no seed drawn for an empty batch
            seed = int(torch.randint(2**62, (1,), generator=rng, device=rng.device))
            g = torch.Generator().manual_seed(seed)
            height, width = images.shape[-2:]
            plans.extend(self.draw(g, height, width) for _ in range(images.shape[0]))
        if not plans:
            return list(batches)
        x = torch.cat(list(batches)) if len(batches) > 1 else batches[0].clone()  # (sum B, 1, H, W), ours to change
        for i in range(max(len(plan) for plan in plans)):
            groups: dict[Step, list[int]] = {}
            for row, plan in enumerate(plans):
                if i < len(plan) and plan[i][0] != "Identity":
                    groups.setdefault(plan[i], []).append(row)
            for (op, magnitude), rows in groups.items():
                index = torch.tensor(rows, device=x.device)
                x.index_copy_(0, index, self.apply(x.index_select(0, index), op, magnitude))
        return list(x.split([b.shape[0] for b in batches]))

    def apply(self, images: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
        """torchvision's op on a batch (each of its ops treats the images of a batch independently)."""
        t = self.transform
        return t._apply_image_or_video_transform(images, op, magnitude, interpolation=t.interpolation, fill=t._fill)


class AutoAugmentPolicy(TorchvisionPolicy):
    """``--policy autoaugment``: torchvision's AutoAugment with the ImageNet policy (the thesis)."""

    name = "autoaugment"

    def build(self) -> Any:
        from torchvision.transforms import v2  # ~3 s (loads torch._dynamo); only these policies need it

        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, fill=self.fill)

    def draw(self, g: torch.Generator, height: int, width: int) -> list[Step]:
        steps = []
        sub_policies = self.transform._policies
        for op, probability, bin_ in sub_policies[int(torch.randint(len(sub_policies), (), generator=g))]:
            if not torch.rand((), generator=g) <= probability:
                continue
            values = self.magnitudes(op, 10, height, width)
            steps.append((op, 0.0 if values is None else self.signed(op, values[bin_], g)))
        return steps


class RandAugmentPolicy(TorchvisionPolicy):
    """``--policy randaugment``: torchvision's RandAugment (2 ops, magnitude 9)."""

    name = "randaugment"

    def build(self) -> Any:
        from torchvision.transforms import v2  # ~3 s (loads torch._dynamo); only these policies need it

        return v2.RandAugment(fill=self.fill)

    def draw(self, g: torch.Generator, height: int, width: int) -> list[Step]:
        t, steps = self.transform, []
        ops = tuple(t._AUGMENTATION_SPACE)
        for _ in range(t.num_ops):
            op = ops[int(torch.randint(len(ops), (), generator=g))]
            values = self.magnitudes(op, t.num_magnitude_bins, height, width)
            steps.append((op, 0.0 if values is None else self.signed(op, values[t.magnitude], g)))
        return steps


class TrivialAugmentPolicy(TorchvisionPolicy):
    """``--policy trivialaugment``: torchvision's TrivialAugmentWide (one op, random strength)."""

    name = "trivialaugment"

    def build(self) -> Any:
        from torchvision.transforms import v2  # ~3 s (loads torch._dynamo); only these policies need it

        return v2.TrivialAugmentWide(fill=self.fill)

    def draw(self, g: torch.Generator, height: int, width: int) -> list[Step]:
        t = self.transform
        ops = tuple(t._AUGMENTATION_SPACE)
        op = ops[int(torch.randint(len(ops), (), generator=g))]
        values = self.magnitudes(op, t.num_magnitude_bins, height, width)
        if values is None:
            return [(op, 0.0)]
        return [(op, self.signed(op, values[int(torch.randint(t.num_magnitude_bins, (), generator=g))], g))]


@hookimpl
def register_policies() -> list[type[AugmentationPolicy]]:
    return [NoAugmentation, BasicAugmentation, AutoAugmentPolicy, RandAugmentPolicy, TrivialAugmentPolicy]
