"""The generator contract (Chapter 2.2 / 6.3): real source images in, synthetic variations out."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Sequence

from synthmed.errors import SynthmedError
from synthmed.options import coerce_value, construct

if TYPE_CHECKING:
    import torch

    from synthmed.config import Config

__all__ = ["Generator", "coerce_option", "item_seed", "source_hash"]


class Generator(ABC):
    """Makes variations of real images.

    Subclasses set ``name``, declare whether they send images off this machine
    (``sends_data_off_machine``) and what an image costs (:attr:`cost_per_image_usd`), expose the
    parameters that define their output (:meth:`output_params`, part of the cache key) and
    implement :meth:`generate`. Options from ``--generator-options`` arrive as strings in
    ``__init__``: coerce them there (:func:`coerce_option`) and raise
    :class:`~synthmed.errors.SynthmedError` for bad values.
    """

    name: ClassVar[str]
    #: True when source images leave this machine (an API): needs ``allow_external``.
    sends_data_off_machine: ClassVar[bool] = False
    #: True when the output depends only on (image, variation, seed) — checked by contract tests.
    deterministic: ClassVar[bool] = False
    #: True when the output ignores the seed altogether (pre-made images): every simulation gets the
    #: same images whatever ``generations`` says, and the run's provenance says "fixed".
    ignores_seed: ClassVar[bool] = False
    #: How many items the cache hands to :meth:`iter_generate` at once.
    batch_size: int = 32
    #: True when the generator is fitted on the run's sampled real training images first
    #: (:meth:`fit`, driven by :func:`synthmed.generators.fitting.ensure_fitted`).
    learns: ClassVar[bool] = False
    #: Bump when the fitting or generating code changes what comes out: part of the fit key.
    version: ClassVar[str] = "1"
    #: The fitted state's key (set by ``ensure_fitted``); part of every generation cache key.
    fit_key: str | None = None
    #: True when the fitted state may carry information from images outside the run's sample
    #: (a warm start from a checkpoint of unknown or wider training data): the run is open-set.
    open_set: bool = False
    #: Where a warm start came from (``{"init": path, "sha256": ..., "open_set_reason": ...}``).
    init_provenance: dict[str, Any] | None = None

    @classmethod
    def from_config(cls, config: Config) -> Generator:
        """Build the generator for a run from ``config.generator_params()`` (strings).

        Callers use :func:`synthmed.generators.build.build_generator`, which also checks the
        external-data opt-in and binds the class names.
        """
        return construct(cls, config.generator_params(), kind="generator", field="generator_options")

    @property
    def cost_per_image_usd(self) -> float | None:
        """Estimated price of one generated image in USD, or ``None`` when free."""
        return None

    def output_params(self) -> dict[str, Any]:
        """Params that change the output (model, size, prompt...); part of the cache key.

        Must be JSON-serialisable and must never hold a secret (API keys): it is logged.
        """
        return {}

    def cache_params(self) -> dict[str, Any]:
        """What keys the generation cache: :meth:`output_params`, plus the fit key when it learns."""
        params = dict(self.output_params())
        if self.learns:
            if self.fit_key is None:
                raise SynthmedError(
                    f"generator {self.name!r} learns but was not fitted — call "
                    "synthmed.generators.fitting.ensure_fitted(...) on the run's sample before generating"
                )
            params["fit"] = self.fit_key
        return params

    # --- the optional fit step (only when ``learns``) -----------------------------------------------
    def fit(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        seed: int,
        progress: bool,
        log: Callable[[dict[str, float], int], None],
    ) -> dict[str, Any]:
        """Learn from the run's sampled real training images (after the validation carve) only.

        Called by :func:`synthmed.generators.fitting.ensure_fitted` on a fit-cache miss, never with
        a test, validation or unsampled image.

        Args:
            images: ``(N, 1, H, W)`` uint8.
            labels: ``(N,)`` int64.
            seed: the fit's seed (deterministic fits on the CPU must depend only on it and the data).
            progress: show a progress bar.
            log: ``log(metrics, step)``, e.g. ``log({"generator_fit_loss": 0.1}, 12)``.

        Returns:
            Info for the run, e.g. ``{"steps": 400, "final_loss": 0.05}``.

        A long fit can be made resumable by also taking a keyword argument ``checkpoint`` (a
        :class:`synthmed.checkpoints.Checkpointer`): call ``state = checkpoint.load()`` first and, when
        it is not ``None``, restore the loop from it; after every step call
        ``checkpoint.step(lambda: {...whole loop state...}, steps_done)``, which writes a checkpoint when
        one is due and ends the fit cleanly when the process was asked to stop (SIGTERM, Ctrl-C). A
        ``fit`` without it still works; a killed fit then restarts from step 0.
        """
        raise NotImplementedError(f"generator {self.name!r} declares learns=True but has no fit()")

    def fit_params(self) -> dict[str, Any]:
        """What defines the fit (preset, steps, width, init checkpoint hash...); part of the fit key."""
        return self.output_params()

    def state_dict(self) -> dict[str, Any]:
        """The fitted state (tensors and plain values; saved with ``torch.save``)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def bind(self, classes: Sequence[str]) -> None:
        """Learn the dataset's class names before generating (label ``i`` is ``classes[i]``).

        Called once by the synthetic policy and ``synthmed generate``; the default ignores it.
        """

    @abstractmethod
    def generate(
        self, images: torch.Tensor, labels: torch.Tensor, *, variation: int, seed: int
    ) -> torch.Tensor:
        """Make variation number ``variation`` of each source image.

        The output for one image must depend only on that image, ``variation`` and ``seed``
        (not on the rest of the batch), as far as the generator is reproducible at all.

        Args:
            images: ``(B, 1, H, W)`` uint8 sources.
            labels: ``(B,)`` int64 class indices (most generators ignore them).
            variation: which variation (0, 1, ...) of each source.
            seed: the generation seed. The cache derives it from the source's hash and the
                variation index (never from the run seed), so a cached pool is shared by runs.

        Returns:
            ``(B, 1, H, W)`` uint8 variations, same size as the sources.
        """

    def iter_generate(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        variations: Sequence[int],
        seeds: Sequence[int],
    ) -> Iterator[tuple[int, torch.Tensor | None]]:
        """Generate item ``i`` = variation ``variations[i]`` of ``images[i]``, yielding each as it is done.

        The cache calls this and writes every yielded image at once, so an interrupted batch
        keeps what was finished. A generator may yield ``None`` for an item it declined (e.g. a
        content-policy refusal); that item is counted and not cached. The default calls
        :meth:`generate` once per item; override it to batch (``elastic``) or to run requests
        concurrently and ask for several variations of one source per request (``openai``).

        Args:
            images: ``(B, 1, H, W)`` uint8; the same source may appear several times.
            labels: ``(B,)`` int64.
            variations: ``B`` variation indices.
            seeds: ``B`` generation seeds.

        Yields:
            ``(i, image)`` with ``image`` of shape ``(1, H, W)`` uint8, or ``None``; every ``i`` once.
        """
        for i, (variation, seed) in enumerate(zip(variations, seeds)):
            out = self.generate(images[i : i + 1], labels[i : i + 1], variation=int(variation), seed=int(seed))
            yield i, out[0]


def source_hash(image: torch.Tensor) -> str:
    """The sha256 of one ``(1, H, W)`` uint8 image's bytes and shape (the cache's source key)."""
    h = hashlib.sha256()
    h.update(str(tuple(image.shape)).encode())
    h.update(image.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def item_seed(image: torch.Tensor, variation: int, seed: int, namespace: str = "") -> int:
    """One image's private seed from its content, the variation index and the generation seed.

    Generators that draw per image use it, so an image's output never depends on its batch-mates;
    ``namespace`` (say ``"pca"``) keeps two generators' draws for the same source apart.
    """
    text = f"{namespace + ':' if namespace else ''}{source_hash(image)}:{int(variation)}:{int(seed)}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def coerce_option(generator: str, key: str, value: Any, kind: type, *, low: float | None = None,
                  high: float | None = None, choices: Sequence[str] | None = None) -> Any:
    """:func:`synthmed.options.coerce_value` with the message naming ``generator 'name'``."""
    return coerce_value(f"generator {generator!r}", key, value, kind, low=low, high=high, choices=choices)
