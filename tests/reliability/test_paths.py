"""Bad input, the path options: every option that names a path, tried as the wrong kind of thing.

The matrix (one test case per option, kind and command):

    option                     use    (a) wrong kind           (b) missing    (c) unwritable          (d) full
    --data-dir (2 datasets)    read   a file                   missing        another user's folder   -
    --cache-dir (2-4 commands) write  a file                   below a file   read-only mount         tiny tmpfs
    --output (2 commands)      write  a file                   below a file   read-only mount         tiny tmpfs
    --weights                  read   a folder                 missing        another user's file     -
    init= (ddpm)               read   a folder with no UNet    missing        another user's file     -
    --config                   read   a folder                 missing        another user's file     -

A missing folder that is written to is created (documented, not an error), so (b) for those is a path
below a regular file, which can never be created. Each case must end in one clear line naming the
option or path and what to do, with a nonzero exit, no traceback, and nothing half-written left: no
temp or partial file, no stray probe, no half-filled output folder, every cached image whole.

In-process (click's runner) except the cases run as another user (``setpriv --reuid=65534``: root
ignores file modes), which need a subprocess (the CLI; for ``--weights`` the model factory that
``train --weights`` calls, which spares a whole training run's setup). Mounts need root; without it the
read-only cases skip and the full-disk cases inject ENOSPC.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest
from _rel import TINY, child_env, cli_argv
from click.testing import CliRunner

from synthmed.cli import main

pytestmark = pytest.mark.bad_input
FAST_S = 15.0  # each case ends within seconds
NOBODY = 65534
SYNTH = ["--policy", "synthetic", "--generator", "elastic", "--real-frac", "0.5"]
LEFTOVERS = ("*.part", "*.tmp", ".partial-*", ".synthmed-probe-*", "*.pt")


# --- running and judging ---------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _imported() -> None:
    """The commands' modules, imported once per worker outside the timed calls (a CLI process pays this at start)."""
    import synthmed.inspection.run  # noqa: F401
    import synthmed.sweep.report  # noqa: F401
    import synthmed.training  # noqa: F401


def cli(*args: str) -> tuple[int, str]:
    start = time.monotonic()
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError("".join(traceback.format_exception(result.exception)))
    assert time.monotonic() - start < FAST_S, f"took {time.monotonic() - start:.1f} s"
    return result.exit_code, result.output


def assert_one_clear_line(code: int, out: str, *patterns: str) -> None:
    assert code != 0, out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, out
    for pattern in patterns:
        assert re.search(pattern, errors[0]), f"{pattern!r} not in:\n{out}"


def assert_nothing_half_written(*roots: Path) -> None:
    """No temp, partial or probe file under ``roots``; every image there is whole."""
    from PIL import Image

    for root in roots:
        if not root.is_dir():
            continue
        for pattern in LEFTOVERS:
            found = list(root.rglob(pattern))
            assert not found, f"left behind: {found}"
        for png in root.rglob("*.png"):
            with Image.open(png) as im:
                im.load()


def files_in(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.is_dir() else set()


# --- mounts ------------------------------------------------------------------------------------------
def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False, leave_free: int | None = None) -> Iterator[bool]:
    """A tmpfs of ``size`` at ``path`` (read-only, or filled up to ``leave_free`` bytes); yields whether it mounted."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = _can_mount() and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                              capture_output=True).returncode == 0
    try:
        if mounted and leave_free is not None:
            stat = os.statvfs(path)
            (path / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - leave_free))
        if mounted and read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=False)


def _inject_full(monkeypatch, root: Path, after: int) -> None:
    """Without mounts: a disk that is full after ``after`` finished files under ``root``."""
    real_replace = os.replace

    def full(src, dst):  # noqa: ANN001
        if str(dst).startswith(str(root)) and len([p for p in root.rglob("*") if p.is_file()]) >= after:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full)


# --- the commands each option is tried through -----------------------------------------------------------
def train(folder: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "imagefolder", "--data-dir", str(folder), *TINY, *extra]


def generate(folder: Path, *extra: str) -> list[str]:
    return ["generate", "--dataset", "imagefolder", "--data-dir", str(folder), "--image-size", "16",
            "--real-frac", "0.5", "--generator", "elastic", "--yes", "-q", *extra]


def audit(folder: Path, *extra: str) -> list[str]:
    return ["audit-split", "--dataset", "imagefolder", "--data-dir", str(folder), "--image-size", "16",
            "--features", "false", "--simulations", "1", "--fractions", "1", "--pairs", "2", "-q", *extra]


@pytest.fixture
def sweep_run(store, tiny_splits, monkeypatch) -> str:
    """A finished sweep's parent run id (FakeTrain children: no training)."""
    from test_sweep import FakeTrain

    from synthmed.config import Config
    from synthmed.sweep import sweep

    monkeypatch.setattr("synthmed.training.train", FakeTrain())
    config = Config(image_size=32, epochs=1, device="cpu", experiment="sweeps", quiet=True)
    return sweep(config, policies="none,basic", real_fracs="1.0", simulations=2, splits=tiny_splits).parent_run_id


NO_SWEEP = "0" * 32  # the output folder is refused before the run is looked up


def report(run_id: str, *extra: str) -> list[str]:
    return ["report", run_id, *extra]


# --- (a) the wrong kind of thing ----------------------------------------------------------------------------
def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


def _a_folder(tmp_path: Path) -> Path:
    path = tmp_path / "a-folder"
    path.mkdir()
    (path / "notes.txt").write_text("not a checkpoint\n")
    return path


WRONG_KIND: dict[str, tuple[Callable[[Path], Path], Callable[[Path, Path], list[str]], str]] = {
    # option-command: (make the bad path, argv(data folder, bad path), pattern of the one error line)
    "data_dir-imagefolder": (_a_file, lambda d, bad: train(bad),
                             r"data_dir \(--data-dir\) = '.*a-file' is not a folder \(it is a file\) — .*--data-dir PATH"),
    "data_dir-alzheimer_mri": (_a_file, lambda d, bad: ["train", "--data-dir", str(bad), *TINY],
                               r"data_dir \(--data-dir\) = '.*a-file' is not a folder \(it is a file\) — .*data/"),
    "cache_dir-train": (_a_file, lambda d, bad: train(d, *SYNTH, "--cache-dir", str(bad)),
                        r"generation cache .*a-file is not a folder \(it is a file\) — .*--cache-dir PATH"),
    "cache_dir-generate": (_a_file, lambda d, bad: generate(d, "--cache-dir", str(bad)),
                           r"generation cache .*a-file is not a folder \(it is a file\) — .*--cache-dir PATH"),
    "cache_dir-cache-stats": (_a_file, lambda d, bad: ["cache", "stats", "--cache-dir", str(bad)],
                              r"generation cache .*a-file is not a folder \(it is a file\) — .*--cache-dir PATH"),
    "cache_dir-cache-prune": (_a_file, lambda d, bad: ["cache", "prune", "--all", "--yes", "--cache-dir", str(bad)],
                              r"generation cache .*a-file is not a folder \(it is a file\) — .*--cache-dir PATH"),
    "output-audit-split": (_a_file, lambda d, bad: audit(d, "--output", str(bad)),
                           r"Invalid value for '--output'.*a-file' is a file"),
    "output-report": (_a_file, lambda d, bad: report(NO_SWEEP, "--output", str(bad)),
                      r"Invalid value for '--output'.*a-file' is a file"),
    "weights": (_a_folder, lambda d, bad: train(d, "--model", "resnet18", "--pretrained", "--weights", str(bad)),
                r"weights file '.*a-folder' for model 'resnet18' is a folder, not a file — .*--weights PATH"),
    "init-ddpm": (_a_folder, lambda d, bad: generate(d, "--generator", "ddpm", "--generator-options", f"init={bad}"),
                  r"generator 'ddpm': init='.*a-folder' is a folder without a diffusers UNet .* init=PATH"),
    "config": (_a_folder, lambda d, bad: ["train", "--config", str(bad)],
               r"Invalid value for '--config'.*a-folder' is a directory"),
    "checkpoint_dir-train": (_a_file, lambda d, bad: train(d, "--checkpoint-dir", str(bad)),
                             r"checkpoint folder .*a-file is not a folder \(it is a file\) — .*--checkpoint-dir"),
}


@pytest.mark.parametrize("case", WRONG_KIND, ids=WRONG_KIND.keys())
def test_wrong_kind(store, tiny_folder, tmp_path, case):
    make, argv, pattern = WRONG_KIND[case]
    bad = make(tmp_path)
    before = files_in(bad)
    code, out = cli(*argv(tiny_folder, bad))
    assert_one_clear_line(code, out, pattern)
    assert files_in(bad) == before, "the bad path must be left as it was"
    assert_nothing_half_written(tmp_path)


# --- (b) missing ----------------------------------------------------------------------------------------------
def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nowhere"


def _below_a_file(tmp_path: Path) -> Path:
    """A folder that is missing and can never be created: a regular file is in the way."""
    return _a_file(tmp_path) / "sub"


MISSING: dict[str, tuple[Callable[[Path], Path], Callable[[Path, Path], list[str]], str]] = {
    "data_dir-imagefolder": (_missing, lambda d, bad: train(bad),
                             r"data_dir \(--data-dir\) = '.*nowhere' is not an existing folder — .*--data-dir PATH"),
    "data_dir-alzheimer_mri": (_missing, lambda d, bad: ["train", "--data-dir", str(bad), *TINY],
                               r"data_dir \(--data-dir\) = '.*nowhere' is not an existing folder — .*data/"),
    "cache_dir-train": (_below_a_file, lambda d, bad: train(d, *SYNTH, "--cache-dir", str(bad)),
                        r"generation cache .*a-file/sub cannot be created: .*a-file is a file, not a folder — .*--cache-dir"),
    "cache_dir-generate": (_below_a_file, lambda d, bad: generate(d, "--cache-dir", str(bad)),
                           r"generation cache .*a-file/sub cannot be created: .*a-file is a file, not a folder — .*--cache-dir"),
    "output-audit-split": (_below_a_file, lambda d, bad: audit(d, "--output", str(bad)),
                           r"audit folder \(--output\) .*a-file/sub cannot be created: .*a-file is a file, not a folder — .*--output PATH"),
    "output-report": (_below_a_file, lambda d, bad: report(NO_SWEEP, "--output", str(bad)),
                      r"report folder \(--output\) .*a-file/sub cannot be created: .*a-file is a file, not a folder — .*--output PATH"),
    "weights": (_missing, lambda d, bad: train(d, "--model", "resnet18", "--pretrained", "--weights", str(bad)),
                r"weights file '.*nowhere' for model 'resnet18' does not exist — .*--weights PATH"),
    "init-ddpm": (_missing, lambda d, bad: generate(d, "--generator", "ddpm", "--generator-options", f"init={bad}"),
                  r"generator 'ddpm': init='.*nowhere' does not exist — pass a checkpoint path"),
    "config": (_missing, lambda d, bad: ["train", "--config", str(bad)],
               r"config file '.*nowhere' does not exist"),
    "checkpoint_dir-train": (_below_a_file, lambda d, bad: train(d, "--checkpoint-dir", str(bad)),
                             r"checkpoint folder .*a-file/sub cannot be created: .*a-file is a file, not a folder — "
                             r".*--checkpoint-dir"),
}


@pytest.mark.parametrize("case", MISSING, ids=MISSING.keys())
def test_missing(store, tiny_folder, tmp_path, case):
    make, argv, pattern = MISSING[case]
    bad = make(tmp_path)
    code, out = cli(*argv(tiny_folder, bad))
    assert_one_clear_line(code, out, pattern)
    assert not os.path.lexists(bad), "nothing may be created where it cannot be"
    assert_nothing_half_written(tmp_path)


# --- (c) a read-only disk, for the options written to -------------------------------------------------------------
READ_ONLY: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "cache_dir-train": (lambda d, ro: train(d, *SYNTH, "--cache-dir", str(ro)),
                        r"generation cache .*/ro cannot be written \(Read-only file system\) — .*--cache-dir PATH"),
    "cache_dir-generate": (lambda d, ro: generate(d, "--cache-dir", str(ro)),
                           r"generation cache .*/ro cannot be written \(Read-only file system\) — .*--cache-dir PATH"),
    "output-audit-split": (lambda d, ro: audit(d, "--output", str(ro)),
                           r"audit folder \(--output\) .*/ro cannot be written \(Read-only file system\) — .*--output PATH"),
    "output-report": (lambda d, ro: report(NO_SWEEP, "--output", str(ro / "report")),
                      r"report folder \(--output\) .*/ro/report cannot be written \(Read-only file system\) — .*--output PATH"),
    "cache_dir-generate-learned": (lambda d, ro: generate(d, "--generator", "pca", "--cache-dir", str(ro)),
                                   r"generation cache .*/ro cannot be written \(Read-only file system\) — .*--cache-dir PATH"),
    "checkpoint_dir-train": (lambda d, ro: train(d, "--checkpoint-dir", str(ro), "--checkpoint-every", "0.000001"),
                             r"checkpoint folder .*/ro/runs/.* cannot be written \(Read-only file system\) — .*"
                             r"--checkpoint-every 0"),
}


@pytest.mark.parametrize("case", READ_ONLY, ids=READ_ONLY.keys())
def test_read_only_mount(store, tiny_folder, tmp_path, case):
    argv, pattern = READ_ONLY[case]
    ro = tmp_path / "ro"
    with tmpfs(ro, "1m", read_only=True) as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here (needs root and mount)")
        code, out = cli(*argv(tiny_folder, ro))
        assert_one_clear_line(code, out, pattern)
        assert files_in(ro) == set()


# --- (d) a full disk, for the options written to -------------------------------------------------------------------
FULL: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "cache_dir-train": (lambda d, full: train(d, *SYNTH, "--cache-dir", str(full)),
                        r"generation cache .*/full is full \(No space left on device\) — .*--cache-dir PATH"),
    "cache_dir-generate": (lambda d, full: generate(d, "--cache-dir", str(full)),
                           r"generation cache .*/full is full \(No space left on device\) — .*--cache-dir PATH"),
    "output-audit-split": (lambda d, full: audit(d, "--output", str(full)),
                           r"audit folder \(--output\) .*/full is full \(No space left on device\) — free space there.*--output PATH"),
    "output-report": (lambda run, full: report(run, "--output", str(full)),
                      r"report folder \(--output\) .*/full is full \(No space left on device\) — free space there.*--output PATH"),
}


@pytest.mark.parametrize("case", FULL, ids=FULL.keys())
def test_full_disk(request, store, tiny_folder, tmp_path, monkeypatch, case):
    """A 16 KiB tmpfs for the cache (full after four images); for an output folder one with room for the
    pre-flight probe but not the files. Without mounts, ENOSPC is injected."""
    argv, pattern = FULL[case]
    first = request.getfixturevalue("sweep_run") if case == "output-report" else tiny_folder
    full = tmp_path / "full"
    is_cache = case.startswith("cache_dir")
    with tmpfs(full, "16k" if is_cache else "64k", leave_free=None if is_cache else 8192) as mounted:
        before = files_in(full)
        if not mounted:
            _inject_full(monkeypatch, full, after=2 if is_cache else 0)
        code, out = cli(*argv(first, full))
        assert_one_clear_line(code, out, pattern)
        assert_nothing_half_written(full)
        if not is_cache:  # all files or none: the folder is as it was
            assert files_in(full) == before


# --- (c) as another user: read options the user may not read ---------------------------------------------------------
def _can_drop_privileges() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


def _world_readable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def _private(path: Path) -> Path:
    """Root's, mode 0700 / 0600: another user may not read it."""
    for p in [path, *path.rglob("*")]:
        p.chmod(0o700 if p.is_dir() else 0o600)
    return path


def _private_data(base: Path, tiny: Path) -> Path:
    return _private(shutil.copytree(tiny, base / "private-data"))


def _private_file(base: Path, name: str, content: bytes) -> Path:
    path = base / name
    path.write_bytes(content)
    return _private(path)


def _ddpm_checkpoint(base: Path) -> Path:
    import torch

    path = base / "init.pt"
    torch.save({"unet": {}}, path)
    return _private(path)


# The model factory `synthmed train --model resnet18 --pretrained --weights PATH` builds its model with; a
# SynthmedError is printed as the CLI prints it, anything else ends in a traceback (and fails the case).
WEIGHTS_API = """
import sys
from synthmed import Config
from synthmed.errors import SynthmedError
from synthmed.plugins import registry
config = Config(model="resnet18", pretrained=True, weights=sys.argv[1], image_size=16)
try:
    registry("models").get("resnet18")().create(2, 16, config)
except SynthmedError as exc:
    sys.exit(f"Error: {exc}")
"""


# option-command: (make the unreadable path in base, argv(readable data, bad path), pattern)
AS_NOBODY: dict[str, tuple[Callable[[Path, Path], Path], Callable[[Path, Path], list[str]], str]] = {
    "data_dir-imagefolder": (_private_data, lambda d, bad: generate(bad),
                             r"data_dir \(--data-dir\) = '.*private-data' cannot be read \(permission denied for this user\)"
                             r" — .*--data-dir PATH"),
    "data_dir-alzheimer_mri": (_private_data, lambda d, bad: ["generate", "--data-dir", str(bad), "--image-size", "16",
                                                               "--real-frac", "0.5", "--yes", "-q"],
                               r"data_dir \(--data-dir\) = '.*private-data' cannot be read \(permission denied for this "
                               r"user\) — .*readable by this user"),
    "weights": (lambda base, tiny: _private_file(base, "weights.pth", b"\0" * 64),
                lambda d, bad: ["-c", WEIGHTS_API, str(bad)],  # what `train --weights` calls (a CLI train: +10 s)
                r"weights file '.*weights.pth' for model 'resnet18' cannot be read \(permission denied for this user\)"
                r" — .*--weights PATH"),
    "init-ddpm": (lambda base, tiny: _ddpm_checkpoint(base),
                  lambda d, bad: generate(d, "--generator", "ddpm", "--generator-options", f"init={bad}"),
                  r"generator 'ddpm': .*init.pt cannot be read \(Permission denied\) — .*--generator-options"),
    "config": (lambda base, tiny: _private_file(base, "c.yaml", b"epochs: 1\n"),
               lambda d, bad: ["train", "--config", str(bad)],
               r"Invalid value for '--config'.*c.yaml' is not readable"),
}


@pytest.mark.slow  # a subprocess each (seconds of imports)
@pytest.mark.parametrize("case", AS_NOBODY, ids=AS_NOBODY.keys())
def test_unreadable_as_another_user(store_template, tiny_folder, case):
    """Root reads everything: run the CLI as nobody against root's private file or folder."""
    if not _can_drop_privileges():
        pytest.skip("needs root and setpriv to run as another user")
    make, argv, pattern = AS_NOBODY[case]
    base = Path(tempfile.mkdtemp(prefix="synthmed-paths-"))  # pytest's tmp dirs are 0700: nobody cannot enter
    try:
        base.chmod(0o755)
        data = shutil.copytree(tiny_folder, base / "data")
        _world_readable(data)
        home = base / "home"
        home.mkdir()
        shutil.copy(store_template, home / "mlflow.db")  # migrated once per session: no seconds of migrations
        for p in (home, home / "mlflow.db"):
            os.chown(p, NOBODY, NOBODY)
        bad = make(base, tiny_folder)
        env = child_env(HOME=str(home), MPLCONFIGDIR=str(home / "mpl"), SYNTHMED_CACHE_DIR=str(home / "cache"),
                        MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}")
        start = time.monotonic()
        args = argv(data, bad)
        command = [sys.executable, *args] if args[0] == "-c" else cli_argv(*args)
        proc = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command],
                              capture_output=True, text=True, env=env, timeout=120, cwd=home)
        assert time.monotonic() - start < 60
        out = proc.stdout + proc.stderr
        assert_one_clear_line(proc.returncode, out, pattern)
        assert_nothing_half_written(home)
    finally:
        shutil.rmtree(base, ignore_errors=True)
