"""``check_model_factory``: the model-factory contract, on tiny inputs on the CPU."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from synthmed.config import Config
from synthmed.models.base import ModelFactory
from synthmed.testing._contract import ContractReport, expect, plugin_name, run_rules, select

__all__ = ["MODEL_RULES", "check_model_factory"]

B, C = 4, 4  # batch size, classes
SIZES = (32, 64)  # multiples of a ViT's 16-pixel patch
GRADCAM_SIZE = 64


@dataclass
class _Subject:
    factory: ModelFactory
    config: Config  # the caller's options; model and image_size are set per model

    def create(self, size: int) -> nn.Module:
        return self.factory.create(C, size, dataclasses.replace(self.config, image_size=size))


# --- the rules, in the order they are checked ------------------------------------------------------
def finite_logits_and_gradients(s: _Subject) -> None:
    """``create()`` gives a model of ``(B, 1, H, W)`` input in ``[0, 1]`` to finite ``(B, classes)`` logits, with a
    finite gradient for every trainable parameter."""
    for size in SIZES:
        model = s.create(size)
        logits = model(torch.rand(B, 1, size, size))  # (B, 1, S, S) in [0, 1]
        expect(isinstance(logits, torch.Tensor) and tuple(logits.shape) == (B, C),
               f"at image_size={size}, {B} images and {C} classes gave logits of shape "
               f"{tuple(getattr(logits, 'shape', ()))}, not {(B, C)}")
        expect(bool(torch.isfinite(logits).all()), f"at image_size={size} the logits are not all finite")
        nn.functional.cross_entropy(logits, torch.arange(B) % C).backward()
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        expect(bool(trainable), "the model has no trainable parameter")
        bad = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
        expect(not bad, f"at image_size={size} these parameters got no finite gradient: {', '.join(bad[:5])}")


def channels_last_bf16(s: _Subject) -> None:
    """The model runs channels-last under bf16 autocast (how training runs it on a GPU) to finite logits."""
    model = s.create(SIZES[0]).to(memory_format=torch.channels_last)
    x = torch.rand(B, 1, SIZES[0], SIZES[0]).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    expect(tuple(logits.shape) == (B, C) and bool(torch.isfinite(logits.float()).all()),
           f"channels-last under bf16 autocast gave logits {tuple(logits.shape)}, finite: "
           f"{bool(torch.isfinite(logits.float()).all())}")


def gradcam_target_layers(s: _Subject) -> None:
    """``gradcam_target_layers()`` names layers inside the model, and the last one (through
    ``gradcam_reshape_transform()``) gives ``(B, C, h, w)`` maps."""
    model = s.create(GRADCAM_SIZE)
    layers = s.factory.gradcam_target_layers(model)
    expect(bool(layers), "gradcam_target_layers() returned no layer")
    inside = {id(m) for m in model.modules()}
    expect(all(id(layer) in inside for layer in layers), "a layer gradcam_target_layers() returned is not in the model")
    seen: list[torch.Tensor] = []
    handle = layers[-1].register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        model(torch.rand(B, 1, GRADCAM_SIZE, GRADCAM_SIZE))
    finally:
        handle.remove()
    expect(bool(seen), "the last Grad-CAM target layer did not run in the forward pass")
    transform = s.factory.gradcam_reshape_transform(model)
    activation = seen[0] if transform is None else transform(seen[0])
    expect(isinstance(activation, torch.Tensor) and activation.ndim == 4 and activation.shape[0] == B,
           f"the last target layer gives {tuple(getattr(activation, 'shape', ()))}"
           f"{'' if transform is None else ' after the reshape transform'}, not (B={B}, C, h, w) maps")


#: The model-factory contract: rule name → check, in order.
MODEL_RULES = {
    "finite-logits-and-gradients": finite_logits_and_gradients,
    "channels-last-bf16": channels_last_bf16,
    "gradcam-target-layers": gradcam_target_layers,
}


def check_model_factory(cls: type[ModelFactory], /, *, rules: Iterable[str] | None = None,
                        **options: Any) -> ContractReport:
    """Check a model-factory class against synthmed's model contract (:data:`MODEL_RULES`).

    Creates models of 4 classes for 32 and 64 px inputs and checks each rule on the CPU, in
    seconds. Weights are drawn under a fixed seed, without touching torch's global RNG.

    Args:
        cls: the :class:`~synthmed.models.base.ModelFactory` subclass.
        rules: check only these rules (names in :data:`MODEL_RULES`); all by default.
        **options: :class:`~synthmed.config.Config` fields for ``create()``'s config (``dropout=0.2``);
            ``model`` and ``image_size`` are the check's.

    Returns:
        What was checked.

    Raises:
        ContractError: a rule is broken; the message names the model and the rule.
    """
    __tracebackhide__ = True  # under pytest, a failure points at the caller's line
    if not (isinstance(cls, type) and issubclass(cls, ModelFactory)):
        raise TypeError(f"check_model_factory takes a synthmed.models.base.ModelFactory subclass, got {cls!r}")
    taken = sorted({"model", "image_size"} & set(options))
    if taken:
        raise ValueError(f"check_model_factory sets {' and '.join(taken)} itself; pass other Config fields only")
    selected = select(MODEL_RULES, rules, "model")
    name = plugin_name(cls)
    subject = _Subject(cls(), Config(model=name, **options))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return run_rules("model", name, selected, subject)
