"""The ``sd-variation`` generator: MRI variations from a pretrained Stable Diffusion pipeline, run here.

The open, local analogue of the thesis's DALL-E 2 variations. Two pipeline families, told apart by
the ``_class_name`` in the model's ``model_index.json``:

* **img2img** (any text-to-image or img2img SD checkpoint, loaded through
  ``AutoPipelineForImage2Image``; default ``stable-diffusion-v1-5/stable-diffusion-v1-5``): SDEdit —
  the source is noised to ``strength`` and denoised under a prompt that may name the class;
* **image variations** (``StableDiffusionImageVariationPipeline``, e.g.
  ``lambdalabs/sd-image-variations-diffusers``): conditioned on the source's CLIP image
  embedding, no prompt, no strength — the closest to DALL-E 2's variations endpoint.

Each item: ``(1, H, W)`` uint8 -> RGB at the pipeline's size -> pipeline (its own seeded
generator) -> grayscale -> Lanczos back to ``(H, W)``.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from synthmed.errors import SynthmedError
from synthmed.generators.base import Generator, coerce_option, item_seed

from synthmed_diffusers import _weights

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_PROMPT = "an axial T1-weighted brain MRI slice, {class}, grayscale, black background"
IMAGE_VARIATION = "StableDiffusionImageVariationPipeline"
_DTYPES = ("auto", "float32", "float16", "bfloat16")


class SDVariationGenerator(Generator):
    """Variations from a local Stable Diffusion pipeline. Nothing leaves this machine; free.

    Args:
        model: a local pipeline folder (``model_index.json`` inside) or a hub id.
        revision: hub branch, tag or commit (hub ids only).
        strength: img2img: how far the source is noised (0 = the source, 1 = ignore it).
        steps: denoising steps of the full schedule (img2img runs ``strength x steps`` of them).
        guidance: classifier-free guidance scale (1 = off, faster).
        prompt: img2img prompt; ``{class}`` becomes the source's class name (``Mild Demented``),
            ``{label}`` its index.
        negative_prompt: img2img negative prompt (empty = none).
        size: side in px the source is resized to for the pipeline; 0 = the model's own (512 for SD 1.5).
        device: ``auto`` (cuda, else mps, else cpu), ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
        dtype: ``auto`` (float16 on cuda, else float32), ``float32``, ``float16``, ``bfloat16``.
    """

    name = "sd-variation"
    sends_data_off_machine = False
    deterministic = True  # per-item seeded generators; one image per pipeline call
    batch_size = 8

    def __init__(self, model: Any = DEFAULT_MODEL, revision: Any = None, strength: Any = 0.35, steps: Any = 30,
                 guidance: Any = 5.0, prompt: Any = DEFAULT_PROMPT, negative_prompt: Any = "", size: Any = 0,
                 device: Any = "auto", dtype: Any = "auto"):
        self.model = coerce_option(self.name, "model", model, str)
        self.revision = coerce_option(self.name, "revision", revision, str) if revision else None
        self.strength = coerce_option(self.name, "strength", strength, float, low=0.01, high=1.0)
        self.steps = coerce_option(self.name, "steps", steps, int, low=1, high=1000)
        self.guidance = coerce_option(self.name, "guidance", guidance, float, low=0.0, high=50.0)
        self.prompt = coerce_option(self.name, "prompt", prompt, str)
        self.negative_prompt = coerce_option(self.name, "negative_prompt", negative_prompt, str)
        size = coerce_option(self.name, "size", size, int, low=0, high=4096)
        if size % 8:
            raise SynthmedError(f"generator 'sd-variation': option size={size} must be a multiple of 8 (or 0 = the model's own)")
        dtype = coerce_option(self.name, "dtype", dtype, str, choices=_DTYPES)
        device = coerce_option(self.name, "device", device, str)
        self.weights = _weights.locate(self.model, self.revision)  # fails here, in seconds, when offline and absent
        self.device = _resolve_device(device)
        self.dtype = ("float16" if self.device.startswith("cuda") else "float32") if dtype == "auto" else dtype
        self.size = size or self.weights.size
        self.image_variation = self.weights.pipeline == IMAGE_VARIATION
        if not self.image_variation and int(self.steps * self.strength) < 1:  # diffusers' own arithmetic
            raise SynthmedError(
                f"generator 'sd-variation': steps={self.steps} x strength={self.strength} is less than one "
                f"denoising step — raise steps to at least {math.ceil(1 / self.strength)} or raise strength"
            )
        self.classes: tuple[str, ...] = ()
        self._pipe: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SDVariationGenerator(model={self.model!r}, strength={self.strength}, steps={self.steps}, device={self.device!r})"

    def output_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "revision": self.weights.revision,
            "weights_sha256": self.weights.fingerprint,  # another model (or retrained weights) never hits the cache
            "pipeline": self.weights.pipeline,
            "size": self.size,
            "steps": self.steps,
            "guidance": self.guidance,
            "dtype": self.dtype,
            "version": 1,
        }
        if not self.image_variation:
            params.update(strength=self.strength, prompt=self.prompt, negative_prompt=self.negative_prompt)
        return params

    def bind(self, classes: Sequence[str]) -> None:
        self.classes = tuple(classes)

    def prompt_for(self, label: int) -> str:
        """The prompt of one class: ``{class}`` and ``{label}`` filled in."""
        name = self.classes[label] if 0 <= label < len(self.classes) else f"class {label}"
        return self.prompt.replace("{class}", name.replace("_", " ")).replace("{label}", str(label))

    # --- generation -----------------------------------------------------------------------------
    def generate(self, images: torch.Tensor, labels: torch.Tensor, *, variation: int, seed: int) -> torch.Tensor:
        import torch

        n = len(images)
        out = dict(self.iter_generate(images, labels, variations=[variation] * n, seeds=[seed] * n))
        return torch.stack([out[i] for i in range(n)])

    def iter_generate(self, images: torch.Tensor, labels: torch.Tensor, *, variations: Sequence[int],
                      seeds: Sequence[int]) -> Iterator[tuple[int, torch.Tensor | None]]:
        """One pipeline call per item (so an item never depends on its batch-mates), yielded as done."""
        pipe = self._pipeline()
        for i in range(len(images)):
            seed_i = item_seed(images[i], int(variations[i]), int(seeds[i]))
            yield i, self._vary(pipe, images[i], int(labels[i]), seed_i)

    def _vary(self, pipe: Any, image: torch.Tensor, label: int, item_seed: int) -> torch.Tensor:
        import numpy as np
        import torch
        from PIL import Image

        h, w = image.shape[-2:]
        source = Image.fromarray(image[0].contiguous().cpu().numpy(), mode="L")
        source = source.resize((self.size, self.size), Image.Resampling.BICUBIC).convert("RGB")
        common = dict(image=source, num_inference_steps=self.steps, guidance_scale=self.guidance,
                      generator=torch.Generator("cpu").manual_seed(item_seed), output_type="np")
        with torch.inference_mode():
            if self.image_variation:
                result = pipe(height=self.size, width=self.size, **common)
            else:
                result = pipe(prompt=self.prompt_for(label), negative_prompt=self.negative_prompt or None,
                              strength=self.strength, **common)
        rgb = (np.clip(result.images[0], 0.0, 1.0) * 255).round().astype(np.uint8)  # (size, size, 3)
        gray = Image.fromarray(rgb, mode="RGB").convert("L")
        if gray.size != (w, h):
            gray = gray.resize((w, h), Image.Resampling.LANCZOS)
        return torch.from_numpy(np.asarray(gray, dtype=np.uint8).copy()).unsqueeze(0)  # (1, H, W) uint8

    def _pipeline(self) -> Any:
        """Load the pipeline once (from the located folder only: never the network)."""
        with self._lock:
            if self._pipe is None:
                self._pipe = _load(self.weights, self.device, self.dtype, self.image_variation)
            return self._pipe


def _load(weights: _weights.Weights, device: str, dtype: str, image_variation: bool) -> Any:
    import warnings

    import torch
    from diffusers import AutoPipelineForImage2Image, StableDiffusionImageVariationPipeline

    kwargs: dict[str, Any] = {"torch_dtype": getattr(torch, dtype), "local_files_only": True}
    index = (weights.path / "model_index.json").read_text()
    if '"safety_checker"' in index:
        # The NSFW checker is for natural images: it blacks out false positives, which would silently
        # put black squares into the training set. Outputs are never published from here.
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    cls = StableDiffusionImageVariationPipeline if image_variation else AutoPipelineForImage2Image
    try:
        with warnings.catch_warnings():  # newer diffusers call it `dtype`; older ones know only `torch_dtype`
            warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
            pipe = cls.from_pretrained(str(weights.path), **kwargs)
    except (OSError, ValueError) as exc:
        raise SynthmedError(
            f"generator 'sd-variation': could not load a {weights.pipeline or 'diffusers'} pipeline from "
            f"{str(weights.path)!r} ({exc}) — {_weights.how_to_get(str(weights.path))}"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SynthmedError(f"generator 'sd-variation': option device={device!r} but no CUDA GPU is available — use device=cpu")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise SynthmedError(f"generator 'sd-variation': option device={device!r} is not allowed — choose auto, cpu, cuda, cuda:N or mps")
    return device

