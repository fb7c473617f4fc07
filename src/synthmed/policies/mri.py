"""The ``mri`` policy: MRI-physics augmentation from torchio, the domain's own augmentation.

A reviewer's baseline against synthetic images: instead of photographs' ops (AutoAugment) or generated
variations, each slice gets what scanners and heads do to real scans — a new pose, a slightly different
head shape, coil shading, another contrast, motion, ghosts and thermal noise — each op with its own
probability and strength. See docs/policies.md for what each op models and why its default is mild.

torchio transforms one subject at a time and draws from the global torch RNG. So each image gets its own
seed, drawn from the ``rng`` of :meth:`MriAugmentation.augment`, and goes through torchio's transforms under
that seed in a forked global RNG: the result depends on ``rng`` alone, an image's output on its seed alone
(not on its batch-mates), and the caller's global RNG is left as it was. (torchio 1.2 draws from torch only,
never from numpy's or Python's RNG; the policy's tests check the determinism this relies on.)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from synthmed.hookspecs import hookimpl
from synthmed.options import coerce_value
from synthmed.policies.base import AugmentationPolicy

#: Distances (shifts, displacements) are given in pixels of a slice this many pixels wide; a smaller or larger
#: slice is scaled to the same field of view, so an option means the same anatomy at every ``image_size``.
REFERENCE_SIDE = 128

Op = Callable[[Any], Any]  # a torchio.ScalarImage (1, H, W, 1) in, one out (possibly the same object)


class MriAugmentation(AugmentationPolicy):
    """``--policy mri``: torchio's MRI augmentations, each with a probability, per image.

    In order (anatomy first, then the acquisition): affine, elastic, bias field, gamma, motion, ghosting,
    noise. Each op fires with its ``*_p``; its magnitudes bound a uniform draw (``x`` draws from ``±x``).
    An op with probability 0 is left out. Images work as floats in ``[0, 1]``; the result is clipped to
    ``[0, 255]`` and rounded back to uint8. Pixels moved in from outside are black.

    Args:
        affine_p: probability of an in-plane rotation, zoom and shift (``tio.RandomAffine``).
        affine_degrees: largest rotation, in degrees, about the axis normal to the slice.
        affine_scale: largest relative zoom in or out (the same along both in-plane axes).
        affine_translation: largest shift along each in-plane axis, in pixels of a 128-px slice.
        elastic_p: probability of a smooth local deformation (``tio.RandomElasticDeformation``).
        elastic_displacement: largest in-plane displacement of its control points, in pixels of a 128-px slice.
        bias_field_p: probability of a smooth multiplicative shading (``tio.RandomBiasField``, order 3).
        bias_field_coefficients: largest magnitude of the shading polynomial's coefficients (log scale).
        gamma_p: probability of a contrast change ``x ** gamma`` (``tio.RandomGamma``).
        gamma_log: largest ``|log gamma|``.
        motion_p: probability of a k-space motion artifact (``tio.Motion``, two movements, in-plane).
        motion_degrees: largest in-plane rotation of a movement, in degrees.
        motion_translation: largest in-plane shift of a movement, in pixels of a 128-px slice.
        ghosting_p: probability of ghosts along an in-plane axis (``tio.RandomGhosting``).
        ghosting_intensity: largest strength of the ghosts (0 none, 1 the strongest torchio makes).
        noise_p: probability of Gaussian noise (``tio.RandomNoise``).
        noise_std: largest standard deviation of the noise, on the ``[0, 1]`` intensity scale.
    """

    name = "mri"

    def __init__(
        self,
        affine_p: float = 0.5,
        affine_degrees: float = 5.0,
        affine_scale: float = 0.05,
        affine_translation: float = 4.0,
        elastic_p: float = 0.25,
        elastic_displacement: float = 3.0,
        bias_field_p: float = 0.3,
        bias_field_coefficients: float = 0.1,
        gamma_p: float = 0.3,
        gamma_log: float = 0.2,
        motion_p: float = 0.1,
        motion_degrees: float = 2.0,
        motion_translation: float = 2.0,
        ghosting_p: float = 0.1,
        ghosting_intensity: float = 0.4,
        noise_p: float = 0.25,
        noise_std: float = 0.02,
    ):
        def number(key: str, value: object, high: float) -> float:  # options arrive as strings
            return coerce_value(f"policy {self.name!r}", key, value, float, low=0.0, high=high)

        self.options = {  # every option, coerced and range-checked, by name
            "affine_p": number("affine_p", affine_p, 1.0),
            "affine_degrees": number("affine_degrees", affine_degrees, 45.0),
            "affine_scale": number("affine_scale", affine_scale, 0.5),
            "affine_translation": number("affine_translation", affine_translation, 32.0),
            "elastic_p": number("elastic_p", elastic_p, 1.0),
            # the control points of a 128-px slice lie 32 px apart: torchio warns of folding beyond half that
            "elastic_displacement": number("elastic_displacement", elastic_displacement, 15.0),
            "bias_field_p": number("bias_field_p", bias_field_p, 1.0),
            "bias_field_coefficients": number("bias_field_coefficients", bias_field_coefficients, 1.0),
            "gamma_p": number("gamma_p", gamma_p, 1.0),
            "gamma_log": number("gamma_log", gamma_log, 1.0),
            "motion_p": number("motion_p", motion_p, 1.0),
            "motion_degrees": number("motion_degrees", motion_degrees, 30.0),
            "motion_translation": number("motion_translation", motion_translation, 32.0),
            "ghosting_p": number("ghosting_p", ghosting_p, 1.0),
            "ghosting_intensity": number("ghosting_intensity", ghosting_intensity, 1.0),
            "noise_p": number("noise_p", noise_p, 1.0),
            "noise_std": number("noise_std", noise_std, 0.5),
        }
        self.ops = self.build(**self.options)

    @staticmethod
    def build(**o: float) -> list[Op]:
        """The torchio transforms, in order, for the ops whose probability is above 0."""
        import torchio as tio  # ~0.5 s (SimpleITK, nibabel): every plugin-manager build imports this module

        d, s, t = o["affine_degrees"], o["affine_scale"], o["affine_translation"]
        e = o["elastic_displacement"]
        ops: list[tuple[float, Callable[[float], Op]]] = [
            # z is the slice's own axis (depth 1): rotate about it, zoom and shift within the plane only
            (o["affine_p"], lambda p: tio.RandomAffine(
                scales=(1 - s, 1 + s), degrees=(0, 0, 0, 0, -d, d), translation=(-t, t, -t, t, 0, 0),
                isotropic=True, default_pad_value=0.0, p=p, copy=False)),
            (o["elastic_p"], lambda p: tio.RandomElasticDeformation(
                max_displacement=(e, e, 0), p=p, copy=False)),
            (o["bias_field_p"], lambda p: tio.RandomBiasField(
                coefficients=o["bias_field_coefficients"], order=3, p=p, copy=False)),
            (o["gamma_p"], lambda p: tio.RandomGamma(log_gamma=o["gamma_log"], p=p, copy=False)),
            (o["motion_p"], lambda p: InPlaneMotion(
                tio, p, o["motion_degrees"], o["motion_translation"])),
            (o["ghosting_p"], lambda p: tio.RandomGhosting(
                axes=(0, 1), intensity=(0, o["ghosting_intensity"]), p=p, copy=False)),
            (o["noise_p"], lambda p: tio.RandomNoise(mean=0, std=(0, o["noise_std"]), p=p, copy=False)),
        ]
        return [make(p) for p, make in ops if p > 0]

    def augment(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        if images.shape[0] == 0:
            return images
        seeds = torch.randint(2**63 - 1, (images.shape[0],), generator=rng, device=rng.device).tolist()  # one per image
        out = [self.augment_one(image, seed) for image, seed in zip(images.cpu(), seeds)]  # torchio works on the CPU
        return torch.stack(out).to(images.device)  # (B, 1, H, W) uint8

    def augment_one(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        """One image, ``(1, H, W)`` uint8, through the ops with every draw from ``seed``; same shape back."""
        import torchio as tio  # imported by build() already

        x = image.detach().to("cpu", torch.float32) / 255  # (1, H, W) in [0, 1]
        spacing = REFERENCE_SIDE / max(x.shape[-2:])  # mm per pixel: distances are pixels of a 128-px slice
        scan = tio.ScalarImage(tensor=x.unsqueeze(-1), affine=np.diag([spacing, spacing, spacing, 1.0]))  # (1, H, W, 1)
        with torch.random.fork_rng(devices=_initialized_cuda_devices()):
            torch.default_generator.manual_seed(seed)  # the CPU generator, the one torchio draws from
            for op in self.ops:
                scan = op(scan)
        out = scan.data[..., 0].float().clamp(0, 1)  # (1, H, W)
        return (out * 255).round().to(torch.uint8).to(image.device)


def _initialized_cuda_devices() -> list[int]:
    """The CUDA devices whose RNG state to keep: torchio's noise calls ``torch.manual_seed``, which reseeds them all."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []


class InPlaneMotion:
    """torchio's k-space motion artifact (``tio.Motion``, after Shaw et al. 2019) for one slice.

    torchio fills k-space segment by segment along the image's last axis, which a ``(1, H, W, 1)`` slice has
    of size one: its ``RandomMotion`` then only shifts the slice (torchio issue #81). So the slice goes
    through laid out with a random in-plane axis last, as the phase-encoding axis, and the head moves within
    the plane: each of the movements rotates about the slice's normal and shifts along the two in-plane axes.
    Draws, like torchio's, come from the global torch RNG.

    Args:
        tio: the torchio module.
        p: probability of the artifact.
        degrees: largest rotation of a movement, in degrees.
        translation: largest shift of a movement, in mm.
        movements: how many movements (torchio's ``num_transforms``).
    """

    def __init__(self, tio: Any, p: float, degrees: float, translation: float, movements: int = 2):
        self.tio, self.p, self.degrees, self.translation, self.movements = tio, p, degrees, translation, movements

    def __call__(self, scan: Any) -> Any:
        if torch.rand(1).item() > self.p:  # torchio's own test
            return scan
        n = self.movements
        step = 1 / (n + 1)  # when the movements happen, as torchio spaces them
        times = torch.arange(1, n + 1) * step + torch.empty(n).uniform_(-0.3 * step, 0.3 * step)
        degrees, translation = torch.zeros(n, 3), torch.zeros(n, 3)
        degrees[:, 1].uniform_(-self.degrees, self.degrees)  # about axis 1, the slice's normal in this layout
        translation[:, 0].uniform_(-self.translation, self.translation)
        translation[:, 2].uniform_(-self.translation, self.translation)
        along_h = bool(torch.randint(2, (1,)))  # the phase-encoding axis: H or W
        data = scan.data  # (1, H, W, 1)
        laid = data.permute(0, 2, 3, 1) if along_h else data.permute(0, 1, 3, 2)  # (1, W, 1, H) or (1, H, 1, W)
        moved = self.tio.Motion(
            degrees=degrees.double().numpy(), translation=translation.double().numpy(),
            times=times.double().numpy(), image_interpolation="linear",
        )(self.tio.ScalarImage(tensor=laid.contiguous(), affine=scan.affine)).data
        back = moved.permute(0, 3, 1, 2) if along_h else moved.permute(0, 1, 3, 2)  # (1, H, W, 1)
        return self.tio.ScalarImage(tensor=back.contiguous(), affine=scan.affine)


@hookimpl
def register_policies() -> list[type[AugmentationPolicy]]:
    return [MriAugmentation]
