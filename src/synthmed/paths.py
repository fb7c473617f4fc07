"""Checks of the paths a user hands synthmed (``--data-dir``, ``--cache-dir``, ``--output``, ``--weights``,
``init=``...): each wrong one ends in one :class:`~synthmed.errors.SynthmedError` that names the path, says
what is wrong with it and what to do.

Every function takes ``what`` — the subject of the message, e.g. ``"generation cache /x"`` or
``"data_dir (--data-dir) = '/x'"`` — and ``fix``, the clause after the dash (``"use --cache-dir PATH"``).
Nothing here creates or leaves anything behind unless asked to write (:func:`staged_folder`,
:func:`atomic_write`).

:func:`atomic_write` is synthmed's one way to write a file that others may read while it is written
(fit and generation caches, checkpoints, the reference classifier, prediction tables): a temp file in
the same folder, named ``.<name>.<writer's pid>.<random>.part``, fsynced, then ``os.replace``d over the
target, so a reader sees the old file or the new one, never half of one. :func:`sweep_dead_temps`
removes the temp files of writers that died before their rename.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from synthmed.errors import SynthmedError

__all__ = ["TEMP_SUFFIX", "atomic_write", "check_file_to_read", "check_folder_to_read", "check_folder_to_write",
           "file_in_the_way", "os_error_reason", "pid_alive", "refuse_file_in_the_way", "staged_folder",
           "sweep_dead_temps", "writing"]

FULL = (errno.ENOSPC, errno.EDQUOT)
DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)
_PROBE_BYTES = 4096  # one page: a disk without room for it is full for any output
TEMP_SUFFIX = ".part"  # the suffix of atomic_write's temp files
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.part$")


def _exists(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _reachable(path: Path, what: str, fix: str) -> bool:
    """Whether ``path`` exists; a folder above it this user may not enter is an error, not 'missing'."""
    try:
        os.stat(path)
    except PermissionError:
        raise SynthmedError(f"{what} cannot be read (permission denied for this user) — {fix}") from None
    except OSError:
        return False
    return True


def file_in_the_way(path: str | os.PathLike[str]) -> Path | None:
    """``path`` itself, or its nearest existing ancestor, when that is not a folder (so ``path`` can
    never be one); else ``None``."""
    p = Path(path).expanduser().absolute()
    for candidate in (p, *p.parents):
        if _exists(candidate):
            return None if candidate.is_dir() else candidate
    return None


def refuse_file_in_the_way(path: str | os.PathLike[str], what: str, fix: str) -> None:
    """Raise when ``path`` is a file, or lies below one, where a folder is expected."""
    blocker = file_in_the_way(path)
    if blocker is None:
        return
    if blocker == Path(path).expanduser().absolute():
        raise SynthmedError(f"{what} is not a folder (it is a file) — {fix}")
    raise SynthmedError(f"{what} cannot be created: {blocker} is a file, not a folder — {fix}")


def os_error_reason(exc: OSError) -> tuple[int | None, str]:
    """``(errno, reason)`` of an OSError; for :class:`shutil.Error` (a copy's list of failures) the first one's."""
    if exc.errno is not None:
        return exc.errno, exc.strerror or str(exc)
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        text = str(exc.args[0][0][-1])  # (src, dst, "[Errno 28] No space left on device: '...'")
        found = re.match(r"\[Errno (\d+)\] ([^:]+)", text)
        if found:
            return int(found.group(1)), found.group(2)
        return None, text
    return None, str(exc)


def _write_error(exc: OSError, what: str, fix: str, root: Path | None) -> SynthmedError | None:
    code, reason = os_error_reason(exc)
    if code in FULL:
        return SynthmedError(f"{what} is full ({reason}) — {fix}")
    if code in DENIED:
        return SynthmedError(f"{what} cannot be written ({reason}) — {fix}")
    if code in (errno.ENOTDIR, errno.EEXIST) and root is not None:
        try:
            refuse_file_in_the_way(root, what, fix)
        except SynthmedError as named:
            return named
    return None


@contextlib.contextmanager
def writing(what: str, fix: str, root: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Turn 'disk full', 'read-only' and 'permission denied' raised inside into one error about ``what``,
    and 'not a folder' too when a file stands at or above ``root``; other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        clear = _write_error(exc, what, fix, None if root is None else Path(root))
        if clear is None:
            raise
        raise clear from exc


def check_folder_to_read(path: str | os.PathLike[str], what: str, fix: str) -> Path:
    """``path`` as an existing folder this process may list; else a clear error."""
    p = Path(path).expanduser()
    if not _reachable(p, what, fix):
        raise SynthmedError(f"{what} is not an existing folder — {fix}")
    if not p.is_dir():
        raise SynthmedError(f"{what} is not a folder (it is a file) — {fix}")
    if not os.access(p, os.R_OK | os.X_OK):
        raise SynthmedError(f"{what} cannot be read (permission denied for this user) — {fix}")
    return p


def check_file_to_read(path: str | os.PathLike[str], what: str, fix: str) -> Path:
    """``path`` as an existing regular file this process may read; else a clear error."""
    p = Path(path).expanduser()
    if not _reachable(p, what, fix):
        raise SynthmedError(f"{what} does not exist — {fix}")
    if p.is_dir():
        raise SynthmedError(f"{what} is a folder, not a file — {fix}")
    if not os.access(p, os.R_OK):
        raise SynthmedError(f"{what} cannot be read (permission denied for this user) — {fix}")
    return p


def check_folder_to_write(path: str | os.PathLike[str], what: str, fix: str) -> Path:
    """Refuse, before any work, a ``path`` that is a file, lies below one, or whose disk is read-only,
    forbidden to this user or full. Creates nothing: a missing folder is probed through its nearest
    existing ancestor (where it would be created)."""
    p = Path(path).expanduser().absolute()
    refuse_file_in_the_way(p, what, fix)
    probe_in = next(c for c in (p, *p.parents) if _exists(c))
    with writing(what, fix, p):
        fd, probe = tempfile.mkstemp(dir=probe_in, prefix=".synthmed-probe-")
        try:
            os.write(fd, b"\0" * _PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    return p


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike[str], what: str, fix: str) -> Iterator[Path]:
    """A fresh hidden folder inside ``path`` (created with its parents) to write a set of files into.

    When the block ends, its files move into ``path`` (same disk: renames, no space needed), so
    ``path`` never holds half a set. When it raises, the staging folder — and every folder this
    call created — goes, and a full, read-only or forbidden disk becomes one clear error.
    """
    target = check_folder_to_write(path, what, fix)
    created = [c for c in (target, *target.parents) if not _exists(c)]
    stage: Path | None = None
    try:
        with writing(what, fix, target):
            target.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(dir=target, prefix=".partial-"))
            yield stage
            _move_into(stage, target)
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        for folder in created:  # innermost first; a folder that holds the result is not empty and stays
            with contextlib.suppress(OSError):
                folder.rmdir()


def _move_into(stage: Path, target: Path) -> None:
    for item in sorted(stage.rglob("*")):
        dest = target / item.relative_to(stage)
        if item.is_dir():
            dest.mkdir(exist_ok=True)
        else:
            os.replace(item, dest)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one owned by another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], object], *, text: bool = False,
                 durable: bool = True) -> Path:
    """Write ``path`` whole or not at all: ``write(fh)`` fills a temp file in the same folder (named with
    this pid), which is fsynced (``durable``) and renamed over ``path``. On any failure — an exception,
    a stop — the temp file goes and ``path`` is untouched. The folder must exist; wrap the call in
    :func:`writing` to turn a full or read-only disk into one clear error.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"newline": ""} if text else {})) as fh:
            write(fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def sweep_dead_temps(path: str | os.PathLike[str]) -> int:
    """Remove the temp files :func:`atomic_write` left beside ``path`` when their writer died (a SIGKILL
    between the first byte and the rename); a live writer's file stays. Returns how many went."""
    target = Path(path)
    if not target.parent.is_dir():
        return 0
    gone = 0
    for entry in target.parent.iterdir():
        m = _TEMP.match(entry.name)
        if m and m["name"] == target.name and not pid_alive(int(m["pid"])):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                gone += 1
    return gone
