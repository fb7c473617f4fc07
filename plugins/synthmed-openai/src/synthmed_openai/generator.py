"""The ``openai`` generator: variations of MRI slices from OpenAI's images API (or a compatible server).

GPT image models (default ``gpt-image-2``) go through ``images.edit`` with a variation prompt;
``dall-e-2`` — the thesis' model — through ``images.create_variation``, which OpenAI retired on
2026-05-12 and which is kept for compatible servers that still serve it.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from synthmed.errors import SynthmedError
from synthmed.generators.base import Generator, coerce_option, source_hash

from synthmed_openai import _pricing, _requests

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = "gpt-image-2"
DEFAULT_PROMPT = (
    "Create a new, realistic variation of this axial brain MRI slice: same orientation, anatomy and "
    "grayscale contrast, with small natural differences in the shape and texture of the brain tissue, "
    "ventricles and sulci. Black background, no text, labels or annotations."
)
_DALLE2_SIZES = ("256x256", "512x512", "1024x1024")
_QUALITIES = ("low", "medium", "high", "auto", "xhigh", "max")
_SIZE = re.compile(r"^(auto|\d+x\d+)$")


class RetiredEndpointWarning(UserWarning):
    """``dall-e-2`` variations: retired by OpenAI, only compatible servers still answer."""


_warned_retired = False


class OpenAIGenerator(Generator):
    """Image variations from OpenAI. Sends every source image to the service: needs ``allow_external``.

    Args:
        model: ``gpt-image-2`` (default), another GPT image model, or ``dall-e-2``.
        prompt: the variation prompt (GPT image models only).
        size: output size; default the cheapest (``1024x1024`` for GPT models, ``256x256`` for
            dall-e-2). Outputs are made grayscale and resized to the source's size anyway.
        quality: GPT image models: ``low`` (default, cheapest), ``medium``, ``high``, ``auto``.
        n: images per request (1-10); several variations of one source share a request.
        concurrency: requests in flight at once.
        max_retries: retries of a request on 408/409/429/5xx/connection errors.
        base_url: an OpenAI-compatible server (default: OpenAI).
        api_key: default ``$OPENAI_API_KEY``. Never logged, never part of the cache key.
        max_refusals: content-policy refusals tolerated (skipped) before the run fails.
        timeout: seconds per request.
        price_usd: override the estimated price per image (required for models the table lacks).
    """

    name = "openai"
    sends_data_off_machine = True

    def __init__(self, model: Any = DEFAULT_MODEL, prompt: Any = DEFAULT_PROMPT, size: Any = None, quality: Any = None,
                 n: Any = 1, concurrency: Any = 4, max_retries: Any = 5, base_url: Any = None, api_key: Any = None,
                 max_refusals: Any = 10, timeout: Any = 120, price_usd: Any = None):
        self.model = coerce_option(self.name, "model", model, str)
        self.variations_endpoint = self.model == "dall-e-2"
        self.prompt = coerce_option(self.name, "prompt", prompt, str)
        if self.variations_endpoint:
            self.size = coerce_option(self.name, "size", size or "256x256", str, choices=_DALLE2_SIZES)
            self.quality = None
            _warn_retired()
        else:
            self.size = coerce_option(self.name, "size", size or "1024x1024", str)
            if not _SIZE.match(self.size):
                raise SynthmedError(f"generator 'openai': option size={size!r} must be WIDTHxHEIGHT (e.g. 1024x1024) or auto")
            self.quality = coerce_option(self.name, "quality", quality or "low", str, choices=_QUALITIES)
        self.n = coerce_option(self.name, "n", n, int, low=1, high=10)
        self.concurrency = coerce_option(self.name, "concurrency", concurrency, int, low=1, high=64)
        self.max_retries = coerce_option(self.name, "max_retries", max_retries, int, low=0, high=20)
        self.max_refusals = coerce_option(self.name, "max_refusals", max_refusals, int, low=0)
        self.timeout = coerce_option(self.name, "timeout", timeout, float, low=1.0)
        self.base_url = coerce_option(self.name, "base_url", base_url, str) if base_url else None
        self.__api_key = coerce_option(self.name, "api_key", api_key, str) if api_key else None
        self._price = self._resolve_price(price_usd)
        self.batch_size = self.concurrency * self.n * 4
        self.stats = _requests.RequestStats()
        self._client: Any = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIGenerator(model={self.model!r}, size={self.size!r}, quality={self.quality!r}, base_url={self.base_url!r})"

    def _resolve_price(self, price_usd: Any) -> float:
        if price_usd not in (None, ""):
            return coerce_option(self.name, "price_usd", price_usd, float, low=0.0)
        price = _pricing.price_per_image(self.model, self.size, self.quality)
        if price is None:
            raise SynthmedError(
                f"generator 'openai': no price known for model={self.model!r}, size={self.size!r}, "
                f"quality={self.quality!r} (known models: {', '.join(_pricing.known_models())}) — "
                "pass --generator-options price_usd=<USD per image> (0 for a free compatible server)"
            )
        return price

    @property
    def cost_per_image_usd(self) -> float:
        return self._price

    def output_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model, "size": self.size}
        if not self.variations_endpoint:
            params.update(quality=self.quality, prompt=self.prompt)
        if self.base_url:  # another server is another generator (a test server's images never pass for OpenAI's)
            params["base_url"] = self.base_url
        return params

    # --- generation -----------------------------------------------------------------------------
    def generate(self, images: torch.Tensor, labels: torch.Tensor, *, variation: int, seed: int) -> torch.Tensor:
        import torch

        out: list[Any] = [None] * len(images)
        for i, image in self.iter_generate(images, labels, variations=[variation] * len(images), seeds=[seed] * len(images)):
            out[i] = image
        if any(o is None for o in out):
            raise SynthmedError("generator 'openai': the service refused some images (content policy)")
        return torch.stack(out)

    def iter_generate(self, images: torch.Tensor, labels: torch.Tensor, *, variations: Sequence[int],
                      seeds: Sequence[int]) -> Iterator[tuple[int, torch.Tensor | None]]:
        """Requests run ``concurrency`` at a time; items of one source share requests of up to ``n``.

        Nothing paid for is dropped: when a request fails for good, or on Ctrl-C, queued requests
        are cancelled but those already running are waited for and yielded (so the cache stores
        them) before the error is raised again.
        """
        groups: dict[str, list[int]] = {}
        for i in range(len(images)):
            groups.setdefault(source_hash(images[i]), []).append(i)
        chunks = [items[k : k + self.n] for items in groups.values() for k in range(0, len(items), self.n)]
        h, w = images.shape[-2:]
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="synthmed-openai")
        futures = {pool.submit(self._request, images[items[0]], len(items), h, w): items for items in chunks}
        handled: set[Any] = set()
        error: BaseException | None = None
        try:
            for future in as_completed(futures):
                handled.add(future)
                if future.cancelled():
                    continue
                try:
                    yield from self._outcome(future, futures[future])
                except SynthmedError as exc:
                    if error is None:
                        error = exc
                        for other in futures:
                            other.cancel()  # queued ones only; running ones finish and are yielded
            if error is not None:
                raise error
        except (KeyboardInterrupt, GeneratorExit) as exc:
            for other in futures:
                other.cancel()
            if isinstance(exc, KeyboardInterrupt):  # hand over what is already paid for, then stop
                failed: list[SynthmedError] = []
                for future in futures:
                    if future not in handled and not future.cancelled():
                        handled.add(future)
                        try:
                            yield from self._outcome(future, futures[future])
                        except SynthmedError as late:
                            failed.append(late)
                if failed:
                    warnings.warn(f"generator 'openai': {len(failed)} running request(s) failed while stopping: "
                                  f"{failed[0]}", RuntimeWarning, stacklevel=2)
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _outcome(self, future: Any, items: list[int]) -> Iterator[tuple[int, torch.Tensor | None]]:
        """The items of one finished request (``None`` for refused ones); raise its error."""
        try:
            outs = future.result()
        except _requests.Refused:
            outs = []
            self.stats.add(refusals=len(items))
        for k, i in enumerate(items):
            yield i, outs[k] if k < len(outs) else None
        if self.stats.refusals > self.max_refusals:
            raise SynthmedError(
                f"generator 'openai': {self.stats.refusals} content-policy refusals, more than "
                f"max_refusals={self.max_refusals} — check the sources and prompt, or raise the max_refusals generator option"
            )

    def _request(self, image: torch.Tensor, count: int, height: int, width: int) -> list[torch.Tensor]:
        """One API call for ``count`` variations of ``image``."""
        client = self._get_client()
        upload = ("source.png", _requests.encode_png(image), "image/png")
        if self.variations_endpoint:
            method = type(client.images).create_variation
            method = getattr(method, "__wrapped__", method)  # skip the SDK's DeprecationWarning: we warn once ourselves
            call = lambda: method(client.images, image=upload, model=self.model, n=count,  # noqa: E731
                                  size=self.size, response_format="b64_json")
        else:
            call = lambda: client.images.edit(image=upload, prompt=self.prompt, model=self.model, n=count,  # noqa: E731
                                              size=self.size, quality=self.quality)
        response = _requests.call(call, max_retries=self.max_retries, stats=self.stats, what=f"{self.model} request")
        data = list(response.data or [])
        if any(not d.b64_json for d in data):
            raise SynthmedError("generator 'openai': the server returned image URLs, not b64_json — use a compatible server")
        self.stats.add(images=len(data))
        try:
            return [_requests.decode_b64(d.b64_json, height, width) for d in data[:count]]
        except (OSError, ValueError, TypeError) as exc:  # not base64, not an image: the service's fault
            raise SynthmedError(f"generator 'openai': the service returned an unreadable image ({exc})") from exc

    def _get_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import openai

                key = self.__api_key or os.environ.get("OPENAI_API_KEY")
                if not key:
                    raise SynthmedError("generator 'openai': no API key — set OPENAI_API_KEY in the environment")
                self._client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout)
            return self._client


def _warn_retired() -> None:
    global _warned_retired
    if not _warned_retired:
        _warned_retired = True
        warnings.warn(
            "generator 'openai': model dall-e-2 uses the image-variations endpoint, which OpenAI retired on "
            "2026-05-12 — it works only with compatible servers (base_url); use a GPT image model with OpenAI",
            RetiredEndpointWarning,
            stacklevel=3,
        )
