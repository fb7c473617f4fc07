"""The generator contract (Chapter 2.2 / 6.3): real source images in, synthetic variations out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from synthmed.config import Config


class Generator(ABC):
    """Makes variations of real images.

    Subclasses set ``name``, declare whether they send images off this machine
    (``sends_data_off_machine``) and what an image costs (:attr:`cost_per_image_usd`), expose the
    parameters that define their output (:meth:`output_params`, part of the cache key) and
    implement :meth:`generate`.
    """

    name: ClassVar[str]
    #: True when source images leave this machine (an API): needs ``allow_external``.
    sends_data_off_machine: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: Config) -> Generator:
        """Build the generator for a run from ``config.generator_params()`` (strings)."""
        return cls(**config.generator_params())

    @property
    def cost_per_image_usd(self) -> float | None:
        """Estimated price of one generated image in USD, or ``None`` when free."""
        return None

    def output_params(self) -> dict[str, Any]:
        """Params that change the output (model, size, prompt...); part of the cache key."""
        return {}

    @abstractmethod
    def generate(
        self, images: torch.Tensor, labels: torch.Tensor, *, variation: int, seed: int
    ) -> torch.Tensor:
        """Make variation number ``variation`` of each source image.

        Args:
            images: ``(B, 1, H, W)`` uint8 sources.
            labels: ``(B,)`` int64 class indices (most generators ignore them).
            variation: which variation (0, 1, ...) of each source; with ``seed`` it makes
                the output reproducible where the generator allows.
            seed: the run's generation seed.

        Returns:
            ``(B, 1, H, W)`` uint8 variations, same size as the sources.
        """
