"""Where a pipeline's weights are, and a fingerprint of them — without loading a model.

A model is a local folder (a ``save_pretrained`` / ``huggingface-cli download`` layout with a
``model_index.json``) or a hub id. A hub id is looked up in the local hub cache first; only when
it is missing and the hub may be used (``HF_HUB_OFFLINE`` unset) is it downloaded. Offline, a
missing model fails at once with the commands that fetch it — never a wait on retries.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from synthmed.errors import SynthmedError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CONFIG_SUFFIXES = (".json", ".txt", ".model")  # configs, tokenizer vocab/merges
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx", ".msgpack")


@dataclass(frozen=True)
class Weights:
    """A located pipeline.

    Attributes:
        path: the local folder holding ``model_index.json``.
        revision: the hub commit of a hub snapshot, ``None`` for a user's folder.
        fingerprint: sha256 over every config/tokenizer file's bytes and a digest of every
            weight file (:func:`_weight_digest`) — another model, or retrained weights, differs.
        pipeline: the pipeline class named in ``model_index.json``.
        size: the side (px) the pipeline was trained at: UNet sample size x VAE scale factor.
    """

    path: Path
    revision: str | None
    fingerprint: str
    pipeline: str
    size: int


def locate(model: str, revision: str | None = None) -> Weights:
    """Find ``model`` (folder or hub id) on this machine, downloading a hub id only when online."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return _describe(folder, None, model)
    if not _HUB_ID.match(model) or model.startswith((".", "~", "/")):
        raise SynthmedError(
            f"generator 'sd-variation': model={model!r} is not a folder, nor a hub id (owner/name) — {how_to_get(model)}"
        )
    snapshot = _cached_snapshot(model, revision)
    if snapshot is None:
        snapshot = _download(model, revision)
    return _describe(snapshot, snapshot.name, model)


def how_to_get(model: str) -> str:
    """The commands that put ``model``'s weights on this machine, for error messages."""
    repo = model if _HUB_ID.match(model) else "stable-diffusion-v1-5/stable-diffusion-v1-5"
    return (f"on a machine with internet run `huggingface-cli download {repo} --local-dir /path/to/{repo.split('/')[-1]}` "
            f"(or `hf download ...`), copy the folder here and pass --generator-options model=/path/to/{repo.split('/')[-1]}")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cached_snapshot(model: str, revision: str | None) -> Path | None:
    """The hub cache's snapshot folder of ``model`` (no network), or ``None``."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, "model_index.json", revision=revision)
    return Path(found).parent if isinstance(found, str) else None


def _download(model: str, revision: str | None) -> Path:
    if _hub_offline():
        raise SynthmedError(
            f"generator 'sd-variation': the weights of {model!r} are not on this machine and the hub is off "
            f"(HF_HUB_OFFLINE is set) — {how_to_get(model)}"
        )
    from diffusers import DiffusionPipeline

    try:  # what from_pretrained would fetch (no fp16/ckpt duplicates)
        return Path(DiffusionPipeline.download(model, revision=revision))
    except Exception as exc:  # noqa: BLE001 - any hub/network failure becomes one actionable error
        raise SynthmedError(
            f"generator 'sd-variation': could not download {model!r} from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}) — {how_to_get(model)}"
        ) from exc


def _describe(folder: Path, revision: str | None, model: str) -> Weights:
    index = folder / "model_index.json"
    if not index.is_file():
        raise SynthmedError(
            f"generator 'sd-variation': {str(folder)!r} has no model_index.json, so it is not a diffusers pipeline "
            f"folder — {how_to_get(model)}"
        )
    pipeline = str(json.loads(index.read_text()).get("_class_name", ""))
    return Weights(folder, revision, _fingerprint(folder), pipeline, _native_size(folder))


def _fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue  # .cache/ and other hidden bookkeeping
        if path.suffix in _CONFIG_SUFFIXES:
            h.update(f"{rel}\0".encode() + path.read_bytes() + b"\0")
        elif path.suffix in _WEIGHT_SUFFIXES:
            h.update(f"{rel}\0{_weight_digest(path)}\0".encode())
    return h.hexdigest()


def _weight_digest(path: Path, block: int = 1 << 16, blocks: int = 32) -> str:
    """A weight file's content digest, cheap even for gigabytes.

    In the hub cache a snapshot's file links to ``blobs/<sha256 of its content>``: that name is
    the digest. A user's file is sampled: its size and ``blocks`` evenly spaced 64 KiB blocks
    (first and last included) — any retraining or fine-tune changes tensors throughout the file.
    """
    target = path.resolve()
    if path.is_symlink() and target.parent.name == "blobs":
        return target.name
    size = target.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(target, "rb") as f:
        for k in range(blocks):
            f.seek(max(0, (size - block) * k // (blocks - 1)))
            h.update(f.read(block))
    return h.hexdigest()


def _native_size(folder: Path) -> int:
    """UNet ``sample_size`` x VAE scale factor (512 for SD 1.5), from the configs alone."""
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise SynthmedError(f"generator 'sd-variation': {str(folder)!r} lacks a readable unet/ or vae/ config ({exc})") from exc
    sample = unet.get("sample_size", 64)
    sample = sample[0] if isinstance(sample, list) else sample
    return int(sample) * 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
