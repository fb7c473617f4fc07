"""``ddpm``: a class-conditional denoising diffusion model fitted on the run's own sample.

A ``diffusers`` ``UNet2DModel`` (1 channel, one class embedding per class) is trained with the
DDPM noise schedule (epsilon prediction, 1,000 steps) on exactly the run's sampled real training
images (``learns = True``; see :mod:`synthmed.generators.fitting`), with EMA weights used for
sampling. Generation uses DDIM (eta = 0):

* ``mode=variation`` (default) — SDEdit: noise the source to ``strength`` (0.5: half-way along
  the DDIM schedule) and denoise it with its own class. The local counterpart of the thesis's
  DALL-E 2 image variations, and what makes CPU generation affordable (only ``strength *
  sample_steps`` UNet calls per image).
* ``mode=sample`` — new images of a class from pure noise (all ``sample_steps``).

Presets (each option below overrides its preset's value):

============  ==========  =====================  ======  =====  ============  ===========
preset        resolution  UNet channels          layers  steps  batch         sample_steps
============  ==========  =====================  ======  =====  ============  ===========
``cpu-small``  32 px      32/64/64, no attention  1      600    32            20
``gpu``        64 px      64/128/256/256, attn    2      20000  64            50
============  ==========  =====================  ======  =====  ============  ===========

The model works at ``resolution`` and its output is resized (bilinear) back to the source's size:
**``cpu-small`` images are rough** — 32 px detail upsampled to 128 px, after a few minutes of
training — and runs log ``generator_rough = true``. The ``cpu-small`` budget: fit *and* generate a
30% sample (1,536 sources, 3,584 images) within 15 minutes on a 2-core CPU (see
``benchmarks/bench_generators.py`` and docs/generators.md for measurements).

Every item's noise comes from its own ``torch.Generator`` seeded by (source bytes, variation,
seed), the fit from ``seed``; on the CPU a fixed seed reproduces the fit and the images. ``init=PATH``
warm-starts from a checkpoint (a state saved by this generator — a ``.pt`` from the fit cache — or
a ``diffusers`` UNet folder); see :func:`synthmed.generators.fitting.check_open_set` for when that
makes a run open-set.
"""

from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path
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
    "cpu-small": {"resolution": 32, "width": 32, "mults": (1, 2, 2), "layers": 1, "attention": False,
                  "steps": 600, "batch": 32, "lr": 2e-3, "sample_steps": 20},
    "gpu": {"resolution": 64, "width": 64, "mults": (1, 2, 4, 4), "layers": 2, "attention": True,
            "steps": 20000, "batch": 64, "lr": 2e-4, "sample_steps": 50},
}
TRAIN_TIMESTEPS = 1000


class DdpmGenerator(NetworkGenerator):
    """Class-conditional DDPM (UNet2DModel + DDPM training + DDIM sampling), 1 channel.

    Args:
        mode: ``variation`` (SDEdit of the source) or ``sample`` (from pure noise).
        preset: ``cpu-small`` or ``gpu`` (see the module docstring).
        steps: training steps (batches); default from the preset.
        sample_steps: DDIM steps of a full denoising; a variation runs ``strength`` of them.
        strength: SDEdit noise level in (0, 1]; 1 is as good as ``mode=sample``.
        width: channels of the first UNet level (later levels multiply it); default from the preset.
        resolution: the model's internal image side in px (multiple of 8); default from the preset.
        batch: training batch size; default from the preset.
        lr: AdamW learning rate; default from the preset.
        ema: EMA decay of the weights used for sampling (0 turns EMA off).
        init: warm-start checkpoint (``.pt`` from the fit cache or a diffusers UNet folder).
        device: ``auto`` (the run's ``device``), ``cpu``, ``cuda``, ``cuda:N``.
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on the CPU, where bf16 autocast measured far
            slower: docs/generators.md), ``bf16`` or ``fp32``.
    """

    name = "ddpm"
    learns = True
    deterministic = True
    version = "1"
    batch_size = 64

    def __init__(self, mode: Any = "variation", preset: Any = "cpu-small", steps: Any = None,
                 sample_steps: Any = None, strength: Any = 0.5, width: Any = None, resolution: Any = None,
                 batch: Any = None, lr: Any = None, ema: Any = 0.995, init: Any = "", device: Any = "auto",
                 precision: Any = "auto"):
        n = self.name
        self.mode = coerce_option(n, "mode", mode, str, choices=("variation", "sample"))
        self.preset = coerce_option(n, "preset", preset, str, choices=tuple(PRESETS))
        p = PRESETS[self.preset]
        pick = lambda value, key: p[key] if value is None or str(value).strip() == "" else value  # noqa: E731
        self.steps = coerce_option(n, "steps", pick(steps, "steps"), int, low=1, high=10_000_000)
        self.sample_steps = coerce_option(n, "sample_steps", pick(sample_steps, "sample_steps"), int, low=1, high=1000)
        self.strength = coerce_option(n, "strength", strength, float, low=0.01, high=1.0)
        self.width = coerce_option(n, "width", pick(width, "width"), int, low=4, high=1024)
        self.resolution = coerce_option(n, "resolution", pick(resolution, "resolution"), int, low=8, high=1024)
        if self.resolution % 8:
            raise SynthmedError(f"generator 'ddpm': option resolution={self.resolution} must be a multiple of 8")
        self.batch = coerce_option(n, "batch", pick(batch, "batch"), int, low=1, high=4096)
        self.lr = coerce_option(n, "lr", pick(lr, "lr"), float, low=1e-7, high=1.0)
        self.ema = coerce_option(n, "ema", ema, float, low=0.0, high=0.99999)
        self.device = coerce_option(n, "device", device, str)
        self.precision = coerce_option(n, "precision", precision, str, choices=("auto", "bf16", "fp32"))
        self.init = coerce_option(n, "init", init, str)
        self._init_hash = ""
        if self.init:
            path = Path(self.init).expanduser()
            if not path.exists():
                raise SynthmedError(f"generator 'ddpm': init={self.init!r} does not exist — pass a checkpoint path")
            self.init = str(path.resolve())
            self._init_hash = _path_hash(path)
            self.init_provenance = {"init": self.init, "sha256": self._init_hash}
        self.classes: tuple[str, ...] = ()
        self.progress = True
        self._unet: Any = None
        self._num_classes = 0



    def output_params(self) -> dict[str, Any]:
        return {**self.fit_params(), "mode": self.mode, "sample_steps": self.sample_steps,
                "strength": self.strength, "rough": self.preset == "cpu-small"}

    def fit_params(self) -> dict[str, Any]:
        p = PRESETS[self.preset]
        return {"preset": self.preset, "steps": self.steps, "width": self.width, "resolution": self.resolution,
                "mults": list(p["mults"]), "layers": p["layers"], "attention": p["attention"], "batch": self.batch,
                "lr": self.lr, "ema": self.ema, "precision": self.precision, "init": self._init_hash,
                "version": self.version}

    # --- model ----------------------------------------------------------------------------------
    def _build(self, num_classes: int) -> Any:
        from diffusers import UNet2DModel  # optional extra: diffusers (pip install -e plugins/synthmed-diffusers)

        p = PRESETS[self.preset]
        channels = tuple(self.width * m for m in p["mults"])
        down = ["DownBlock2D"] * len(channels)
        up = ["UpBlock2D"] * len(channels)
        if p["attention"]:
            down[-2], up[1] = "AttnDownBlock2D", "AttnUpBlock2D"
        return UNet2DModel(sample_size=self.resolution, in_channels=1, out_channels=1,
                           block_out_channels=channels, layers_per_block=p["layers"],
                           down_block_types=tuple(down), up_block_types=tuple(up),
                           num_class_embeds=num_classes, norm_num_groups=min(8, self.width))



    def _to_model(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` uint8 -> ``(B, 1, r, r)`` float in [-1, 1]."""
        x = images.float() / 127.5 - 1
        if tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True,
                              align_corners=False)
        return x

    # --- fit ------------------------------------------------------------------------------------
    def fit(self, images: torch.Tensor, labels: torch.Tensor, *, seed: int, progress: bool,
            log: Callable[[dict[str, float], int], None], checkpoint: Checkpointer | None = None) -> dict[str, Any]:
        """Resumable: with a ``checkpoint`` the loop continues from its last state (synthmed.checkpoints)."""
        from diffusers import DDPMScheduler  # optional extra: diffusers (pip install -e plugins/synthmed-diffusers)

        self.progress = progress
        device = self._device()
        self._num_classes = max(len(self.classes), int(labels.max()) + 1)
        torch.manual_seed(seed)  # the UNet's initial weights
        unet = self._build(self._num_classes)
        if self.init:
            unet.load_state_dict(_load_init(self.init), strict=True)
        unet = unet.to(device).train()
        ema = copy.deepcopy(unet).eval().requires_grad_(False)
        scheduler = DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS)
        opt = torch.optim.AdamW(unet.parameters(), lr=self.lr, weight_decay=0.0)
        warmup = max(1, min(100, self.steps // 10))
        lr_at = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / self.steps))  # noqa: E731
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        x_all = self._to_model(images)  # (N, 1, r, r) in [-1, 1]
        y_all = labels.long()
        gen = torch.Generator().manual_seed(int(seed))
        n = len(x_all)
        loss_avg, first = None, 0
        state = checkpoint.load() if checkpoint is not None else None
        if state is not None:  # a killed fit of the same key: continue where its last checkpoint left it
            loss_avg = self._restore_loop(state, gen, unet=unet, ema=ema, opt=opt, sched=sched)
            first = int(state["step"])
        bar = tqdm(range(first, self.steps), desc=f"fitting ddpm ({self.preset}, {n} images)", unit="step",
                   disable=not progress, initial=first, total=self.steps)
        for step in bar:
            idx = torch.randint(0, n, (min(self.batch, n),), generator=gen)
            x0, y = x_all[idx].to(device), y_all[idx].to(device)  # (B, 1, r, r), (B,)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            t = torch.randint(0, TRAIN_TIMESTEPS, (len(idx),), generator=gen).to(device)
            xt = scheduler.add_noise(x0, noise, t)
            with self._autocast(device):
                pred = unet(xt, t, class_labels=y).sample
            value = self._train_step(F.mse_loss(pred.float(), noise), unet, ema, opt, sched, step, self.ema)
            loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
            if step % 10 == 0 or step == self.steps - 1:
                log({"generator_fit_loss": value}, step)
                bar.set_postfix_str(f"loss {loss_avg:.4f}")
            if checkpoint is not None:
                checkpoint.step(lambda: self._loop_state(gen, loss_avg, unet=unet, ema=ema, opt=opt, sched=sched),
                                step + 1)
        self._unet = ema if self.ema > 0 else unet.eval()
        return {"steps": self.steps, "final_loss": loss_avg}

    def state_dict(self) -> dict[str, Any]:
        if self._unet is None:
            return {}
        return {"num_classes": self._num_classes,
                "unet": {k: v.detach().cpu() for k, v in self._unet.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._num_classes = int(state["num_classes"])
        unet = self._build(self._num_classes)
        unet.load_state_dict(state["unet"])
        self._unet = unet.to(self._device()).eval()

    # --- generate -------------------------------------------------------------------------------
    def generate(self, images: torch.Tensor, labels: torch.Tensor, *, variation: int, seed: int) -> torch.Tensor:
        items = dict(self.iter_generate(images, labels, variations=[variation] * len(images),
                                        seeds=[seed] * len(images)))
        return torch.stack([items[i] for i in range(len(images))]) if len(images) else images.clone()

    def iter_generate(self, images: torch.Tensor, labels: torch.Tensor, *, variations: Sequence[int],
                      seeds: Sequence[int]) -> Iterator[tuple[int, torch.Tensor | None]]:
        """One DDIM loop for the whole batch; item ``i``'s noise depends only on its own seed."""
        yield from enumerate(self._denoise(images, labels, variations, seeds))

    def _denoise(self, images: torch.Tensor, labels: torch.Tensor, variations: Sequence[int],
                 seeds: Sequence[int]) -> torch.Tensor:
        from diffusers import DDIMScheduler  # optional extra: diffusers (pip install -e plugins/synthmed-diffusers)

        if self._unet is None:
            raise SynthmedError("generator 'ddpm' was not fitted — the synthetic policy fits it on the run's sample")
        if len(labels) and int(labels.max()) >= self._num_classes:
            raise SynthmedError(f"generator 'ddpm': label {int(labels.max())} but it was fitted on "
                                f"{self._num_classes} classes")
        device = self._device()
        b, _, h, w = images.shape
        r = self.resolution
        noise = torch.stack([  # (B, 1, r, r): per-item generators, never the batch's
            torch.randn(1, r, r, generator=torch.Generator().manual_seed(item_seed(img, v, s, "ddpm")))
            for img, v, s in zip(images, variations, seeds)
        ]).to(device)
        scheduler = DDIMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, clip_sample=True)
        scheduler.set_timesteps(self.sample_steps)
        timesteps = scheduler.timesteps
        if self.mode == "variation":
            start = min(len(timesteps) - 1, int(round(len(timesteps) * (1 - self.strength))))
            timesteps = timesteps[start:]
            x = scheduler.add_noise(self._to_model(images).to(device), noise, timesteps[:1].repeat(b).to(device))
        else:
            x = noise
        y = labels.long().to(device)
        with torch.no_grad(), self._batch_invariant(device):
            for t in tqdm(timesteps, desc="ddpm denoising", leave=False, disable=not self.progress or b < 8):
                with self._autocast(device):
                    eps = self._unet(x, t.to(device), class_labels=y).sample.float()
                x = scheduler.step(eps, t, x, eta=0.0).prev_sample
        x = (x.float().clamp(-1, 1) + 1) / 2  # (B, 1, r, r) in [0, 1]
        if (h, w) != (r, r):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu()



def _path_hash(path: Path) -> str:
    """sha256 of a checkpoint file, or of every file (name and bytes) of a checkpoint folder."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _load_init(path: str) -> dict[str, Any]:
    """The UNet weights of a warm-start checkpoint (fit-cache ``.pt``, bare state dict or diffusers folder)."""
    p = Path(path)
    fix = ("pass a fit-cache .pt file, a UNet state-dict file or a diffusers UNet2DModel folder this user may "
           "read: --generator-options init=PATH")
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise SynthmedError(f"generator 'ddpm': init={path!r} is a folder without a diffusers UNet "
                                f"(no config.json) — {fix}")
        from diffusers import UNet2DModel  # optional extra: diffusers (pip install -e plugins/synthmed-diffusers)

        try:
            return UNet2DModel.from_pretrained(str(p)).state_dict()
        except (OSError, ValueError) as exc:
            raise SynthmedError(f"generator 'ddpm': init={path!r} cannot be read as a diffusers UNet "
                                f"({type(exc).__name__}: {exc}) — {fix}") from exc
    try:
        blob = torch.load(p, map_location="cpu", weights_only=False)
    except OSError as exc:  # gone or unreadable since the generator was built
        raise SynthmedError(f"generator 'ddpm': init={path!r} cannot be read ({exc.strerror or exc}) — {fix}") from exc
    except Exception as exc:  # not a torch file: unpickling errors vary
        raise SynthmedError(f"generator 'ddpm': init={path!r} is not a checkpoint torch can load "
                            f"({type(exc).__name__}: {exc}) — {fix}") from exc
    for key in ("state", "unet"):
        if isinstance(blob, dict) and key in blob:
            blob = blob[key]
    if not isinstance(blob, dict):
        raise SynthmedError(f"generator 'ddpm': init={path!r} holds no UNet state dict")
    return blob


@hookimpl
def register_generators() -> list[type[Generator]]:
    return [DdpmGenerator]
