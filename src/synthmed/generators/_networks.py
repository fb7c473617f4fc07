"""What the generators that run torch networks here (``ddpm``, ``ldm``) share: device, precision, a resumable step.

``device=auto`` follows the run's ``device`` (:meth:`NetworkGenerator.from_config`), a CUDA device
that is not there is refused by name, and ``precision=auto`` means bf16 autocast on CUDA and fp32 on
the CPU, where bf16 autocast measured far slower without native bf16 (docs/generators.md).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch

from synthmed.checkpoints import rng_state, set_rng_state
from synthmed.errors import SynthmedError
from synthmed.generators.base import Generator

if TYPE_CHECKING:
    from synthmed.config import Config


class NetworkGenerator(Generator):
    """A :class:`Generator` whose networks run on ``self.device`` at ``self.precision`` (set by ``__init__``)."""

    device: str = "auto"
    precision: str = "auto"
    classes: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Config) -> Generator:
        """As the base class, but ``device=auto`` follows the run's ``device``."""
        generator = super().from_config(config)
        if generator.device == "auto" and config.device != "auto":  # type: ignore[attr-defined]
            generator.device = config.device  # type: ignore[attr-defined]
        return generator

    def bind(self, classes: Sequence[str]) -> None:
        self.classes = tuple(classes)

    def _device(self) -> str:
        """The torch device to run on: ``auto`` is CUDA when there is one; a missing CUDA device is refused."""
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        try:
            kind = torch.device(self.device).type
        except RuntimeError:
            raise SynthmedError(f"generator {self.name!r}: device={self.device!r} is not a torch device") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise SynthmedError(f"generator {self.name!r}: device={self.device!r} but no CUDA device here — "
                                "use device=cpu")
        return self.device

    def _autocast(self, device: str) -> Any:
        """bf16 autocast on CUDA under ``precision=auto`` or ``bf16``; nothing on the CPU under ``auto``."""
        kind = torch.device(device).type
        if self.precision == "fp32" or (self.precision == "auto" and kind != "cuda"):
            return contextlib.nullcontext()  # auto: bf16 on CUDA only (far slower on a CPU: docs/generators.md)
        return torch.autocast(kind, dtype=torch.bfloat16)

    @staticmethod
    def _batch_invariant(device: str) -> Any:
        """Sampling whose items do not depend on their batch-mates, to the bit: on the CPU, oneDNN picks its
        convolution kernels by batch size, and an item made alone then differs from the same item made in
        a batch by ~1e-6 — enough to move a pixel across a rounding step (one gray level), so a cached
        image would depend on which batch made it. PyTorch's own kernels compute each item alike, at a
        cost within the noise of this shared CPU (docs/generators.md). CUDA is left as it is."""
        if torch.device(device).type != "cpu":
            return contextlib.nullcontext()
        return _onednn_off()

    @staticmethod
    def _train_step(loss: torch.Tensor, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer,
                    sched: Any, step: int, ema_decay: float) -> float:
        """One optimizer step (gradients clipped at norm 1, the LR schedule advanced), then the EMA copy
        follows with a decay warmed up as ``min(ema_decay, (1 + step) / (10 + step))``; returns the loss."""
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        return float(loss.detach())

    @staticmethod
    def _loop_state(gen: torch.Generator, loss_avg: float | None, **parts: Any) -> dict[str, Any]:
        """A fit loop's resumable state: each part's ``state_dict()`` (networks, EMA, optimizer, LR schedule),
        the batch-and-noise generator's state, torch's global RNG states and the running loss."""
        return {"parts": {name: part.state_dict() for name, part in parts.items()}, "gen": gen.get_state(),
                "rng": rng_state(), "loss_avg": loss_avg}

    @staticmethod
    def _restore_loop(state: dict[str, Any], gen: torch.Generator, **parts: Any) -> float | None:
        """Load :meth:`_loop_state`'s ``state`` into ``parts`` and ``gen``; returns the running loss."""
        for name, part in parts.items():
            part.load_state_dict(state["parts"][name])
        gen.set_state(state["gen"])
        set_rng_state(state["rng"])
        return state["loss_avg"]


@contextlib.contextmanager
def _onednn_off() -> Iterator[None]:
    """oneDNN off for the block, nothing else touched (``torch.backends.mkldnn.flags`` also resets its
    TF32 and determinism flags, and warns about Intel GPUs on every use)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before
