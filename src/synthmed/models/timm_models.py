"""ResNet-18 and a small Vision Transformer through timm (Chapter 5.2 and 5.3).

Both take 1-channel input of any square size and end in a fresh ``num_classes`` head. With
``pretrained=true`` the weights come, in this order, from

1. ``weights`` (``--weights PATH``): a timm state_dict file (``.pth``/``.bin``/``.safetensors``,
   e.g. ``torch.save(timm.create_model("resnet18", pretrained=True).state_dict(), PATH)``),
   3-channel ImageNet or already 1-channel;
2. the Hugging Face cache, when timm's default weights for the architecture are already there;
3. a download through timm's normal loading, after a quick reachability probe of the hub.

Offline (``HF_HUB_OFFLINE=1`` or the hub unreachable) with none of these, :meth:`create` fails in
seconds with a :class:`SynthmedError` instead of timm's ~45 s of retries. timm adapts the first
conv of a 3-channel checkpoint to 1 channel by summing over its input channels, resamples a ViT's
position embeddings to the new patch grid, and drops a head of another class count.
"""

from __future__ import annotations

import functools
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from synthmed.config import TRUE_WORDS
from synthmed.errors import SynthmedError
from synthmed.hookspecs import hookimpl
from synthmed.models.base import ModelFactory
from synthmed.paths import check_file_to_read

if TYPE_CHECKING:
    import torch
    from torch import nn

    from synthmed.config import Config

PROBE_TIMEOUT_S = 3.0  # how long the hub reachability probe may take
WEIGHTS_FIX = "pass a timm state_dict file this user may read: --weights PATH (weights), or drop --weights"


class TimmModel(ModelFactory):
    """A timm architecture as a synthmed model; subclass and set ``name`` and ``arch``.

    Subclasses may override :meth:`timm_kwargs` (extra ``timm.create_model`` arguments) and
    :meth:`check_image_size`.
    """

    arch: ClassVar[str]  # timm model name
    supports_pretrained = True

    def timm_kwargs(self, image_size: int) -> dict[str, Any]:
        """Extra keyword arguments for ``timm.create_model`` (e.g. ``img_size``)."""
        return {}

    def check_image_size(self, image_size: int) -> None:
        """Raise :class:`SynthmedError` when the architecture cannot take ``image_size``."""

    def create(self, num_classes: int, image_size: int, config: Config) -> nn.Module:
        self.check_image_size(image_size)
        if config.weights and not config.pretrained:
            raise SynthmedError(
                f"weights={config.weights!r} is set but pretrained=false — "
                "add --pretrained to load that file, or drop --weights"
            )
        if config.pretrained and config.weights:  # a wrong path fails before timm is even imported
            weights = Path(config.weights).expanduser()
            check_file_to_read(weights, f"weights file {str(weights)!r} for model {self.name!r}", WEIGHTS_FIX)
        import timm  # heavy; only building a timm model needs it, and every run registers this plugin

        kwargs = dict(in_chans=1, num_classes=num_classes, **self.timm_kwargs(image_size))
        if config.dropout:
            kwargs["drop_rate"] = config.dropout
        if not config.pretrained:
            return timm.create_model(self.arch, pretrained=False, **kwargs)
        if config.weights:
            return self._from_file(Path(config.weights).expanduser(), num_classes, kwargs)
        cached = _cached_default_weights(self.arch)
        if cached is not None:
            return self._from_file(Path(cached), num_classes, kwargs)
        _check_hub_reachable(self.name, self.arch)
        return timm.create_model(self.arch, pretrained=True, **kwargs)

    def _from_file(self, path: Path, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
        """Load ``path`` through timm's own pretrained path (conv adaptation, pos-embed resampling)."""
        import timm  # heavy; only building a timm model needs it, and every run registers this plugin

        check_file_to_read(path, f"weights file {str(path)!r} for model {self.name!r}", WEIGHTS_FIX)
        cfg = timm.models.get_pretrained_cfg(self.arch)
        try:
            state = timm.models.load_state_dict(str(path))
        except OSError as exc:
            raise SynthmedError(f"weights file {str(path)!r} cannot be read ({exc.strerror or exc}) — {WEIGHTS_FIX}") from exc
        except Exception as exc:  # unpickling / safetensors errors vary by format
            raise SynthmedError(f"cannot read weights file {str(path)!r}: {exc}") from exc
        conv_key = f"{cfg.first_conv}.weight"
        if conv_key not in state:
            raise SynthmedError(
                f"weights file {str(path)!r} has no {conv_key!r}: it is not a timm {self.arch} "
                f"state_dict (save one with torch.save(timm.create_model({self.arch!r}).state_dict(), PATH))"
            )
        overlay: dict[str, Any] = {
            "file": str(path),
            # the file's own input channels (3 for ImageNet, 1 for an adapted copy)
            "input_size": (state[conv_key].shape[1], *cfg.input_size[1:]),
        }
        head_key = f"{cfg.classifier}.weight" if isinstance(cfg.classifier, str) else None
        if head_key in state and state[head_key].shape[0] == num_classes:
            overlay["num_classes"] = num_classes  # a matching head is kept, others re-initialised
        try:
            model = timm.create_model(self.arch, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        except RuntimeError as exc:  # size mismatch in load_state_dict
            raise SynthmedError(
                f"weights file {str(path)!r} does not fit model {self.name!r} ({self.arch}): {exc}"
            ) from exc
        _check_same_keys(model, state, path, self.arch, head=cfg.classifier)
        return model


class ResNet18(TimmModel):
    """``--model resnet18``: timm's ResNet-18; Grad-CAM reads its last residual block."""

    name = "resnet18"
    arch = "resnet18"

    def gradcam_target_layers(self, model: nn.Module) -> list[nn.Module]:
        return [model.layer4[-1]]


class ViT(TimmModel):
    """``--model vit``: ViT-Tiny/16 (5.7 M parameters) built for ``image_size`` x ``image_size``.

    ``img_size`` is passed to timm, so a 128-pixel image is an 8 x 8 grid of 16-pixel patches;
    the image size must be a multiple of the patch size.
    """

    name = "vit"
    arch = "vit_tiny_patch16_224"
    patch_size: ClassVar[int] = 16

    def timm_kwargs(self, image_size: int) -> dict[str, Any]:
        return {"img_size": image_size}

    def check_image_size(self, image_size: int) -> None:
        p = self.patch_size
        if image_size < p or image_size % p:
            nearest = sorted({max(p, image_size // p * p), (image_size // p + 1) * p})
            raise SynthmedError(
                f"model 'vit' ({self.arch}) needs image_size to be a multiple of its patch size {p}; "
                f"got image_size={image_size} — use {' or '.join(map(str, nearest))}"
            )

    def gradcam_target_layers(self, model: nn.Module) -> list[nn.Module]:
        return [model.blocks[-1].norm1]

    def gradcam_reshape_transform(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        h, w = model.patch_embed.grid_size
        return functools.partial(tokens_to_map, prefix=model.num_prefix_tokens, h=h, w=w)


def tokens_to_map(tokens: torch.Tensor, *, prefix: int, h: int, w: int) -> torch.Tensor:
    """ViT tokens ``(B, prefix + h*w, C)`` → patch feature map ``(B, C, h, w)``."""
    x = tokens[:, prefix:, :]  # (B, h*w, C): drop class/register tokens
    return x.reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)  # (B, C, h, w)


# --- weight sources ----------------------------------------------------------------------------
def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE``)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE_WORDS:
        return True
    from huggingface_hub import constants  # heavy; only finding pretrained weights needs it

    return bool(constants.HF_HUB_OFFLINE)


def _cached_default_weights(arch: str) -> str | None:
    """Path of timm's default weights for ``arch`` in the Hugging Face cache, if already there."""
    import timm  # heavy; only building a timm model needs it, and every run registers this plugin
    from huggingface_hub import try_to_load_from_cache  # heavy; only finding pretrained weights needs it

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or not cfg.hf_hub_id:
        return None
    repo, _, revision = cfg.hf_hub_id.partition("@")
    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    cache_dir = os.environ.get("HF_HUB_CACHE") or None  # read now, not at huggingface_hub import
    for filename in names:
        found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir, revision=revision or None)
        if isinstance(found, str):
            return found
    return None


def _check_hub_reachable(name: str, arch: str) -> None:
    """Fail fast, naming the fixes, when timm's weights cannot be downloaded."""
    from huggingface_hub import constants  # heavy; only finding pretrained weights needs it

    if hub_offline():
        reason = "HF_HUB_OFFLINE is set"
    else:
        reason = _probe(constants.ENDPOINT)
        if reason is None:
            return
    raise SynthmedError(
        f"model {name!r}: pretrained=true needs timm's {arch} weights, which are not in the "
        f"Hugging Face cache, and the hub cannot be reached ({reason}) — pass --weights PATH "
        f"(a timm state_dict file, e.g. torch.save(timm.create_model({arch!r}, pretrained=True)"
        ".state_dict(), PATH) on a machine with internet) or set pretrained=false"
    )


def _probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """``None`` when ``url`` answers within ``timeout`` seconds, else why not."""
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # a server answered: the network works
        except (OSError, ValueError) as exc:
            outcome.append(f"{url}: {exc}")

    thread = threading.Thread(target=probe, daemon=True)  # DNS lookups ignore `timeout`
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0] if outcome else f"{url}: no answer within {timeout:.0f} s"


def _check_same_keys(model: nn.Module, state: dict[str, Any], path: Path, arch: str, head: Any) -> None:
    """A file of another architecture must not half-load silently (timm loads non-strictly)."""
    heads = (head,) if isinstance(head, str) else tuple(head or ())
    ours = {k for k in model.state_dict() if not k.startswith(tuple(f"{h}." for h in heads))}
    theirs = {k for k in state if not k.startswith(tuple(f"{h}." for h in heads))}
    missing, unexpected = sorted(ours - theirs), sorted(theirs - ours)
    if missing or unexpected:
        raise SynthmedError(
            f"weights file {str(path)!r} is not a timm {arch} state_dict: "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )


@hookimpl
def register_models() -> list[type[ModelFactory]]:
    return [ResNet18, ViT]
