"""``ldm``: a class-conditional latent diffusion model fitted on the run's own sample (MONAI).

Latent diffusion (Rombach et al. 2022; for brain MRI Pinaya et al. 2022) in two stages, both
fitted on exactly the run's sampled real training images (``learns = True``; see
:mod:`synthmed.generators.fitting`) and cached together under the run's fit key:

1. **The autoencoder** — ``monai.networks.nets.AutoencoderKL`` (no attention, a light first level:
   at full resolution the first level is what a step costs) compresses a ``(1, H, W)`` image into a
   ``(4, H/f, W/f)`` latent: ``f = 8`` at 128 px, fewer levels below so the latent stays 16 x 16
   (``f = 4`` at 64 px). Loss: L1 reconstruction + ``kl`` x KL. A seeded 5% of the sample is held back
   from this stage and its reconstruction error is logged during and after the fit.
2. **The latent UNet** — ``monai.networks.nets.DiffusionModelUNet`` with one class embedding per
   class, trained on MONAI's ``DDPMScheduler`` (epsilon, 1,000 steps, scaled-linear betas) on the
   sample's latents (encoded once, re-drawn from the encoder's posterior at every step, scaled to
   unit variance as in Rombach et al.), with EMA weights used for sampling.

Generation runs MONAI's ``DDIMScheduler`` (eta = 0) in latent space and decodes at the run's image
size — no upsampling from a smaller grid:

* ``mode=variation`` (default) — SDEdit in latent space: the source's latent is noised to
  ``strength`` and denoised with its own class (``strength x sample_steps`` UNet calls).
* ``mode=sample`` — new latents of a class from pure noise (all ``sample_steps``).

``keep_residual`` (1 in the ``cpu`` preset, 0 in ``gpu``) adds back that share of the source's own residual, ``source -
decode(encode(source))``: the fine detail a small autoencoder blurs away (as ``pca``'s option of the
same name does). At 1 a variation is the diffusion model's new coarse image plus the source's fine
detail; the fidelity–diversity curve shows what it does to label fidelity and distance to the source.

MONAI's ``LatentDiffusionInferer`` is not used: it takes no class labels and cannot start from a
partly noised source, and encoding every training batch again would make the encoder the cost of
every UNet step; the loop below does what it does with the class labels passed to the UNet.

Every item's noise comes from its own ``torch.Generator`` seeded by (source bytes, variation,
seed), the fit from ``seed``; on the CPU a fixed seed reproduces the fit and the images, and an
image never depends on its batch-mates. Presets and measured costs: docs/generators.md.
"""

from __future__ import annotations

import copy
import math
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from synthmed.errors import SynthmedError
from synthmed.generators._networks import NetworkGenerator
from synthmed.generators.base import Generator, coerce_option, item_seed
from synthmed.hookspecs import hookimpl

if TYPE_CHECKING:
    from synthmed.checkpoints import Checkpointer

PRESETS: dict[str, dict[str, Any]] = {
    # cpu: fit and 3,584 variations of a 30% sample at 128 px within 20 minutes on a 2-core CPU, and every
    # class past the fidelity gate at its own strength (docs/generators.md, "At 128 px").
    "cpu": {"ae_channels": (8, 16, 32, 64), "ae_steps": 400, "ae_batch": 16, "ae_lr": 1e-3,
            "unet_channels": (32, 64, 128), "attention": (False, False, True), "steps": 1000, "batch": 64,
            "lr": 1e-3, "sample_steps": 40, "strength": 0.25, "keep_residual": 1.0},
    "gpu": {"ae_channels": (32, 64, 128, 128), "ae_steps": 6000, "ae_batch": 32, "ae_lr": 5e-4,
            "unet_channels": (64, 128, 256), "attention": (False, True, True), "steps": 30000, "batch": 128,
            "lr": 2e-4, "sample_steps": 100, "strength": 0.5, "keep_residual": 0.0},
}
TRAIN_TIMESTEPS = 1000
LATENT_CHANNELS = 4
MIN_LATENT = 16  # latent side at least 16 px: fewer autoencoder levels (less compression) for small images
HELD_BACK = 0.05  # share of the sample held back from the autoencoder to measure its reconstruction
LOG_EVERY = 10


def _schedule() -> dict[str, Any]:
    """The noise schedule of Rombach et al.'s LDMs, as MONAI's tutorials use it."""
    return {"num_train_timesteps": TRAIN_TIMESTEPS, "schedule": "scaled_linear_beta",
            "beta_start": 0.0015, "beta_end": 0.0195}


class LdmGenerator(NetworkGenerator):
    """Class-conditional latent diffusion: MONAI AutoencoderKL + DiffusionModelUNet, DDPM training, DDIM sampling.

    Args:
        mode: ``variation`` (SDEdit of the source in latent space) or ``sample`` (from pure noise).
        preset: ``cpu`` or ``gpu`` (docs/generators.md).
        strength: SDEdit noise level in (0, 1]; 1 is as good as ``mode=sample``; default from the preset.
        sample_steps: DDIM steps of a full denoising; a variation runs ``strength`` of them.
        ae_steps: autoencoder training steps (batches); default from the preset.
        steps: latent UNet training steps (batches); default from the preset.
        kl: weight of the autoencoder's KL term.
        keep_residual: share of the source's reconstruction residual added back to a variation (0..1); default
            from the preset.
        ema: EMA decay of the UNet weights used for sampling (0 turns EMA off).
        device: ``auto`` (the run's ``device``), ``cpu``, ``cuda``, ``cuda:N``.
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on the CPU), ``bf16`` or ``fp32``.
    """

    name = "ldm"
    learns = True
    deterministic = True
    version = "1"
    batch_size = 64

    def __init__(self, mode: Any = "variation", preset: Any = "cpu", strength: Any = None, sample_steps: Any = None,
                 ae_steps: Any = None, steps: Any = None, kl: Any = 1e-6, keep_residual: Any = None, ema: Any = 0.999,
                 device: Any = "auto", precision: Any = "auto"):
        n = self.name
        self.mode = coerce_option(n, "mode", mode, str, choices=("variation", "sample"))
        self.preset = coerce_option(n, "preset", preset, str, choices=tuple(PRESETS))
        p = PRESETS[self.preset]
        pick = lambda value, key: p[key] if value is None or str(value).strip() == "" else value  # noqa: E731
        self.strength = coerce_option(n, "strength", pick(strength, "strength"), float, low=0.01, high=1.0)
        self.sample_steps = coerce_option(n, "sample_steps", pick(sample_steps, "sample_steps"), int, low=1, high=1000)
        self.ae_steps = coerce_option(n, "ae_steps", pick(ae_steps, "ae_steps"), int, low=1, high=10_000_000)
        self.steps = coerce_option(n, "steps", pick(steps, "steps"), int, low=1, high=10_000_000)
        self.kl = coerce_option(n, "kl", kl, float, low=0.0, high=1.0)
        self.keep_residual = coerce_option(n, "keep_residual", pick(keep_residual, "keep_residual"), float, low=0.0, high=1.0)
        self.ema = coerce_option(n, "ema", ema, float, low=0.0, high=0.99999)
        self.device = coerce_option(n, "device", device, str)
        self.precision = coerce_option(n, "precision", precision, str, choices=("auto", "bf16", "fp32"))
        self.classes: tuple[str, ...] = ()
        self.progress = True
        self._ae: Any = None
        self._unet: Any = None
        self._scale = 1.0
        self._size: tuple[int, int] | None = None
        self._num_classes = 0



    def fit_params(self) -> dict[str, Any]:
        p = PRESETS[self.preset]
        return {"preset": self.preset, "ae_channels": list(p["ae_channels"]), "ae_steps": self.ae_steps,
                "ae_batch": p["ae_batch"], "ae_lr": p["ae_lr"], "kl": self.kl,
                "unet_channels": list(p["unet_channels"]), "attention": list(p["attention"]), "steps": self.steps,
                "batch": p["batch"], "lr": p["lr"], "ema": self.ema, "precision": self.precision,
                "version": self.version}

    def output_params(self) -> dict[str, Any]:
        return {**self.fit_params(), "mode": self.mode, "strength": self.strength, "sample_steps": self.sample_steps,
                "keep_residual": self.keep_residual}

    # --- networks -------------------------------------------------------------------------------
    def _levels(self, side: int) -> int:
        """Autoencoder levels for an image side: downsampling 2^(levels-1), latent >= MIN_LATENT."""
        levels = len(PRESETS[self.preset]["ae_channels"])
        while levels > 1 and side // 2 ** (levels - 1) < MIN_LATENT:
            levels -= 1
        return levels

    def _build_ae(self, side: int) -> Any:
        from monai.networks.nets import AutoencoderKL

        channels = PRESETS[self.preset]["ae_channels"][: self._levels(side)]
        return AutoencoderKL(spatial_dims=2, in_channels=1, out_channels=1, channels=channels,
                             latent_channels=LATENT_CHANNELS, num_res_blocks=1,
                             attention_levels=(False,) * len(channels), norm_num_groups=min(8, channels[0]),
                             with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)

    def _build_unet(self, num_classes: int) -> Any:
        from monai.networks.nets import DiffusionModelUNet

        p = PRESETS[self.preset]
        return DiffusionModelUNet(spatial_dims=2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
                                  channels=p["unet_channels"], attention_levels=p["attention"], num_res_blocks=1,
                                  num_head_channels=32, num_class_embeds=num_classes,
                                  norm_num_groups=min(32, p["unet_channels"][0]))



    def _to_model(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` uint8 -> ``(B, 1, h, w)`` float in [0, 1] at the fitted size."""
        x = images.float() / 255.0
        if self._size is not None and tuple(x.shape[-2:]) != self._size:
            x = F.interpolate(x, size=self._size, mode="bilinear", antialias=True, align_corners=False)
        return x

    # --- fit ------------------------------------------------------------------------------------
    def fit(self, images: torch.Tensor, labels: torch.Tensor, *, seed: int, progress: bool,
            log: Callable[[dict[str, float], int], None], checkpoint: Checkpointer | None = None) -> dict[str, Any]:
        """Resumable: with a ``checkpoint`` a killed fit continues in the phase and at the step it reached."""
        self.progress = progress
        device = self._device()
        n, _, h, w = images.shape
        if h != w:
            raise SynthmedError(f"generator 'ldm' needs square images, got {h} x {w}")
        self._size = (h, w)
        self._num_classes = max(len(self.classes), int(labels.max()) + 1)
        gen = torch.Generator().manual_seed(int(seed))
        x_all = self._to_model(images)  # (N, 1, H, W) in [0, 1]
        order = torch.randperm(n, generator=gen)
        held = order[: max(1, round(HELD_BACK * n))] if n >= 20 else order[:0]
        fit_rows = order[len(held):]
        start = time.perf_counter()
        torch.manual_seed(seed)  # the networks' initial weights
        resumed = checkpoint.load() if checkpoint is not None else None
        ae = self._fit_autoencoder(x_all[fit_rows], x_all[held], gen, device, log, checkpoint, resumed)
        ae_seconds = time.perf_counter() - start
        mu, sigma = self._encode_all(ae, x_all, device)  # (N, 4, h', w') each
        self._scale = float(1.0 / mu.std().clamp(min=1e-6))
        log({"generator_ae_seconds": ae_seconds, "generator_latent_scale": self._scale}, self.ae_steps)
        start = time.perf_counter()
        unet, loss_avg = self._fit_unet(mu, sigma, labels.long(), gen, device, log, checkpoint, resumed, ae)
        log({"generator_unet_seconds": time.perf_counter() - start}, self.steps)
        self._ae, self._unet = ae.eval(), unet
        return {"steps": self.ae_steps + self.steps, "final_loss": loss_avg}

    def _fit_autoencoder(self, x: torch.Tensor, held: torch.Tensor, gen: torch.Generator, device: str,
                         log: Callable[[dict[str, float], int], None], checkpoint: Checkpointer | None = None,
                         resumed: dict[str, Any] | None = None) -> Any:
        """L1 + KL on ``x`` (N, 1, H, W) in [0, 1]; logs the loss and ``held``'s reconstruction error.

        ``resumed``: a checkpoint of this fit — of this phase (continue at its step) or of the next (the
        autoencoder is done: load it and skip the loop)."""
        p = PRESETS[self.preset]
        ae = self._build_ae(x.shape[-1]).to(device).train()
        opt = torch.optim.Adam(ae.parameters(), lr=p["ae_lr"])
        first = 0
        if resumed is not None and resumed["phase"] == "ae":
            self._restore_loop(resumed, gen, ae=ae, opt=opt)
            first = int(resumed["step"])
        elif resumed is not None:  # the UNet phase: the autoencoder finished before that checkpoint
            ae.load_state_dict(resumed["autoencoder"])
            first = self.ae_steps
        bar = tqdm(range(first, self.ae_steps), desc=f"fitting ldm autoencoder ({len(x)} images)", unit="step",
                   disable=not self.progress, initial=first, total=self.ae_steps)
        for step in bar:
            idx = torch.randint(0, len(x), (min(p["ae_batch"], len(x)),), generator=gen)
            batch = x[idx].to(device)  # (B, 1, H, W)
            eps = torch.randn((len(idx), LATENT_CHANNELS, *self._latent_side(x.shape[-1])), generator=gen).to(device)
            with self._autocast(device):
                mu, sigma = ae.encode(batch)
                recon = ae.decode(mu + sigma * eps)
            kl = 0.5 * (mu.float().pow(2) + sigma.float().pow(2) - torch.log(sigma.float().pow(2) + 1e-12) - 1)
            l1 = (recon.float() - batch).abs().mean()
            loss = l1 + self.kl * kl.sum(dim=(1, 2, 3)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % LOG_EVERY == 0 or step == self.ae_steps - 1:
                log({"generator_ae_loss": float(loss.detach()), "generator_ae_l1": float(l1.detach())}, step)
                bar.set_postfix_str(f"L1 {float(l1.detach()):.4f}")
            if len(held) and (step % max(1, self.ae_steps // 5) == 0 or step == self.ae_steps - 1):
                log({"generator_ae_heldout_l1": self._heldout_l1(ae, held, device)}, step)
            if checkpoint is not None:
                checkpoint.step(lambda: {**self._loop_state(gen, None, ae=ae, opt=opt), "phase": "ae"}, step + 1)
        return ae.eval()

    def _latent_side(self, side: int) -> tuple[int, int]:
        s = side // 2 ** (self._levels(side) - 1)
        return s, s

    @torch.no_grad()
    def _heldout_l1(self, ae: Any, held: torch.Tensor, device: str) -> float:
        """Mean absolute reconstruction error (pixels in [0, 1]) of images the autoencoder never saw."""
        was_training = ae.training
        ae.eval()
        errors = [(ae.decode(ae.encode(b.to(device))[0]).float().clamp(0, 1) - b.to(device)).abs().mean((1, 2, 3))
                  for b in held.split(64)]
        ae.train(was_training)
        return float(torch.cat(errors).mean())

    @torch.no_grad()
    def _encode_all(self, ae: Any, x: torch.Tensor, device: str) -> tuple[torch.Tensor, torch.Tensor]:
        mus, sigmas = [], []
        for b in x.split(64):
            mu, sigma = ae.encode(b.to(device))
            mus.append(mu.float().cpu())
            sigmas.append(sigma.float().cpu())
        return torch.cat(mus), torch.cat(sigmas)

    def _fit_unet(self, mu: torch.Tensor, sigma: torch.Tensor, y_all: torch.Tensor, gen: torch.Generator,
                  device: str, log: Callable[[dict[str, float], int], None], checkpoint: Checkpointer | None = None,
                  resumed: dict[str, Any] | None = None, ae: Any = None) -> tuple[Any, float | None]:
        """Epsilon-prediction DDPM training on scaled latents drawn from the encoder's posterior.

        Its checkpoints carry the finished autoencoder ``ae`` too; ``resumed`` (a checkpoint of this phase)
        continues at its step."""
        from monai.networks.schedulers import DDPMScheduler

        p = PRESETS[self.preset]
        unet = self._build_unet(self._num_classes).to(device).train()
        ema = copy.deepcopy(unet).eval().requires_grad_(False)
        scheduler = DDPMScheduler(**_schedule())
        opt = torch.optim.AdamW(unet.parameters(), lr=p["lr"], weight_decay=0.0)
        warmup = max(1, min(100, self.steps // 10))
        lr_at = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / self.steps))  # noqa: E731
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        n = len(mu)
        loss_avg, first = None, 0
        if resumed is not None and resumed["phase"] == "unet":
            loss_avg = self._restore_loop(resumed, gen, unet=unet, ema=ema, opt=opt, sched=sched)
            first = int(resumed["step"]) - self.ae_steps
        ae_state = ae.state_dict() if checkpoint is not None and ae is not None else None
        bar = tqdm(range(first, self.steps), desc=f"fitting ldm latent UNet ({n} images)", unit="step",
                   disable=not self.progress, initial=first, total=self.steps)
        for step in bar:
            idx = torch.randint(0, n, (min(p["batch"], n),), generator=gen)
            z0 = (mu[idx] + sigma[idx] * torch.randn(mu[idx].shape, generator=gen)) * self._scale  # (B, 4, h, w)
            noise = torch.randn(z0.shape, generator=gen)
            t = torch.randint(0, TRAIN_TIMESTEPS, (len(idx),), generator=gen)
            zt = scheduler.add_noise(z0, noise, t).to(device)
            with self._autocast(device):
                pred = unet(zt, t.to(device), class_labels=y_all[idx].to(device))
            value = self._train_step(F.mse_loss(pred.float(), noise.to(device)), unet, ema, opt, sched, step, self.ema)
            loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
            if step % LOG_EVERY == 0 or step == self.steps - 1:
                log({"generator_fit_loss": value}, step)
                bar.set_postfix_str(f"loss {loss_avg:.4f}")
            if checkpoint is not None:
                checkpoint.step(lambda: {**self._loop_state(gen, loss_avg, unet=unet, ema=ema, opt=opt, sched=sched),
                                         "phase": "unet", "autoencoder": ae_state}, self.ae_steps + step + 1)
        return (ema if self.ema > 0 else unet.eval()), loss_avg

    def state_dict(self) -> dict[str, Any]:
        if self._unet is None:
            return {}
        cpu = lambda m: {k: v.detach().cpu() for k, v in m.state_dict().items()}  # noqa: E731
        return {"num_classes": self._num_classes, "size": self._size, "scale": self._scale,
                "autoencoder": cpu(self._ae), "unet": cpu(self._unet)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._num_classes, self._scale = int(state["num_classes"]), float(state["scale"])
        self._size = tuple(state["size"])  # type: ignore[assignment]
        device = self._device()
        ae = self._build_ae(self._size[0])
        ae.load_state_dict(state["autoencoder"])
        unet = self._build_unet(self._num_classes)
        unet.load_state_dict(state["unet"])
        self._ae, self._unet = ae.to(device).eval(), unet.to(device).eval()

    # --- generate -------------------------------------------------------------------------------
    def generate(self, images: torch.Tensor, labels: torch.Tensor, *, variation: int, seed: int) -> torch.Tensor:
        if not len(images):
            return images.clone()
        return self._denoise(images, labels, [variation] * len(images), [seed] * len(images))

    def iter_generate(self, images: torch.Tensor, labels: torch.Tensor, *, variations: Sequence[int],
                      seeds: Sequence[int]) -> Iterator[tuple[int, torch.Tensor | None]]:
        """One DDIM loop for the whole batch; item ``i``'s noise depends only on its own seed."""
        yield from enumerate(self._denoise(images, labels, variations, seeds))

    @torch.no_grad()
    def _denoise(self, images: torch.Tensor, labels: torch.Tensor, variations: Sequence[int],
                 seeds: Sequence[int]) -> torch.Tensor:
        if self._unet is None or self._size is None:
            raise SynthmedError("generator 'ldm' was not fitted — the synthetic policy fits it on the run's sample")
        if len(labels) and int(labels.max()) >= self._num_classes:
            raise SynthmedError(f"generator 'ldm': label {int(labels.max())} but it was fitted on "
                                f"{self._num_classes} classes")
        device = self._device()
        with self._batch_invariant(device):
            return self._sample(images, labels, variations, seeds, device)

    def _sample(self, images: torch.Tensor, labels: torch.Tensor, variations: Sequence[int], seeds: Sequence[int],
                device: str) -> torch.Tensor:
        from monai.networks.schedulers import DDIMScheduler

        assert self._size is not None
        h, w = images.shape[-2:]
        latent = self._latent_side(self._size[0])
        noise = torch.stack([  # (B, 4, h', w'): per-item generators, never the batch's
            torch.randn(LATENT_CHANNELS, *latent, generator=torch.Generator().manual_seed(item_seed(img, v, s, "ldm")))
            for img, v, s in zip(images, variations, seeds)
        ]).to(device)
        scheduler = DDIMScheduler(**_schedule(), clip_sample=False)
        scheduler.set_timesteps(self.sample_steps)
        timesteps = scheduler.timesteps
        source = self._to_model(images).to(device)  # (B, 1, h, w) in [0, 1]
        z0 = self._ae.encode(source)[0].float() * self._scale  # posterior mean
        if self.mode == "variation":
            start = min(len(timesteps) - 1, int(round(len(timesteps) * (1 - self.strength))))
            timesteps = timesteps[start:]
            z = scheduler.add_noise(z0, noise, timesteps[:1].repeat(len(images)).to(device))
        else:
            z = noise
        y = labels.long().to(device)
        for t in tqdm(timesteps, desc="ldm denoising", leave=False, disable=not self.progress or len(images) < 8):
            with self._autocast(device):
                eps = self._unet(z, t.repeat(len(images)).to(device), class_labels=y).float()
            z, _ = scheduler.step(eps, int(t), z)
        with self._autocast(device):
            x = self._ae.decode(z / self._scale).float()  # (B, 1, h, w) in about [0, 1]
            if self.keep_residual > 0:  # the source's detail the autoencoder cannot express
                x = x + self.keep_residual * (source - self._ae.decode(z0 / self._scale).float())
        if (h, w) != self._size:
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


@hookimpl
def register_generators() -> list[type[Generator]]:
    return [LdmGenerator]
