"""The generation cache: content-addressed PNGs on disk, so no variation is ever paid for twice.

Layout: ``<root>/<generator name>/<key[:2]>/<key>.png`` where

    key = sha256(source hash | generator name | canonical JSON of output_params() | variation)

and the source hash is the sha256 of the source's uint8 bytes and shape (:func:`source_hash`).
PNG is lossless for uint8, and each file carries its provenance in a ``synthmed`` text chunk.
Writes are atomic (a temp file in the same folder, then :func:`os.replace`); :func:`fill` writes
each image the moment the generator yields it, so a crash or Ctrl-C loses nothing finished and a
rerun generates only what is missing. The root is ``config.cache_dir``, else
``$SYNTHMED_CACHE_DIR``, else ``<user cache dir>/synthmed/generations``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import platformdirs
import torch
from filelock import FileLock
from PIL import Image, PngImagePlugin
from tqdm.auto import tqdm

from synthmed.errors import SynthmedError
from synthmed.generators.base import Generator, source_hash
from synthmed.paths import TEMP_SUFFIX, atomic_write, refuse_file_in_the_way

if TYPE_CHECKING:
    from synthmed.config import Config

__all__ = ["CACHE_ENV", "FillResult", "FillStats", "GenerationCache", "cache_key", "fill", "generation_salt",
           "generation_seed", "generations_mode", "plan_keys"]

CACHE_ENV = "SYNTHMED_CACHE_DIR"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def cache_key(source: str, generator: str, params: dict[str, Any], variation: int, salt: str | None = None) -> str:
    """The content address of variation ``variation`` of the source with hash ``source``.

    ``salt`` (``sim<seed>`` under ``generations=per-simulation``) gives each simulation its own
    images; ``None`` (shared generations) keeps the address of earlier versions.
    """
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    tail = f"|{salt}" if salt else ""
    return hashlib.sha256(f"{source}|{generator}|{canonical}|{int(variation)}{tail}".encode()).hexdigest()


def generation_seed(source: str, variation: int, salt: str | None = None) -> int:
    """The seed handed to ``Generator.generate``: from (source hash, variation) and, per simulation, the salt."""
    tail = f":{salt}" if salt else ""
    return int(hashlib.sha256(f"{source}:{int(variation)}{tail}".encode()).hexdigest()[:15], 16)


def generation_salt(config: Config, generator: Generator) -> str | None:
    """``sim<seed>`` when ``config.generations`` resolves to per-simulation, else ``None`` (shared).

    ``auto`` is per-simulation for generators that cost nothing and shared for paid ones (a
    sweep of N simulations would pay N times).
    """
    return f"sim{config.seed}" if generations_mode(config, generator) == "per-simulation" else None


def generations_mode(config: Config, generator: Generator) -> str:
    """``config.generations`` with ``auto`` resolved for ``generator``; ``fixed`` for a generator whose
    images ignore the seed (``folder``: what a run is labelled must be what its images are)."""
    if generator.ignores_seed:
        return "fixed"
    if config.generations != "auto":
        return config.generations
    return "shared" if generator.cost_per_image_usd else "per-simulation"


class GenerationCache:
    """One cache folder. Cheap to build; nothing is read until asked."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser()

    @classmethod
    def from_config(cls, config: Config | None = None) -> GenerationCache:
        """``config.cache_dir``, else ``$SYNTHMED_CACHE_DIR``, else the user cache dir."""
        if config is not None and config.cache_dir:
            return cls(config.cache_dir).check_root()
        if os.environ.get(CACHE_ENV):
            return cls(os.environ[CACHE_ENV]).check_root()
        return cls(Path(platformdirs.user_cache_dir("synthmed")) / "generations").check_root()

    def check_root(self) -> GenerationCache:
        """Refuse a root that is a file, or lies below one (it can never be a folder); returns ``self``.

        Only that: a read-only or full cache is fine as long as everything asked for is in it.
        """
        refuse_file_in_the_way(self.root, f"generation cache {self.root}",
                               f"point the cache at a folder: --cache-dir PATH (cache_dir) or ${CACHE_ENV}")
        return self

    def path(self, generator: str, key: str) -> Path:
        if not _NAME.match(generator):
            raise SynthmedError(f"generator name {generator!r} cannot name a cache folder — use letters, digits, _.-")
        return self.root / generator / key[:2] / f"{key}.png"

    def has(self, generator: str, key: str) -> bool:
        return self.path(generator, key).is_file()

    def load(self, generator: str, key: str) -> torch.Tensor:
        """The cached ``(1, H, W)`` uint8 image."""
        path = self.path(generator, key)
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("L"), dtype=np.uint8)
        except (OSError, SyntaxError) as exc:
            raise SynthmedError(
                f"cache entry {path} is unreadable ({exc}) — delete that file and rerun to regenerate it"
            ) from exc
        return torch.from_numpy(array.copy()).unsqueeze(0)

    def store(self, generator: str, key: str, image: torch.Tensor, meta: dict[str, Any], *, durable: bool = False) -> Path:
        """Write one ``(1, H, W)`` uint8 image atomically; ``durable`` also fsyncs it (paid images)."""
        path = self.path(generator, key)
        with self._writing():
            path.parent.mkdir(parents=True, exist_ok=True)
        info = PngImagePlugin.PngInfo()
        info.add_text("synthmed", json.dumps(meta, sort_keys=True, default=str))
        pil = Image.fromarray(image[0].contiguous().cpu().numpy(), mode="L")
        try:
            atomic_write(path, lambda fh: pil.save(fh, format="PNG", pnginfo=info), durable=durable)
        except BaseException as exc:  # never a half-written file: the temp file went, the entry never appeared
            if isinstance(exc, OSError):
                with self._writing():
                    raise exc
            raise
        return path

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn 'disk full', 'read-only', 'permission denied' and 'a file is in the way' into an error naming the folder."""
        try:
            yield
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.EEXIST):
                self.check_root()  # a file at or above the root: say so (else the error is not ours)
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            what = "is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "cannot be written"
            raise SynthmedError(
                f"generation cache {self.root} {what} ({exc.strerror}) — free space there or point the "
                f"cache at a writable folder with space: --cache-dir PATH (cache_dir) or ${CACHE_ENV}; "
                "images finished so far are kept, no partial file is left"
            ) from exc

    def lock(self, generator: str) -> Any:
        """An inter-process lock per generator: parallel runs never generate the same key twice."""
        folder = self.root / generator
        with self._writing():
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK):  # FileLock would wait forever on a lock it cannot create
                raise PermissionError(13, "Permission denied", str(folder))
        return FileLock(str(folder / ".lock"))

    def _entries(self, generator: str | None = None) -> Iterator[tuple[str, Path]]:
        if not self.root.is_dir():
            self.check_root()  # a file is not an empty cache
            return
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if generator is None or folder.name == generator:
                for path in folder.glob("*/*"):
                    if path.suffix in (".png", TEMP_SUFFIX):
                        yield folder.name, path

    def stats(self) -> dict[str, dict[str, int]]:
        """Per generator: ``{"entries": n, "bytes": b}`` (unfinished temp files not counted)."""
        out: dict[str, dict[str, int]] = {}
        for name, path in self._entries():
            if path.suffix == ".png":
                row = out.setdefault(name, {"entries": 0, "bytes": 0})
                row["entries"] += 1
                row["bytes"] += path.stat().st_size
        return out

    def prune(self, *, generator: str | None = None, older_than_days: float | None = None,
              dry_run: bool = False) -> dict[str, int]:
        """Delete entries (of ``generator`` only / older than ``older_than_days``); returns counts.

        ``dry_run`` only counts. Unfinished temp files of interrupted writes go too.
        """
        cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
        removed = {"entries": 0, "bytes": 0}
        for _, path in list(self._entries(generator)):
            stat = path.stat()
            if cutoff is not None and stat.st_mtime >= cutoff:
                continue
            if not dry_run:
                path.unlink()
            if path.suffix == ".png":
                removed["entries"] += 1
                removed["bytes"] += stat.st_size
        return removed


@dataclass
class FillStats:
    """What one :func:`fill` did: cache hits, misses, images made and paid for, refusals."""

    hits: int = 0
    misses: int = 0
    generated: int = 0
    paid_images: int = 0
    cost_usd: float = 0.0
    refused: int = 0
    seconds: float = 0.0  # wall time spent making the misses (0 when everything came from the cache)

    def metrics(self) -> dict[str, float]:
        """MLflow metric names (``synthetic_cache_hits``, ...)."""
        return {
            "synthetic_generation_seconds": float(self.seconds),
            "synthetic_cache_hits": float(self.hits),
            "synthetic_cache_misses": float(self.misses),
            "synthetic_paid_images": float(self.paid_images),
            "synthetic_cost_usd": float(self.cost_usd),
            "synthetic_refused": float(self.refused),
        }


@dataclass
class FillResult:
    """Per request: its image (``None`` when refused), cache key and source hash; plus stats."""

    images: list[torch.Tensor | None]
    keys: list[str]
    source_hashes: list[str]
    stats: FillStats


def plan_keys(generator: Generator, sources: torch.Tensor, requests: Sequence[tuple[int, int]],
              salt: str | None = None) -> tuple[list[str], list[str]]:
    """Source hashes and cache keys of ``requests`` = ``(row in sources, variation)`` pairs."""
    params = generator.cache_params()  # output_params() + the fit key of a learning generator
    hashes: dict[int, str] = {}
    keys, srcs = [], []
    for row, variation in requests:
        if row not in hashes:
            hashes[row] = source_hash(sources[row])
        srcs.append(hashes[row])
        keys.append(cache_key(hashes[row], generator.name, params, variation, salt))
    return srcs, keys


def fill(
    cache: GenerationCache,
    generator: Generator,
    sources: torch.Tensor,
    labels: torch.Tensor,
    requests: Sequence[tuple[int, int]],
    *,
    quiet: bool = False,
    load: bool = True,
    salt: str | None = None,
) -> FillResult:
    """Return the requested variations, generating (and caching at once) only the missing ones.

    Args:
        cache: where variations live.
        generator: what makes them.
        sources: ``(B, 1, H, W)`` uint8 source images.
        labels: ``(B,)`` their labels.
        requests: ``(row in sources, variation index)`` pairs.
        quiet: no progress bar.
        load: read the hits from disk (``False``: only make sure they exist, e.g. ``synthmed generate``).
        salt: per-simulation salt of seeds and keys (:func:`generation_salt`); ``None`` = shared.
    """
    hashes, keys = plan_keys(generator, sources, requests, salt)
    out: list[Any] = [None] * len(requests)
    missing = [i for i, k in enumerate(keys) if not cache.has(generator.name, k)]
    stats = FillStats(hits=len(keys) - len(missing), misses=len(missing))
    if missing:
        first = {keys[i]: i for i in reversed(missing)}  # identical sources share a key: make it once
        with cache.lock(generator.name):
            todo = [i for i in first.values() if not cache.has(generator.name, keys[i])]  # others may have made some
            start = time.perf_counter()
            try:
                _generate(cache, generator, sources, labels, requests, hashes, keys, todo, out, stats, quiet, salt)
            finally:
                stats.seconds = time.perf_counter() - start
    if load:
        for i, key in enumerate(keys):
            if out[i] is None and cache.has(generator.name, key):
                out[i] = cache.load(generator.name, key)
    return FillResult(out, keys, hashes, stats)


def _generate(cache, generator, sources, labels, requests, hashes, keys, todo, out, stats, quiet, salt) -> None:  # noqa: ANN001
    """Run the generator over ``todo`` in batches (same source together), storing each result at once."""
    todo = sorted(todo, key=lambda i: (requests[i][0], requests[i][1]))
    step = max(1, int(generator.batch_size))
    with tqdm(total=len(todo), desc=f"generating ({generator.name})", unit="img", disable=quiet) as bar:
        writer = _Writer(cache, generator, sources, requests, hashes, keys, out, stats, bar)
        writer.salt = salt
        for start in range(0, len(todo), step):
            batch = todo[start : start + step]
            rows = [requests[i][0] for i in batch]
            variations = [requests[i][1] for i in batch]
            seeds = [generation_seed(hashes[i], requests[i][1], salt) for i in batch]
            results = generator.iter_generate(sources[rows], labels[rows], variations=variations, seeds=seeds)
            keep = lambda j, image, batch=batch: writer.keep(batch[j], image)  # noqa: E731
            item = None
            try:
                for item in results:
                    keep(*item)
            except KeyboardInterrupt as exc:
                if item is not None:
                    keep(*item)  # Ctrl-C may have hit mid-write: write it (again) — keep() is idempotent
                _hand_over(results, exc, keep)
                raise


class _Writer:
    """Stores each finished image the moment it arrives, and counts."""

    def __init__(self, cache, generator, sources, requests, hashes, keys, out, stats, bar):  # noqa: ANN001
        self.cache, self.generator, self.sources, self.requests = cache, generator, sources, requests
        self.hashes, self.keys, self.out, self.stats, self.bar = hashes, keys, out, stats, bar
        self.price = generator.cost_per_image_usd
        self.params = generator.cache_params()
        self.done: set[int] = set()
        self.salt: str | None = None

    def keep(self, i: int, image: Any) -> None:
        if i in self.done:
            return
        stats = self.stats
        if image is None:
            self.done.add(i)
            stats.refused += 1
        else:
            row, variation = self.requests[i]
            _check_output(self.generator, image, self.sources[row])
            meta = {"generator": self.generator.name, "params": self.params, "source": self.hashes[i],
                    "variation": variation, "salt": self.salt, "created": time.time()}
            self.cache.store(self.generator.name, self.keys[i], image, meta, durable=self.price is not None)
            self.done.add(i)
            self.out[i] = image
            stats.generated += 1
            if self.price is not None:
                stats.paid_images += 1
                stats.cost_usd += self.price
        self.bar.update(1)
        self.bar.set_postfix_str(f"${stats.cost_usd:.2f} spent" + (f", {stats.refused} refused" if stats.refused else ""))


def _hand_over(results: Any, exc: KeyboardInterrupt, keep: Any) -> None:
    """On Ctrl-C, let the generator yield work it already paid for (requests in flight), and store it."""
    throw = getattr(results, "throw", None)
    if throw is None:
        return
    try:
        item = throw(exc)
        while True:
            keep(*item)
            item = next(results)
    except StopIteration:
        return
    except KeyboardInterrupt as again:
        if again is not exc:
            raise


def _check_output(generator: Generator, image: Any, source: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or tuple(image.shape) != tuple(source.shape):
        got = f"{tuple(image.shape)} {image.dtype}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise SynthmedError(
            f"generator {generator.name!r} returned {got}, expected {tuple(source.shape)} uint8 — "
            "a bug in that generator plugin"
        )
