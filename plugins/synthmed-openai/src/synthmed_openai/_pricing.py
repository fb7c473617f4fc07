"""Estimated USD per generated image, by model, size and quality.

These are *estimates* for budgeting (``synthmed generate --estimate``, ``--max-cost`` and the
``synthetic_cost_usd`` metric), not a bill. GPT image models are billed per token; the figures
below are OpenAI's published per-image output prices at 1024x1024 (late 2026), scaled by pixel
count for other sizes; the small charge for the input image and prompt tokens is not included.
``quality=auto`` is priced as ``high``. Unknown models need the ``price_usd`` option.
"""

from __future__ import annotations

import re

# model -> quality -> USD per 1024x1024 image
_GPT_1024: dict[str, dict[str, float]] = {
    "gpt-image-2": {"low": 0.006, "medium": 0.053, "high": 0.211},
    "gpt-image-1-mini": {"low": 0.005, "medium": 0.011, "high": 0.036},
    "gpt-image-1": {"low": 0.011, "medium": 0.042, "high": 0.167},  # shut down by OpenAI on 2026-10-23
}
# dall-e-2 (variations endpoint, retired by OpenAI on 2026-05-12): flat price per size
_DALLE2 = {"256x256": 0.016, "512x512": 0.018, "1024x1024": 0.020}
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def known_models() -> list[str]:
    return sorted([*_GPT_1024, "dall-e-2"])


def price_per_image(model: str, size: str, quality: str | None) -> float | None:
    """The estimate, or ``None`` when this table does not know the model/size."""
    base = re.sub(r"-\d{4}-\d{2}-\d{2}$", "", model)  # dated snapshots price like their model
    if base == "dall-e-2":
        return _DALLE2.get(size)
    table = _GPT_1024.get(base)
    if table is None:
        return None
    per_quality = table.get("high" if quality in (None, "auto") else quality)
    if per_quality is None:
        return None
    if size == "auto":
        return round(per_quality * 1.5, 6)  # auto may pick 1536x1024: budget for it
    match = _SIZE.match(size)
    if not match:
        return None
    pixels = int(match.group(1)) * int(match.group(2))
    return round(per_quality * max(1.0, pixels / (1024 * 1024)), 6)
