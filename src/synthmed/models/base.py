"""The model-factory contract (Chapter 5): one class per architecture."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Callable, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import nn

    from synthmed.config import Config


class ModelFactory(ABC):
    """Builds a classifier for ``(B, 1, H, W)`` float input in ``[0, 1]`` with ``num_classes`` logits.

    Subclasses set ``name``, implement :meth:`create` and say where Grad-CAM should look
    (:meth:`gradcam_target_layers`, and :meth:`gradcam_reshape_transform` for token models).
    """

    name: ClassVar[str]
    #: True when ``pretrained=True`` is meaningful for this architecture.
    supports_pretrained: ClassVar[bool] = False

    @abstractmethod
    def create(self, num_classes: int, image_size: int, config: Config) -> nn.Module:
        """Return a fresh model (pretrained weights loaded when ``config.pretrained``)."""

    def training_forward(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """What training calls on each batch for the logits: ``model`` itself, unless the architecture
        knows a cheaper way to compute the same function, with the same gradients.

        Evaluation, Grad-CAM and the logged model always use ``model``.
        """
        return model

    def gradcam_target_layers(self, model: nn.Module) -> list[nn.Module]:
        """The layers Grad-CAM reads activations and gradients from."""
        raise NotImplementedError(f"model {self.name!r} declares no Grad-CAM target layer")

    def gradcam_reshape_transform(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Turns a token sequence into a ``(B, C, h, w)`` map; ``None`` for conv nets."""
        return None
