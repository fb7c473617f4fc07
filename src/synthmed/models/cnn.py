"""The thesis's basic CNN (Chapter 5.1), trained from scratch.

Two feature blocks of ``conv 3x3 (padding 1) → ReLU → 2x2 max-pool``, then a fully connected
net with two hidden layers (ReLU) and one output per class::

    (B, 1, S, S) → block1 → (B, 32, S/2, S/2) → block2 → (B, 64, S/4, S/4)
                 → flatten → 128 → ReLU → 64 → ReLU → num_classes logits

The thesis fixes the layout but not the widths; 32/64 channels and 128/64 hidden units are the
usual choices for a network of this size. The flattened size is computed from ``image_size``
(``64 * (S // 4) ** 2``: each pool halves and floors), so any square input size works.

The network is a named :class:`torch.nn.Sequential` of stock torch layers: it reads top to
bottom, and a model logged to MLflow (pickled) loads back with torch alone, no synthmed classes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from synthmed.errors import SynthmedError
from synthmed.hookspecs import hookimpl
from synthmed.models.base import ModelFactory

if TYPE_CHECKING:
    from synthmed.config import Config

CHANNELS = (32, 64)  # output channels of conv1 and conv2
HIDDEN = (128, 64)  # units of the two hidden fully connected layers


def basic_cnn(
    num_classes: int,
    image_size: int,
    channels: tuple[int, int] = CHANNELS,
    hidden: tuple[int, int] = HIDDEN,
    dropout: float = 0.0,
) -> nn.Sequential:
    """The basic CNN for 1-channel ``image_size`` x ``image_size`` input.

    Args:
        num_classes: number of output logits.
        image_size: side of the square input images (at least 4).
        channels: output channels of the two conv layers.
        hidden: units of the two hidden fully connected layers.
        dropout: with ``p > 0``, an ``nn.Dropout(p)`` before each fully connected layer (named
            ``drop0``, ``drop1``, ``drop2``); with 0 the network has no dropout layers at all.

    Returns:
        ``Sequential(block1, block2, classifier)``; each block is ``Sequential(conv, relu, pool)``.
    """
    def block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(OrderedDict(
            conv=nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),  # (B, c_out, H, W)
            relu=nn.ReLU(),  # not in-place: Grad-CAM hooks this output and its gradient
            pool=nn.MaxPool2d(2),  # (B, c_out, H // 2, W // 2)
        ))

    side = (image_size // 2) // 2  # two floor-halving max-pools

    def drop(i: int) -> dict[str, nn.Module]:
        return {f"drop{i}": nn.Dropout(dropout)} if dropout > 0 else {}

    return nn.Sequential(OrderedDict(
        block1=block(1, channels[0]),  # (B, 1, S, S) → (B, 32, S/2, S/2)
        block2=block(channels[0], channels[1]),  # → (B, 64, S/4, S/4)
        classifier=nn.Sequential(OrderedDict(
            flatten=nn.Flatten(),  # (B, 64 * (S/4)^2)
            **drop(0),
            fc1=nn.Linear(channels[1] * side * side, hidden[0]),  # (B, 128)
            relu1=nn.ReLU(),
            **drop(1),
            fc2=nn.Linear(hidden[0], hidden[1]),  # (B, 64)
            relu2=nn.ReLU(),
            **drop(2),
            out=nn.Linear(hidden[1], num_classes),  # (B, num_classes) logits
        )),
    ))


class CNN(ModelFactory):
    """``--model cnn``: the thesis's basic CNN, random initialisation only."""

    name = "cnn"
    supports_pretrained = False

    def create(self, num_classes: int, image_size: int, config: Config) -> nn.Module:
        if image_size < 4:
            raise SynthmedError(f"model 'cnn' needs image_size >= 4 (two 2x2 max-pools); got {image_size}")
        if config.pretrained or config.weights:
            raise SynthmedError(
                "model 'cnn' is trained from scratch and has no pretrained weights — "
                "set pretrained=false and no weights, or use --model resnet18 or vit"
            )
        return basic_cnn(num_classes, image_size, dropout=config.dropout)

    def training_forward(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """Each block as conv → max-pool → ReLU: the module's numbers, forward and backward, for less work.

        ReLU never lowers an order, so it commutes with a max: the pooled values are the same, and
        so is each gradient (where a window's maximum is positive it is the same element, and where
        it is not, both orders give it no gradient). ReLU then runs on a quarter of the elements and
        keeps no full-size output. ``tests/test_models.py`` checks equality to the last bit; docs/models.md
        gives the speed measured.
        """
        def forward(x: torch.Tensor) -> torch.Tensor:
            for block in (model.block1, model.block2):
                x = torch.relu(block.pool(block.conv(x)))
            return model.classifier(x)

        return forward

    def gradcam_target_layers(self, model: nn.Module) -> list[nn.Module]:
        """The second conv's ReLU: the rectified last-conv feature maps, at ``S/2`` resolution.

        The ReLU output (not the raw conv) is what the rest of the network sees, and it comes
        before the pool, so the heat map has twice the pooled resolution.
        """
        return [model.block2.relu]


@hookimpl
def register_models() -> list[type[ModelFactory]]:
    return [CNN]
