"""The augmentation-policy contract (Chapter 6)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from synthmed.options import construct

if TYPE_CHECKING:
    import pluggy
    import torch

    from synthmed.config import Config
    from synthmed.data.base import ImageSet, Splits
    from synthmed.generators.base import Generator


@dataclass
class PolicyContext:
    """What a policy may look at when it builds the training set of one run.

    Attributes:
        config: the run's config.
        splits: the full dataset (``splits.train`` is the *full* real training split, for sizes
            and class proportions only; a policy must draw sources from the ``real`` subset).
        pm: the plugin manager (to look up generators and base policies by name).
        log_metrics / log_artifact / log_params: MLflow hooks of the current run (no-ops outside one).
        validation: the validation carve taken from the run's sample, or ``None``. A policy that fills
            the set up to the full training size fills it to that size less the carve, so that no
            synthetic image stands in for a validation image (``none`` at 1.0 trains on the same less).
        generator: the run's one generator (for a policy with ``uses_generator``), built, bound
            and — when it learns — fitted on the ``real`` the policy receives, with its fit
            logged; the run hands the same object to its Grad-CAM panel. ``None`` when the
            caller made none (a policy called directly): the policy then makes its own with
            :func:`synthmed.generators.build.fitted_generator`.
    """

    config: Config
    splits: Splits
    pm: Any = None
    log_metrics: Callable[[dict[str, float]], None] = lambda m: None
    log_params: Callable[[dict[str, Any]], None] = lambda p: None
    log_artifact: Callable[[str, str], None] = lambda local_path, artifact_dir: None
    extra: dict[str, Any] = field(default_factory=dict)
    generator: Generator | None = None
    validation: ImageSet | None = None  # the run's validation carve: its images are not refilled (plan_for)


class AugmentationPolicy(ABC):
    """Turns the sampled real images into what the model trains on.

    The one abstract method is :meth:`augment`, applied to every training batch. Policies that
    change the training set itself (the synthetic policy) override :meth:`training_set` (once
    per run) and/or :meth:`epoch_set` (each epoch).
    """

    name: ClassVar[str]
    #: True when :meth:`training_set` uses the run's generator: the run then builds and fits it
    #: once and hands it over as ``PolicyContext.generator``.
    uses_generator: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: Config, pm: pluggy.PluginManager | None = None) -> AugmentationPolicy:
        """Build the policy for a run from ``config.policy_params()`` (strings, as ``__init__`` keywords).

        Args:
            config: the run's config.
            pm: the plugin manager the run uses, for policies that look up other plugins by
                name (the synthetic policy's generator and base policy).

        Override to read more of the config; unknown options are refused naming the accepted ones.
        """
        return construct(cls, config.policy_params(), kind="policy", field="policy_options")

    def training_set(self, real: ImageSet, ctx: PolicyContext) -> ImageSet:
        """The set to train on, built once per run from the sampled ``real`` images."""
        return real

    def epoch_set(self, train: ImageSet, epoch: int, rng: torch.Generator) -> ImageSet:
        """The set for one epoch (default: the same every epoch)."""
        return train

    @abstractmethod
    def augment(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Transform one batch: ``(B, 1, H, W)`` uint8 in, same shape and dtype out."""

    def augment_many(self, batches: list[torch.Tensor], rngs: list[torch.Generator]) -> list[torch.Tensor]:
        """:meth:`augment` for the batches of k simulations trained at once, each with its own generator.

        The default calls :meth:`augment` on each. A policy that can transform them together (one
        call over all their images) overrides it; the result must equal the default's (to float rounding).
        """
        return [self.augment(images, rng) for images, rng in zip(batches, rngs)]
