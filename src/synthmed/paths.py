"""Checks of the paths a user hands synthmed (``--data-dir``, ``--cache-dir``, ``--output``, ``--weights``,
``init=``...): each wrong one ends in one :class:`~synthmed.errors.SynthmedError` that names the path, says
what is wrong with it and what to do.

Every function takes ``what`` — the subject of the message, e.g. ``"generation cache /x"`` or
``"data_dir (--data-dir) = '/x'"`` — and ``fix``, the clause after the dash (``"use --cache-dir PATH"``).
Nothing here creates or leaves anything behind unless asked to write (:func:`staged_folder`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from synthmed.errors import SynthmedError

__all__ = ["check_file_to_read", "check_folder_to_read", "check_folder_to_write", "file_in_the_way",
           "os_error_reason", "refuse_file_in_the_way", "staged_folder", "writing"]

FULL = (errno.ENOSPC, errno.EDQUOT)
DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)
_PROBE_BYTES = 4096  # one page: a disk without room for it is full for any output


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
