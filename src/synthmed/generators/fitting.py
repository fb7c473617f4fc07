"""The fit contract of learning generators (``Generator.learns``) and the fitted-state cache.

A generator that learns is fitted on *exactly* the run's sampled real training images (after the
validation carve) — what ``AugmentationPolicy.training_set`` receives as ``real`` — and nothing
else. Its fitted state is cached under the generation cache root::

    <root>/_fits/<generator>/<fit key>.pt

    fit key     = sha256(fingerprint | generator name | generator version | canonical fit_params())
    fingerprint = sha256 over the sorted (source hash, label) pairs of the fitted images

so the policies and models of one simulation share one fit, a rerun fits nothing, and the order
of the images does not matter. ``Generator.cache_params()`` adds the fit key to every generation
cache key, so images made by different fits never mix. Writes are atomic (temp file, then
``os.replace``) under a per-fit file lock: fits of other samples run side by side, and a finished
fit is read without waiting for any lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from filelock import FileLock

from synthmed import interrupts
from synthmed.checkpoints import Checkpointer
from synthmed.errors import SynthmedError
from synthmed.generators.base import Generator, source_hash
from synthmed.generators.cache import GenerationCache
from synthmed.paths import atomic_write, writing

__all__ = ["FitCache", "FitInfo", "check_open_set", "ensure_fitted", "fit_cache_for", "fit_fingerprint", "fit_key",
           "init_sidecar"]

_FITS = "_fits"  # not a valid generator name (those start with a letter or digit): never collides


def fit_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """sha256 over the sorted ``(source hash, label)`` pairs of ``(N, 1, H, W)`` images: order-free."""
    pairs = sorted(f"{source_hash(image)}:{int(label)}" for image, label in zip(images, labels))
    h = hashlib.sha256(f"n={len(pairs)}\n".encode())
    for pair in pairs:
        h.update(pair.encode() + b"\n")
    return h.hexdigest()


def fit_key(generator: Generator, fingerprint: str) -> str:
    """The fitted state's key: what it was fitted on, which generator and version, with which params."""
    canonical = json.dumps(generator.fit_params(), sort_keys=True, separators=(",", ":"), default=str)
    text = f"{fingerprint}|{generator.name}|{generator.version}|{canonical}"
    return hashlib.sha256(text.encode()).hexdigest()


class FitCache:
    """Fitted states on disk, next to the generated images (``<root>/_fits/<generator>/<key>.pt``)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser()

    def path(self, generator: str, key: str) -> Path:
        return self.root / _FITS / generator / f"{key}.pt"

    def has(self, generator: str, key: str) -> bool:
        return self.path(generator, key).is_file()

    def load(self, generator: str, key: str) -> dict[str, Any]:
        """``{"state": ..., "meta": ...}`` as stored."""
        path = self.path(generator, key)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # a truncated or foreign file: say which and what to do
            raise SynthmedError(f"fitted state {path} is unreadable ({exc}) — delete it and rerun to refit") from exc

    def _writing(self) -> Any:
        """A full, read-only or forbidden fit cache as one clear error (synthmed.paths.writing)."""
        return writing(f"generation cache {self.root}", "free space there or point the cache at a folder this user "
                       "can write: --cache-dir PATH (cache_dir) or $SYNTHMED_CACHE_DIR", root=self.root)

    def store(self, generator: str, key: str, state: dict[str, Any], meta: dict[str, Any]) -> Path:
        """Write atomically (synthmed.paths.atomic_write)."""
        path = self.path(generator, key)
        with self._writing():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda fh: torch.save({"state": state, "meta": meta}, fh))
        return path

    def checkpoint(self, generator: str, key: str, every: float) -> Checkpointer:
        """The fit's resumable checkpoint, next to where its fitted state will be: ``<key>.ckpt``."""
        return Checkpointer(self.path(generator, key).with_suffix(".ckpt"), every, what=f"{generator} fit")

    def lock(self, generator: str, key: str) -> Any:
        """One inter-process lock per fit: two runs never fit the same thing twice at once, while fits
        of other samples (other simulations) and loads of finished fits never wait on it."""
        folder = self.root / _FITS / generator
        with self._writing():
            folder.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(folder / f".{key}.lock"))
        return _ClearLock(lock, self._writing)


class _ClearLock:
    """A FileLock whose acquisition on an unwritable cache (its lock file cannot be made) is a clear error."""

    def __init__(self, lock: FileLock, writing: Any):
        self.lock, self.writing = lock, writing

    def acquire(self, *args: Any, **kwargs: Any) -> Any:
        """``FileLock.acquire`` (its proxy is a context manager too), an unwritable lock file as one clear error."""
        with self.writing():
            return self.lock.acquire(*args, **kwargs)

    def release(self, *args: Any, **kwargs: Any) -> None:
        self.lock.release(*args, **kwargs)

    def __enter__(self) -> _ClearLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()


@dataclass
class FitInfo:
    """What :func:`ensure_fitted` did."""

    key: str
    fingerprint: str
    from_cache: bool
    seconds: float
    steps: int
    n_images: int
    final_loss: float | None = None

    def params(self) -> dict[str, Any]:
        """MLflow params of the fit."""
        return {"generator_fit_key": self.key, "generator_fit_fingerprint": self.fingerprint,
                "generator_fit_images": self.n_images, "generator_fit_steps": self.steps}

    def metrics(self) -> dict[str, float]:
        """MLflow metrics of the fit (``generator_fit_seconds`` is the fit's own time, also on a hit)."""
        out = {"generator_fit_seconds": float(self.seconds), "generator_fit_from_cache": float(self.from_cache)}
        if self.final_loss is not None:
            out["generator_fit_final_loss"] = float(self.final_loss)
        return out


def ensure_fitted(
    generator: Generator,
    images: torch.Tensor,
    labels: torch.Tensor,
    cache: FitCache,
    *,
    seed: int,
    quiet: bool = False,
    log_metrics: Callable[..., None] = lambda metrics, step=None: None,
    log_params: Callable[[dict[str, Any]], None] = lambda params: None,
    checkpoint_every: float = 0.0,
) -> FitInfo | None:
    """Fit ``generator`` on exactly ``images``/``labels`` — or load that fit from ``cache`` — and log it.

    Call it with the run's sampled real training images after the validation carve, nothing else.
    Does nothing (returns ``None``) for a generator that does not learn. Sets ``generator.fit_key``.

    Args:
        generator: the built (and bound) generator.
        images: ``(N, 1, H, W)`` uint8 — the run's sample.
        labels: ``(N,)`` int64.
        cache: where fitted states live (:func:`fit_cache_for` gives the run's).
        seed: the fit's seed (the run seed).
        quiet: no progress bar.
        log_metrics: ``log_metrics(metrics, step=...)`` of the MLflow run; gets ``generator_fit_loss``
            per step from the generator, then the summary metrics.
        log_params: ``log_params(params)`` of the MLflow run.
        checkpoint_every: seconds between checkpoints of a fit whose ``fit()`` takes a ``checkpoint``
            (0 = none); a killed fit's rerun continues from its last checkpoint (:mod:`synthmed.checkpoints`).
    """
    if not generator.learns:
        return None
    if len(images) == 0:
        raise SynthmedError(f"generator {generator.name!r} learns but the run's sample is empty — raise real_frac")
    check_open_set(generator, images)
    fingerprint = fit_fingerprint(images, labels)
    key = fit_key(generator, fingerprint)
    with contextlib.ExitStack() as held:
        if not cache.has(generator.name, key):  # a finished fit is read without waiting (written atomically)
            held.enter_context(cache.lock(generator.name, key))
        if cache.has(generator.name, key):  # also when another process finished it while this one waited
            stored = cache.load(generator.name, key)
            generator.load_state_dict(stored["state"])
            meta = stored["meta"]
            info = FitInfo(key, fingerprint, True, float(meta.get("seconds", 0.0)), int(meta.get("steps", 0)),
                           len(images), meta.get("final_loss"))
        else:
            info = _fit(generator, images, labels, cache, key, fingerprint, seed, quiet, log_metrics,
                        cache.checkpoint(generator.name, key, checkpoint_every))
    generator.fit_key = key
    params = {**info.params(), "generator_open_set": bool(generator.open_set)}
    if generator.init_provenance:
        params["generator_init"] = json.dumps(generator.init_provenance, sort_keys=True, default=str)
    log_params(params)
    log_metrics(info.metrics())
    return info


def init_sidecar(checkpoint: str | os.PathLike[str]) -> Path:
    """The JSON sidecar declaring a warm-start checkpoint's training data: ``<checkpoint>.json``.

    Its ``"training_sources"`` key lists the :func:`~synthmed.generators.base.source_hash` of every
    image the checkpoint was trained on (at the size fed to the model). Without it the training data
    is unknown and the run is open-set.
    """
    return Path(f"{checkpoint}.json")


def check_open_set(generator: Generator, images: torch.Tensor) -> bool:
    """Decide ``generator.open_set`` for a warm start (``generator.init_provenance`` set) on this sample.

    Closed only when the checkpoint's sidecar lists its training images and all of them are in the
    sample; unknown or wider training data makes the run open-set (it may carry information from
    real images the experiment pretends not to have). Records the reason in ``init_provenance``.
    """
    provenance = generator.init_provenance
    if not provenance:
        generator.open_set = False
        return False
    sidecar = init_sidecar(provenance["init"])
    declared = None
    if sidecar.is_file():
        try:
            declared = json.loads(sidecar.read_text()).get("training_sources")
        except (OSError, ValueError, AttributeError) as exc:
            raise SynthmedError(f"warm-start sidecar {sidecar} is unreadable ({exc}) — fix or delete it") from exc
    if declared is None:
        reason = f"training data unknown (no {sidecar.name} listing training_sources)"
    else:
        outside = set(map(str, declared)) - {source_hash(image) for image in images}
        reason = f"{len(outside)} training image(s) outside the run's sample" if outside else ""
    generator.open_set = bool(reason)
    provenance["open_set_reason"] = reason or "none: trained only on images of this sample"
    return generator.open_set


def _step_logger(log_metrics: Callable[..., None]) -> Callable[[dict[str, float], int], None]:
    """``log(metrics, step)`` over a ``log_metrics`` that may not take ``step`` (a policy context's no-op)."""
    try:
        takes_step = "step" in inspect.signature(log_metrics).parameters
    except (TypeError, ValueError):
        takes_step = True
    return (lambda m, step: log_metrics(m, step=step)) if takes_step else (lambda m, step: log_metrics(m))


def takes_checkpoint(generator: Generator) -> bool:
    """Whether ``generator.fit`` takes a ``checkpoint`` (a resumable fit; the hook is optional for plugins)."""
    try:
        return "checkpoint" in inspect.signature(generator.fit).parameters
    except (TypeError, ValueError):
        return False


def _fit(generator: Generator, images: torch.Tensor, labels: torch.Tensor, cache: FitCache, key: str,
         fingerprint: str, seed: int, quiet: bool, log_metrics: Callable[..., None],
         checkpoint: Checkpointer) -> FitInfo:
    start = time.perf_counter()
    losses: list[float] = []

    def log(metrics: dict[str, float], step: int) -> None:
        if "generator_fit_loss" in metrics:
            losses.append(float(metrics["generator_fit_loss"]))
        step_log(metrics, step)

    step_log = _step_logger(log_metrics)
    if takes_checkpoint(generator):  # its loop checks for a stop at every step and checkpoints before raising it
        with interrupts.deferred():
            result = generator.fit(images, labels.long(), seed=int(seed), progress=not quiet, log=log,
                                   checkpoint=checkpoint) or {}
        if checkpoint.saves or checkpoint.resumed_step is not None:
            log({"generator_checkpoint_seconds": checkpoint.seconds, "generator_checkpoint_saves": checkpoint.saves,
                 "generator_fit_resumed_at": float(checkpoint.resumed_step or 0)}, int(result.get("steps", 0)))
    else:
        result = generator.fit(images, labels.long(), seed=int(seed), progress=not quiet, log=log) or {}
    seconds = time.perf_counter() - start + checkpoint.elapsed_before  # a resumed fit: its earlier attempts too
    final = result.get("final_loss", losses[-1] if losses else None)
    info = FitInfo(key, fingerprint, False, seconds, int(result.get("steps", len(losses))), len(images),
                   None if final is None else float(final))
    meta = {**asdict(info), "generator": generator.name, "version": generator.version,
            "fit_params": generator.fit_params(), "created": time.time()}
    cache.store(generator.name, key, generator.state_dict(), meta)
    checkpoint.clear()  # the fitted state is stored: the checkpoint has served
    return info


def fit_cache_for(config: Any) -> FitCache:
    """The run's fit cache: under the generation cache root (``config.cache_dir``, env, user dir)."""
    return FitCache(GenerationCache.from_config(config).root)
