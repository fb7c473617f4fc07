"""The one training loop (Chapter 4): Adam + cross-entropy, epochs or a step budget, best epoch by validation.

:func:`fit_stack` trains a :class:`~synthmed.training.stack.Stack` of k ≥ 1 models, one
:class:`Member` (a run's data, config and metric sink) per model; :func:`fit` is the same loop over
a stack of one. Each member keeps exactly what it would get alone: its own batch order and
augmentation draws (generators seeded by its seed), its own validation, best-epoch restore and
early stopping. A member that stops early is frozen at that point: its later steps change nothing
it reports or keeps, and the loop ends once every member has stopped.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from synthmed import interrupts
from synthmed.checkpoints import rng_state, set_rng_state
from synthmed.config import Config
from synthmed.evaluation import predict_logits, to_input
from synthmed.runtime import autocast_dtype
from synthmed.training.stack import Single, Stack

if TYPE_CHECKING:
    from torch import nn

    from synthmed.checkpoints import Checkpointer
    from synthmed.data.base import ImageSet
    from synthmed.policies.base import AugmentationPolicy

__all__ = ["Member", "fit", "fit_stack", "make_optimizer", "step_budget"]


def make_optimizer(params: Any, config: Config, device: str) -> torch.optim.Optimizer:
    """Adam in its fused form (one kernel over all parameters; CPU and CUDA), else foreach.

    Adam is elementwise, so the forms agree to float rounding; the same form is used for every
    run on a device, so the same seed gives the same metrics.
    """
    try:
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, TypeError):  # a device or dtype without a fused kernel
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, foreach=True)


def step_budget(config: Config, full_train_size: int) -> int | None:
    """``budget=steps``: the optimizer steps of ``epochs`` passes over the full training split; else ``None``."""
    if config.budget != "steps":
        return None
    return config.epochs * math.ceil(full_train_size / config.batch_size)


def _sum_dtype(device: str) -> torch.dtype:
    return torch.float32 if device.startswith("mps") else torch.float64


class _Resident:
    """A training set's uint8 images and labels on the device, moved once (again only if the set changes)."""

    def __init__(self, device: str):
        self.device, self.source, self.value = device, None, None

    def get(self, data: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
        source = (data.images, data.labels)  # held, so identity checks cannot meet a recycled id
        if self.source is None or any(a is not b for a, b in zip(source, self.source)):
            self.source, self.value = source, (data.images.to(self.device), data.labels.to(self.device))
        return self.value


@dataclass
class Member:
    """One run's part in the loop: what it trains on, its config (seed, epochs, patience) and its metric sink."""

    train_set: ImageSet
    val_set: ImageSet | None
    config: Config
    log_metrics: Callable[..., None]
    #: sets whose loss is logged every epoch under the given metric name and never chooses anything
    #: (``protocol=thesis``: the held-out split, the unsampled rest of the training split)
    watch: dict[str, ImageSet] = field(default_factory=dict)
    # --- the loop's bookkeeping ---
    best_loss: float = math.inf
    best_epoch: int = -1
    best_steps: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    bad_epochs: int = 0
    stopped: bool = False
    passes: int = 0
    steps: int = 0
    order: torch.Generator = field(init=False)  # batch order
    draws: torch.Generator = field(init=False)  # augmentation draws
    epoch_start: tuple[torch.Tensor, torch.Tensor] | None = None  # (order, draws) states as the current epoch began

    def __post_init__(self) -> None:
        self.order = torch.Generator().manual_seed(self.config.seed)
        self.draws = torch.Generator().manual_seed(self.config.seed + 1)

    _KEPT = ("best_loss", "best_epoch", "best_steps", "best_state", "history", "bad_epochs", "stopped", "passes", "steps")

    def snapshot(self) -> dict[str, Any]:
        """The bookkeeping a checkpoint keeps: best state and epoch, history, and both generators' states —
        as the current epoch began (its data and batch order are drawn again from them) and now."""
        return {**{name: getattr(self, name) for name in self._KEPT}, "epoch_start": self.epoch_start,
                "draws_now": self.draws.get_state()}

    def restore(self, state: dict[str, Any]) -> None:
        """Undo :meth:`snapshot`: the generators are set to the interrupted epoch's start."""
        for name in self._KEPT:
            setattr(self, name, state[name])
        self.epoch_start = state["epoch_start"]
        self.order.set_state(self.epoch_start[0])
        self.draws.set_state(self.epoch_start[1])

    @property
    def selects(self) -> bool:
        """Whether the validation loss chooses the epoch kept (``protocol=sound``); else the last epoch is kept."""
        return self.config.protocol != "thesis"

    def end_epoch(self, model: nn.Module, epoch: int, metrics: dict[str, float]) -> None:
        """Log the epoch; keep the best state by validation loss (never test loss); stop after ``patience``."""
        self.log_metrics(metrics, step=epoch)
        for name in self.watch:
            self.history.setdefault(name, []).append(metrics[name])
        if "val_loss" not in metrics:
            return
        self.history.setdefault("val_loss", []).append(metrics["val_loss"])
        if metrics["val_loss"] < self.best_loss:
            self.best_loss, self.best_epoch, self.best_steps, self.bad_epochs = metrics["val_loss"], epoch, self.steps, 0
            if self.selects:
                self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad_epochs += 1
            self.stopped = bool(self.config.patience) and self.bad_epochs >= self.config.patience

    def outcome(self, model: nn.Module, seconds: float) -> dict[str, Any]:
        """Restore the best epoch's state into ``model`` (when it selects); how the run trained.

        ``kept_epoch`` and ``kept_steps`` are the epoch (1-based) and the optimizer steps taken up to
        it of the state the run evaluates; ``readings`` the last value, minimum and epoch of the
        minimum of each watched loss and of the validation loss.
        """
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        kept = self.best_state is not None
        readings: dict[str, float] = {}
        for name, values in self.history.items():
            low = min(range(len(values)), key=values.__getitem__)
            readings.update({f"{name}_last": values[-1], f"{name}_min": values[low], f"{name}_min_epoch": low + 1})
        return {"epochs_run": self.passes, "best_epoch": self.best_epoch + 1 if self.best_epoch >= 0 else self.passes,
                "kept_epoch": self.best_epoch + 1 if kept else self.passes,
                "kept_steps": self.best_steps if kept else self.steps,
                "optimizer_steps": self.steps, "train_seconds": seconds, "readings": readings}


def fit(model: nn.Module, policy: AugmentationPolicy, train_set: ImageSet, val_set: ImageSet | None, config: Config,
        device: str, log_metrics: Callable[..., None], max_steps: int | None = None,
        forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
        watch: dict[str, ImageSet] | None = None, checkpoint: Checkpointer | None = None) -> dict[str, Any]:
    """Train one model in place: :func:`fit_stack` over a stack of one; returns how it trained.

    ``forward`` computes the training logits (default: ``model``; runs pass their factory's
    :meth:`~synthmed.models.base.ModelFactory.training_forward`, which computes the same function).
    ``checkpoint``: resume from it when it holds a state, and write it as it comes due (:mod:`synthmed.checkpoints`).
    """
    return fit_stack(Single(model, forward), policy, [Member(train_set, val_set, config, log_metrics, dict(watch or {}))],
                     device, max_steps=max_steps, checkpoint=checkpoint)[0]


def fit_stack(models: Stack, policy: AugmentationPolicy, members: Sequence[Member], device: str,
              max_steps: int | None = None, checkpoint: Checkpointer | None = None) -> list[dict[str, Any]]:
    """Adam + cross-entropy for the members' ``epochs`` (early stopping on val loss when ``patience``).

    With ``max_steps`` (``budget=steps``) it makes passes over the data until that many optimizer
    steps are taken, the last pass cut short; an "epoch" in the logs is then one pass. The members
    share epochs, batch size, learning rate and precision (their cell's); their training sets
    have one size. Trains ``models`` in place and returns, per member, how it trained.

    With a ``checkpoint`` (a stack of one), a saved state is resumed mid-epoch at the batch it
    reached — the epoch's data and order drawn again from the generators' states at its start, the
    augmentation generator then set to where it was — so the resumed run takes exactly the steps
    the uninterrupted one would; a stop asked for by a signal ends the loop after the current step,
    with a checkpoint of it.
    """
    config, k = members[0].config, len(members)
    if checkpoint is not None and not isinstance(models, Single):
        raise ValueError("checkpoints cover one model at a time (a stack of one)")
    opt = make_optimizer(models.parameters(), config, device)
    amp = autocast_dtype(config, device)
    device_type = device.split(":")[0]
    resident = [_Resident(device) for _ in members]
    steps, epoch_steps, first_epoch, first_batch, carried, earlier = 0, 0, 0, 0, None, 0.0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:  # a killed run of the same command: its model, optimizer, bookkeeping and position
        models.models[0].load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        for member, kept in zip(members, saved["members"]):
            member.restore(kept)
        set_rng_state(saved["rng"])
        steps, epoch_steps = int(saved["step"]), int(saved["epoch_steps"])
        first_epoch, first_batch, carried = int(saved["epoch"]), int(saved["batch"]), saved["sums"]
        earlier = float(saved["elapsed"])
    passes = itertools.count(first_epoch) if max_steps is not None else range(first_epoch, config.epochs)
    bar = tqdm(passes, desc="epochs", unit="epoch", disable=config.quiet, leave=False, initial=first_epoch,
               total=None if max_steps is not None else config.epochs)
    started = time.perf_counter() - earlier
    with interrupts.deferred() if checkpoint is not None else contextlib.nullcontext():  # stop after a step
        for epoch in bar:
            if (max_steps is not None and steps >= max_steps) or all(m.stopped for m in members):
                break
            resuming = carried is not None
            if not resuming:
                epoch_steps = steps
                for m in members:
                    m.epoch_start = (m.order.get_state(), m.draws.get_state())
            data = [policy.epoch_set(m.train_set, epoch, m.draws) for m in members]
            tensors = [r.get(d) for r, d in zip(resident, data)]  # uint8 images and labels on the device, moved once per set
            perms = []
            for d, m in zip(data, members):
                perm = torch.randperm(len(d), generator=m.order)
                if max_steps is not None:  # the last pass stops at the budget
                    perm = perm[: (max_steps - epoch_steps) * config.batch_size]
                perms.append(perm.to(device))
            models.train()
            total = torch.zeros(k, device=device, dtype=_sum_dtype(device))  # no host sync per step
            seen = 0
            if resuming:  # mid-epoch: the augmentation generator where it was, the running sums, the next batch
                for member, kept in zip(members, saved["members"]):
                    member.draws.set_state(kept["draws_now"])
                total, seen = carried[0].to(device), int(carried[1])
            batch_from, carried = (first_batch if resuming else 0), None

            def loop_state(epoch: int = epoch, batch: int = 0) -> dict[str, Any]:
                return {"model": models.models[0].state_dict(), "opt": opt.state_dict(), "rng": rng_state(),
                        "members": [m.snapshot() for m in members], "epoch": epoch, "batch": batch,
                        "epoch_steps": epoch_steps, "sums": (total.cpu(), seen),
                        "elapsed": time.perf_counter() - started}

            for start in tqdm(range(batch_from, len(perms[0]), config.batch_size), desc=f"epoch {epoch + 1}",
                              unit="batch", disable=config.quiet, leave=False, initial=batch_from // config.batch_size,
                              total=math.ceil(len(perms[0]) / config.batch_size)):
                rows = [perm[start : start + config.batch_size] for perm in perms]
                batches = policy.augment_many([images[r] for (images, _), r in zip(tensors, rows)],
                                              [m.draws for m in members])  # k × (B, 1, H, W) uint8, on the device
                x = to_input(torch.stack(batches))  # (k, B, 1, H, W)
                y = torch.stack([labels[r] for (_, labels), r in zip(tensors, rows)])  # (k, B)
                with torch.autocast(device_type=device_type, dtype=amp or torch.float32, enabled=amp is not None):
                    logits = models.logits(x)  # (k, B, C)
                losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view(k, -1).mean(1)
                opt.zero_grad(set_to_none=True)
                losses.sum().backward()  # each model's gradient is that of its own mean loss
                opt.step()
                total += losses.detach() * y.shape[1]
                seen += y.shape[1]
                steps += 1
                if checkpoint is not None:
                    checkpoint.step(lambda: loop_state(batch=start + config.batch_size), steps)
            train_loss = (total / max(seen, 1)).tolist()  # the one sync of the epoch
            models.sync()
            if checkpoint is not None:  # the epoch's steps are done: a failure logging its end loses none of them
                ended = loop_state(batch=len(perms[0]))
            for i, (member, model) in enumerate(zip(members, models.models)):
                if member.stopped:  # frozen where it stopped: its later steps are never reported or kept
                    continue
                member.passes, member.steps = member.passes + 1, steps
                metrics = {"train_loss": train_loss[i]}
                held = {"val_loss": member.val_set} if member.val_set is not None and len(member.val_set) else {}
                for name, images in {**held, **member.watch}.items():  # only val_loss chooses; watched sets are readings
                    metrics[name] = F.cross_entropy(predict_logits(model, images.images, device=device), images.labels).item()
                try:
                    member.end_epoch(model, epoch, metrics)
                except Exception:
                    if checkpoint is not None and checkpoint.enabled:  # e.g. the tracking server went away
                        checkpoint.save({**ended, "step": steps})
                    raise
            if k == 1:
                bar.set_postfix({name: f"{value:.4f}" for name, value in metrics.items()})
    seconds = time.perf_counter() - started  # each epoch ended in a sync (its train loss), so this is real
    return [m.outcome(model, seconds) for m, model in zip(members, models.models)]
