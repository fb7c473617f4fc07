"""What the loop trains: k ≥ 1 models as one, their logits computed together.

A run trains a stack of one (:class:`Single`: the model, through its factory's
``training_forward``). k simulations of one cell train as a stack of k (:class:`Vmapped`): the
models' parameters stacked with ``torch.func.stack_module_state`` and run with ``functional_call``
under ``vmap``. One Adam over the stacked parameters equals k separate Adams, because Adam is
elementwise and the loop's summed loss gives each model the gradient of its own mean loss. Results
agree with one-at-a-time training to float tolerance (vmapped convolutions are grouped
convolutions, summed in another order). The vmapped models run the module's own forward, not the
factory's ``training_forward`` (the same function).

Models with buffers (BatchNorm's running statistics) or active dropout cannot be vmapped as a run
alone would train them: :func:`stack_refusal` says why, and such runs train one at a time.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

if TYPE_CHECKING:
    from synthmed.data.base import ImageSet

__all__ = ["Single", "Stack", "Vmapped", "stack", "stack_refusal"]


class Stack:
    """k models trained as one: their parameters, their logits, and a way back to each model."""

    models: list[nn.Module]

    def parameters(self) -> list[torch.Tensor]:
        """The tensors the optimizer updates."""
        raise NotImplementedError

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(k, B, 1, H, W)`` float inputs → ``(k, B, C)`` training logits."""
        raise NotImplementedError

    def train(self) -> None:
        """Put every model in training mode."""
        for model in self.models:
            model.train()

    def sync(self) -> None:
        """Make each of :attr:`models` hold its trained parameters (for validation, restore, evaluation)."""


class Single(Stack):
    """One model, trained through ``forward`` (its factory's ``training_forward``; default the model)."""

    def __init__(self, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.models = [model]
        self.forward = forward or model

    def parameters(self) -> list[torch.Tensor]:
        return list(self.models[0].parameters())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x[0].contiguous(memory_format=torch.channels_last))[None]  # (1, B, C)


class Vmapped(Stack):
    """k models of one architecture, their parameters stacked along a new first dimension."""

    def __init__(self, models: Sequence[nn.Module]):
        self.models = list(models)
        params, self.buffers = stack_module_state(self.models)  # {name: (k, ...)} leaf tensors
        # in the standard layout, whatever the models' (channels_last): vmap's grouped convolutions
        # run faster so on a GPU (benchmarks/probe_gpu_step.py)
        self.params = {name: p.detach().contiguous().requires_grad_(p.requires_grad) for name, p in params.items()}
        base = copy.deepcopy(self.models[0]).to("meta")

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(base, (p, b), (x,))

        self._base = base
        self._forward = vmap(one, in_dims=(0, 0, 0), randomness="different")

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self.params, self.buffers, x)  # (k, B, C)

    def train(self) -> None:
        super().train()
        self._base.train()

    def sync(self) -> None:
        with torch.no_grad():
            for name, stacked in self.params.items():
                for i, model in enumerate(self.models):
                    model.get_parameter(name).copy_(stacked[i])


def stack(models: Sequence[nn.Module], forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Stack:
    """One model as a :class:`Single` (trained through ``forward``), several as a :class:`Vmapped`."""
    return Single(models[0], forward) if len(models) == 1 else Vmapped(models)


def stack_refusal(models: Sequence[nn.Module], train_sets: Sequence[ImageSet]) -> str | None:
    """Why these models cannot train as one stack as each would alone, or ``None`` when they can."""
    model = models[0]
    if any(True for _ in model.buffers()):
        return "the model has buffers (e.g. BatchNorm running statistics), which vmap cannot update per model"
    if any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        return "the model has active dropout, whose draws under vmap would differ from a run alone"
    if len({len(t) for t in train_sets}) > 1:
        return "the simulations' training sets differ in size"
    return None
