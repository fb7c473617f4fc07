"""Images as users have them → the uint8 ``(N, 1, S, S)`` tensor training made, by training's own functions.

Training decodes every dataset image with :func:`synthmed.data._decode.open_image` and
:func:`~synthmed.data._decode.to_gray_array` (luma for colour, min-max for 16-bit and float files,
bilinear resize to the run's side), and scales with :func:`synthmed.evaluation.to_input`. The served
model calls the same functions, so the two cannot drift. Accepted items:

- PNG/JPEG/any bytes Pillow reads, or the same as base64 text (how JSON carries them);
- uint8 arrays (or tensors) ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` with C = 1, 3 or 4 — taken as
  the 8-bit image they are;
- float arrays in ``[0, 1]`` (what :func:`~synthmed.evaluation.to_input` makes) — taken as
  ``round(255 x)``; a float array outside ``[0, 1]`` is refused (scale it, or pass uint8);
- Pillow images.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Iterable

import numpy as np
import torch
from PIL import Image

from synthmed.data._decode import decode_errors, open_image, to_gray_array
from synthmed.errors import SynthmedError

__all__ = ["to_model_images", "to_pil"]


def to_pil(item: Any) -> Image.Image:
    """One user image as a Pillow image, before training's decode (see the module docstring)."""
    if isinstance(item, Image.Image):
        return open_image(item)
    if isinstance(item, str):
        text = item.split(",", 1)[1] if item.startswith("data:") else item  # a data URI's payload
        try:
            item = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("text is not base64-encoded image bytes") from None
    if isinstance(item, (bytes, bytearray, memoryview)):
        return open_image(bytes(item))
    array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # (C, H, W) -> (H, W, C)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"an image array must be (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4; "
                         f"got shape {tuple(array.shape)}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError("a float image must hold values in [0, 1] (as to_input makes them) — scale it, or "
                             "pass uint8")
        array = np.round(array * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8 or float in [0, 1], not {array.dtype}")
    return Image.fromarray(np.ascontiguousarray(array))


def to_model_images(items: Iterable[Any], size: int, *, names: Iterable[str] | None = None,
                    skip_bad: bool = False) -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode user images as training decoded its own: ``(images, kept, skipped)``.

    Returns the uint8 ``(N_kept, 1, size, size)`` images, the positions kept and the names of those
    skipped (only with ``skip_bad``; otherwise a bad one raises :class:`SynthmedError` naming it).
    """
    items = list(items)
    labels = list(names) if names is not None else [f"image {i}" for i in range(len(items))]
    out = np.empty((len(items), size, size), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[str] = []
    for i, (item, name) in enumerate(zip(items, labels, strict=True)):
        try:
            out[len(kept)] = to_gray_array(to_pil(item), size)
        except (*decode_errors(), TypeError) as exc:
            if not skip_bad:
                fix = "" if " — " in str(exc) else (" — pass PNG/JPEG bytes (base64 in JSON), a uint8 array or a "
                                                    "float array in [0, 1]")
                raise SynthmedError(f"cannot read {name} as an image: {exc}{fix}") from exc
            skipped.append(name)
            continue
        kept.append(i)
    return torch.from_numpy(out[: len(kept)].copy()).unsqueeze(1), kept, skipped
