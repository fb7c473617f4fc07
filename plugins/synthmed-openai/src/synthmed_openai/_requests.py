"""One images-API request with retries: backoff that honours ``Retry-After``, refusals told apart.

The SDK's own retries are switched off (``max_retries=0`` on the client) so that every retry is
counted here and ``Retry-After`` / ``retry-after-ms`` is always honoured.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from synthmed.errors import SynthmedError

REFUSAL_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
RETRY_STATUS = frozenset({408, 409, 429})
MAX_WAIT_S = 120.0  # longest Retry-After honoured
BACKOFF_S = 0.5  # first backoff without Retry-After; doubles per retry (max 30 s), +0-25 % jitter


class Refused(Exception):
    """The service declined this source on content-policy grounds (counted, skipped)."""


@dataclass
class RequestStats:
    """Thread-safe counters of one generator's requests."""

    requests: int = 0
    retries: int = 0
    retry_wait_s: float = 0.0
    retry_after_honoured: int = 0
    refusals: int = 0
    images: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def retry_after_s(exc: Exception) -> float | None:
    """The server's requested wait: ``retry-after-ms``, else ``Retry-After`` (seconds or HTTP date)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def call(fn: Callable[[], Any], *, max_retries: int, stats: RequestStats, what: str,
         sleep: Callable[[float], None] = time.sleep) -> Any:
    """Run ``fn`` (one API request), retrying 408/409/429/5xx and connection errors.

    Raises:
        Refused: a content-policy refusal (400 with code content_policy_violation / moderation_blocked).
        SynthmedError: any other failure, or retries exhausted (the key is never in the message).
    """
    import openai

    for attempt in range(max_retries + 1):
        stats.add(requests=1)
        try:
            return fn()
        except openai.BadRequestError as exc:
            if exc.code in REFUSAL_CODES:
                raise Refused(exc.message) from exc
            raise SynthmedError(f"openai: {what} was rejected (400 {exc.code or ''}): {exc.message}") from exc
        except openai.AuthenticationError as exc:
            raise SynthmedError(
                "openai: the API key was rejected (401) — check OPENAI_API_KEY and base_url"
            ) from exc
        except (openai.APIConnectionError, openai.APIStatusError) as exc:
            status = getattr(exc, "status_code", None)
            retryable = status is None or status in RETRY_STATUS or status >= 500
            if not retryable:
                raise SynthmedError(f"openai: {what} failed ({status}): {getattr(exc, 'message', exc)}") from exc
            if attempt == max_retries:
                raise SynthmedError(
                    f"openai: {what} still failing after {max_retries} retries ({status or 'connection error'}: "
                    f"{getattr(exc, 'message', exc)}) — try later, lower concurrency, or raise the max_retries generator option"
                ) from exc
            asked = retry_after_s(exc)
            wait = min(MAX_WAIT_S, asked) if asked is not None else min(30.0, BACKOFF_S * 2**attempt) * (1 + random.random() / 4)
            stats.add(retries=1, retry_wait_s=wait, retry_after_honoured=int(asked is not None))
            sleep(wait)
    raise AssertionError("unreachable")


def encode_png(image: Any) -> bytes:
    """A ``(1, H, W)`` uint8 tensor as RGB PNG bytes (what every images endpoint accepts)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[0].contiguous().cpu().numpy(), mode="L").convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def decode_b64(b64: str, height: int, width: int) -> Any:
    """A returned base64 image as ``(1, height, width)`` uint8: grayscale, resized (Lanczos)."""
    import base64
    import io

    import numpy as np
    import torch
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(b64))) as img:
        gray = img.convert("L")
        if gray.size != (width, height):
            gray = gray.resize((width, height), Image.Resampling.LANCZOS)
        array = np.asarray(gray, dtype=np.uint8)
    return torch.from_numpy(array.copy()).unsqueeze(0)
