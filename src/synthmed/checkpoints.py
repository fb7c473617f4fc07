"""Checkpoints of long work (generator fits, training runs): atomic, time-based, resumable.

A :class:`Checkpointer` is handed to a loop that can resume. At each step boundary the loop calls
:meth:`Checkpointer.step` with a function that returns its whole state (weights, optimizer, EMA,
RNG states, step); the state is written when ``every`` seconds have passed since the last write —
and always when a stop was asked for (:mod:`synthmed.interrupts`), after which the stop is raised.
A write goes to a temp file in the same folder (named with the writer's pid), is fsynced and
renamed over the previous checkpoint, so a checkpoint on disk is always whole; temp files of dead
writers are removed the next time the checkpoint is opened. The loop's rerun calls
:meth:`Checkpointer.load` first and continues from the state it returns. On the CPU at fixed
precision a resumed loop ends with the same numbers as one never interrupted (tests check it).

``every`` is ``Config.checkpoint_every`` (seconds; default 300, so runs shorter than five minutes
write nothing unless stopped; 0 turns checkpoints off). Where checkpoints live: a fit's next to
its fitted state in the fit cache; a training run's under ``Config.checkpoint_dir``
(:func:`run_checkpoint_dir`).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from synthmed import interrupts
from synthmed.errors import SynthmedError
from synthmed.paths import atomic_write, sweep_dead_temps, writing

__all__ = ["Checkpointer", "rng_state", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    """torch's global RNG states (CPU, and every CUDA device when there is one)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """One resumable loop's checkpoint file.

    Args:
        path: the checkpoint file; ``None`` turns checkpoints off (nothing is read or written).
        every: seconds between writes (0 = off).
        what: what it checkpoints, in words (``"ldm fit"``), for messages.
    """

    def __init__(self, path: str | os.PathLike[str] | None, every: float, what: str = "work"):
        self.path = Path(path) if path is not None else None
        self.every = float(every)
        self.what = what
        self.saves = 0
        self.seconds = 0.0  # time spent writing (the checkpoint overhead)
        self.resumed_step: int | None = None  # the step of the checkpoint load() returned
        self.resumed_epoch: int | None = None  # and its epoch, for loops that have epochs
        self.elapsed_before = 0.0  # seconds the work had run before the checkpoint it resumed from
        self._last = self._opened = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.path is not None and self.every > 0

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint's state, or ``None``; removes temp files left by dead writers."""
        if not self.enabled:
            return None
        assert self.path is not None
        self._sweep_temps()
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as exc:  # only a foreign or damaged file: checkpoints are written atomically
            raise SynthmedError(f"checkpoint {self.path} is unreadable ({exc}) — delete it to start this "
                                f"{self.what} from the beginning") from exc
        self.resumed_step, self.resumed_epoch = state.get("step"), state.get("epoch")
        self.elapsed_before = float(state.get("elapsed", 0.0))
        self._opened = time.monotonic()
        return state

    @property
    def elapsed(self) -> float:
        """Seconds of work so far, the attempts before this one's last checkpoint included."""
        return self.elapsed_before + time.monotonic() - self._opened

    def step(self, make_state: Callable[[], dict[str, Any]], step: int) -> None:
        """At a step boundary (``step`` steps done): write when due or when a stop is pending, then raise the stop."""
        stop = interrupts.pending()
        if self.enabled and (stop is not None or time.monotonic() - self._last >= self.every):
            self.save({**make_state(), "step": step, "elapsed": self.elapsed})
            if stop is not None:
                interrupts.note_kept(f"{self.what} checkpoint at step {step} ({self.path})")
        if stop is not None:
            raise interrupts.Stopped(stop)

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically (temp file named with this pid, fsync, rename)."""
        assert self.path is not None
        start = time.perf_counter()
        with writing(f"checkpoint folder {self.path.parent}", "free space there or point checkpoints at a folder this "
                     "user can write (checkpoint_dir, or --cache-dir for fits), or turn them off: --checkpoint-every 0",
                     root=self.path.parent):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda fh: torch.save(state, fh))
        self.saves += 1
        self.seconds += time.perf_counter() - start
        self._last = time.monotonic()

    def clear(self) -> None:
        """Remove the checkpoint (the work finished and its result is stored elsewhere)."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _sweep_temps(self) -> None:
        assert self.path is not None
        sweep_dead_temps(self.path)
