"""``pca``: per-class probabilistic PCA — the cheap learned baseline a diffusion model must beat.

Fitted (``learns = True``) on the run's sampled real training images only, one model per class
(Tipping & Bishop 1999): the class mean ``mu``, the leading ``k`` principal directions ``V``
(``k = min(components, n_class - 1)``), their variances ``lam`` and the isotropic residual
variance ``sigma2`` (mean of the discarded eigenvalues). One SVD per class: seconds on a CPU.

* ``mode=sample``: ``x = mu + V^T z + sqrt(sigma2) * eps`` with ``z ~ N(0, diag(lam))``.
* ``mode=variation`` (default): the source's coefficients ``z_src = V (x - mu)`` move toward a
  fresh draw, ``z = sqrt(1 - strength) * z_src + sqrt(strength) * z_new`` (variance-preserving),
  and a share ``keep_residual`` of the source's residual ``x - mu - V^T z_src`` (the detail PCA
  cannot express) is added back: ``x' = mu + V^T z + keep_residual * r``.

Images are modelled at the size they were fitted at; a source of another size is resized there
and back. Each item's randomness comes from its own generator seeded by (source bytes, variation,
seed) and each item is computed alone, so the output never depends on the rest of the batch.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from synthmed.errors import SynthmedError
from synthmed.generators.base import Generator, coerce_option, item_seed
from synthmed.hookspecs import hookimpl


class PcaGenerator(Generator):
    """Per-class probabilistic PCA over pixels.

    Args:
        mode: ``variation`` (perturb a source within its class) or ``sample`` (new images).
        components: principal components per class (capped at the class's images - 1).
        strength: how far a variation moves toward a fresh draw (0 = the source's reconstruction).
        keep_residual: share of the source's residual kept in a variation (0 = smooth PCA image).
    """

    name = "pca"
    learns = True
    deterministic = True
    version = "1"
    batch_size = 64

    def __init__(self, mode: Any = "variation", components: Any = 50, strength: Any = 0.5, keep_residual: Any = 0.5):
        self.mode = coerce_option(self.name, "mode", mode, str, choices=("variation", "sample"))
        self.components = coerce_option(self.name, "components", components, int, low=1, high=4096)
        self.strength = coerce_option(self.name, "strength", strength, float, low=0.0, high=1.0)
        self.keep_residual = coerce_option(self.name, "keep_residual", keep_residual, float, low=0.0, high=1.0)
        self._models: dict[int, dict[str, Any]] = {}  # label -> {mean, basis, var, sigma2}; -1 = all classes
        self._size: tuple[int, int] | None = None

    def output_params(self) -> dict[str, Any]:
        return {"mode": self.mode, "components": self.components, "strength": self.strength,
                "keep_residual": self.keep_residual, "version": self.version}

    def fit_params(self) -> dict[str, Any]:
        return {"components": self.components}  # mode, strength and keep_residual share one fit

    # --- fit ------------------------------------------------------------------------------------
    def fit(self, images: torch.Tensor, labels: torch.Tensor, *, seed: int, progress: bool,
            log: Callable[[dict[str, float], int], None]) -> dict[str, Any]:
        n, _, h, w = images.shape
        self._size = (h, w)
        x = images.reshape(n, -1).double() / 255.0  # (N, D) in [0, 1]
        self._models = {-1: _ppca(x, self.components)}
        log({"generator_fit_loss": self._models[-1]["sigma2"]}, 0)
        for step, label in enumerate(sorted(set(labels.tolist())), start=1):
            model = _ppca(x[labels == label], self.components)
            self._models[int(label)] = model
            log({"generator_fit_loss": model["sigma2"]}, step)  # residual variance per pixel of that class
        return {"steps": len(self._models), "final_loss": self._models[-1]["sigma2"]}

    def state_dict(self) -> dict[str, Any]:
        return {"size": self._size, "models": self._models}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._size = tuple(state["size"])  # type: ignore[assignment]
        self._models = state["models"]

    # --- generate -------------------------------------------------------------------------------
    def generate(self, images: torch.Tensor, labels: torch.Tensor, *, variation: int, seed: int) -> torch.Tensor:
        out = [self._one(img, int(lab), variation, seed) for img, lab in zip(images, labels)]
        return torch.stack(out) if out else images.clone()

    def iter_generate(self, images: torch.Tensor, labels: torch.Tensor, *, variations: Sequence[int],
                      seeds: Sequence[int]) -> Iterator[tuple[int, torch.Tensor | None]]:
        for i, (img, lab, v, s) in enumerate(zip(images, labels, variations, seeds)):
            yield i, self._one(img, int(lab), int(v), int(s))

    def _one(self, image: torch.Tensor, label: int, variation: int, seed: int) -> torch.Tensor:
        """One ``(1, H, W)`` uint8 variation, computed alone (batch-independent)."""
        if self._size is None:
            raise SynthmedError("generator 'pca' was not fitted — the synthetic policy fits it on the run's sample")
        model = self._models.get(label, self._models[-1])
        gen = torch.Generator().manual_seed(item_seed(image, variation, seed, "pca"))
        h, w = image.shape[-2:]
        x = image.double().unsqueeze(0) / 255.0  # (1, 1, h, w)
        if (h, w) != self._size:
            x = F.interpolate(x, size=self._size, mode="bilinear", align_corners=False)
        x = x.flatten()  # (D,)
        mean, basis, var = model["mean"], model["basis"].double(), model["var"]
        z_new = torch.randn(len(var), generator=gen, dtype=torch.float64) * var.sqrt()  # (k,)
        if self.mode == "sample":
            eps = torch.randn(x.shape, generator=gen, dtype=torch.float64)
            out = mean + basis.T @ z_new + eps * model["sigma2"] ** 0.5
        else:
            z_src = basis @ (x - mean)  # (k,)
            residual = x - mean - basis.T @ z_src
            z = (1 - self.strength) ** 0.5 * z_src + self.strength**0.5 * z_new
            out = mean + basis.T @ z + self.keep_residual * residual
        out = out.view(1, 1, *self._size)
        if (h, w) != self._size:
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return (out[0].clamp(0, 1) * 255).round().to(torch.uint8)


def _ppca(x: torch.Tensor, components: int) -> dict[str, Any]:
    """Probabilistic PCA of ``(n, D)`` float64 rows: mean, ``(k, D)`` basis, ``(k,)`` variances, sigma2."""
    n, d = x.shape
    mean = x.mean(0)
    k = max(0, min(components, n - 1, d))
    if n < 2:
        return {"mean": mean, "basis": torch.zeros(0, d, dtype=torch.float32), "var": torch.zeros(0, dtype=torch.float64),
                "sigma2": 0.0}
    xc = x - mean  # (n, D)
    gram_eig, u = torch.linalg.eigh(xc @ xc.T)  # (n,), (n, n): n x n, far cheaper than an SVD when n << D
    gram_eig, u = gram_eig.flip(0).clamp(min=0), u.flip(1)  # descending
    vh = (u[:, :k].T @ xc) / gram_eig[:k].sqrt().clamp(min=1e-12).unsqueeze(1)  # (k, D) unit rows
    eig = gram_eig / (n - 1)
    sigma2 = float((eig.sum() - eig[:k].sum()) / max(1, d - k))
    var = (eig[:k] - sigma2).clamp(min=0)  # PPCA: latent variance above the noise floor
    return {"mean": mean, "basis": vh[:k].float(), "var": var, "sigma2": sigma2}



@hookimpl
def register_generators() -> list[type[Generator]]:
    return [PcaGenerator]
