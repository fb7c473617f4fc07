"""Stopping long work cleanly: SIGTERM, SIGINT and SIGHUP end a command as :class:`Stopped`.

A cluster's scheduler preempts a job with SIGTERM (then SIGKILL after a grace period); a user
presses Ctrl-C (SIGINT); a closed terminal sends SIGHUP. Under :func:`handling` (every ``synthmed``
command, and every worker process of a sweep) the first of these signals becomes one exception,
:class:`Stopped` — a :class:`KeyboardInterrupt`, so every ``except BaseException`` cleanup already
in place runs: the MLflow run is marked ``KILLED`` with the signal as its reason, a sweep's parent
too, temp files are removed. The command then exits with ``128 + the signal's number`` after one
line saying what was kept (:func:`note_kept`) and how to resume. A second signal exits at once.

Loops that checkpoint (generator fits, training) run their steps under :func:`deferred`: there
the signal only marks a stop as pending, the loop finishes the step it is in, writes a checkpoint
of that consistent state and raises :class:`Stopped` itself (:func:`pending`). Everywhere else the
exception is raised where the main thread is, as Python's own Ctrl-C is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

__all__ = ["SIGNALS", "Stopped", "deferred", "handling", "install", "kept", "note_kept", "pending", "raise_if_pending"]

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """The process was asked to stop by ``signum``; exit with :attr:`exit_code` once cleanup ran."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.signame = signal.Signals(self.signum).name
        super().__init__(f"stopped by {self.signame}")

    def __reduce__(self) -> tuple[type[Stopped], tuple[int]]:  # crosses process boundaries (sweep workers)
        return Stopped, (self.signum,)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def reason(self) -> str:
        """For the run's ``synthmed.failure_reason`` tag."""
        return f"stopped by {self.signame} (signal {self.signum}); rerun the same command to resume"


_pending: int | None = None
_depth = 0  # nesting of deferred() blocks in the main thread
_kept: list[str] = []


def _handler(signum: int, frame: object) -> None:
    global _pending
    if _pending is not None:  # the second signal: at once, nothing more is cleaned up
        os.write(2, f"\nsynthmed: second {signal.Signals(signum).name}: exiting now\n".encode())
        os._exit(128 + signum)
    _pending = signum
    if _depth == 0:
        raise Stopped(signum)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Turn SIGTERM, SIGINT and SIGHUP into :class:`Stopped` inside the block (main thread only; elsewhere a no-op)."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    install()
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _pending = None  # handled (or abandoned) with the block: later code outside it is not stopped


def install(signals: tuple[int, ...] = SIGNALS) -> None:
    """Handle ``signals`` as :func:`handling` does, for the rest of the process (a sweep's worker processes:
    they take SIGTERM and SIGHUP, and ignore the terminal's SIGINT — their parent forwards the stop)."""
    global _pending
    _pending = None
    _kept.clear()
    for s in signals:
        signal.signal(s, _handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside: a signal marks a stop pending instead of raising; the code checks :func:`pending` at safe points.

    On leaving the block a stop still pending is raised.
    """
    global _depth
    main = threading.current_thread() is threading.main_thread()
    if main:
        _depth += 1
    try:
        yield
    finally:
        if main:
            _depth -= 1
    if main and _depth == 0:
        raise_if_pending()


def pending() -> int | None:
    """The signal number of a stop asked for and not yet raised, else ``None``."""
    return _pending


def raise_if_pending() -> None:
    """Raise :class:`Stopped` if a stop is pending (at the start of a task, between steps)."""
    if _pending is not None:
        raise Stopped(_pending)


def note_kept(what: str) -> None:
    """Record something kept for the resume (a checkpoint, finished cache entries), for the command's last line."""
    if what not in _kept:
        _kept.append(what)


def kept() -> list[str]:
    """What :func:`note_kept` recorded since the handlers were installed."""
    return list(_kept)
