"""Family 2, faults: the generator's server failing, a generator raising mid-batch, and the process
killed with SIGKILL mid-generation, mid-training and mid-sweep. After a rerun: no paid generation
repeated, no finished simulation repeated or lost, no half-written cache file, and the killed
process's runs marked KILLED with a reason by the next synthmed run against the store."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch
from _openai_server import error, openai_plugin
from _rel import TINY, child_env, cli_argv, runs_in, wait_for, write_folder
from _servers import FaultyImagesServer
from click.testing import CliRunner

from synthmed.errors import SynthmedError
from synthmed.generators.cache import GenerationCache, fill

pytestmark = pytest.mark.fault
KEY = "sk-rel-fault-0123456789"


@pytest.fixture
def server():
    with FaultyImagesServer() as s:
        yield s


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    _requests = pytest.importorskip("synthmed_openai._requests", reason="plugins/synthmed-openai is not installed")
    monkeypatch.setattr(_requests, "BACKOFF_S", 0.01)


def openai(server, **options):
    return openai_plugin(server, KEY, **options)


def sources(n=4):
    small = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    return small.repeat_interleave(8, -1).repeat_interleave(8, -2)  # (n, 1, 32, 32) uint8


def run_fill(root: Path, gen, n=4):
    src = sources(n)
    return fill(GenerationCache(root), gen, src, torch.zeros(n, dtype=torch.long), [(i, 0) for i in range(n)], quiet=True)


def assert_cache_whole(root: Path) -> int:
    """No temp file, every PNG decodes; returns the entry count."""
    from PIL import Image

    assert not list(root.rglob("*.part")), list(root.rglob("*.part"))
    pngs = list(root.rglob("*.png"))
    for png in pngs:
        with Image.open(png) as im:
            im.load()
    return len(pngs)


def assert_nothing_paid_twice(server) -> None:
    counts = server.delivered or server.success_count_by_source()
    assert counts and max(counts.values()) == 1, counts


# --- the server failing ----------------------------------------------------------------------------
SERVER_FAULTS = {
    "429-storm": lambda s: s.push(*[error(429, "rate limited", {"Retry-After": "0"})] * 6),
    "500s": lambda s: s.push(*[error(500, "internal")] * 3),
    "503-then-ok": lambda s: s.push(error(503, "overloaded"), error(502, "bad gateway")),
    "dropped-connections": lambda s: setattr(s, "drop", 3),
    "timeouts": lambda s: (setattr(s, "stall_next", 1), setattr(s, "stall_s", 2.5)),
}


@pytest.mark.parametrize("inject", SERVER_FAULTS.values(), ids=SERVER_FAULTS.keys())
def test_server_fault_is_retried_and_nothing_is_paid_twice(tmp_path, server, inject):
    inject(server)
    result = run_fill(tmp_path / "cache", openai(server, max_retries=8, timeout=1))
    assert result.stats.generated == 4 and all(img is not None for img in result.images)
    assert assert_cache_whole(tmp_path / "cache") == 4
    assert_nothing_paid_twice(server)


def test_429_storm_beyond_retries_fails_clearly_then_resumes(tmp_path, server):
    server.fail_after = 2  # two images, then the service is down
    with pytest.raises(SynthmedError, match=r"still failing after 1 retries .*try later") as caught:
        run_fill(tmp_path / "cache", openai(server, max_retries=1))
    assert KEY not in str(caught.value)
    assert assert_cache_whole(tmp_path / "cache") == 2  # the finished ones are kept
    server.fail_after = None
    result = run_fill(tmp_path / "cache", openai(server, max_retries=1))
    assert result.stats.hits == 2 and result.stats.generated == 2
    assert_nothing_paid_twice(server)


def test_generator_that_raises_mid_batch(tmp_path):
    from synthmed.generators.base import Generator

    calls = Counter()

    class Flaky(Generator):
        name = "flaky-test"
        deterministic = True
        fail_at: int | None = 2

        def generate(self, images, labels, *, variation, seed):
            calls["n"] += 1
            if self.fail_at is not None and calls["n"] > self.fail_at:
                raise RuntimeError("the model crashed (injected)")
            return 255 - images

    with pytest.raises(RuntimeError, match="injected"):
        run_fill(tmp_path / "cache", Flaky(), n=5)
    assert assert_cache_whole(tmp_path / "cache") == 2
    Flaky.fail_at = None
    calls.clear()
    result = run_fill(tmp_path / "cache", Flaky(), n=5)
    assert result.stats.hits == 2 and calls["n"] == 3, "only the missing images are made again"


# --- SIGKILL ------------------------------------------------------------------------------------------
def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cli_argv(*args), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)
    if proc.stdout:
        proc.stdout.close()


@pytest.mark.slow
def test_sigkill_mid_generation(store, tmp_path, server):
    """Killed while request 3 is in flight: the two delivered images are kept and never bought again."""
    folder = write_folder(tmp_path / "d", {"a": 12, "b": 12})
    gate = threading.Event()

    def hold():  # request 3 waits (unanswered) until the process is dead, then is abandoned
        gate.wait(120)
        raise ConnectionAbortedError("abandoned: the client was killed")

    server.on_request[3] = hold
    cache = tmp_path / "cache"
    args = ["generate", "--dataset", "imagefolder", "--data-dir", str(folder), "--image-size", "16",
            "--real-frac", "0.5", "--val-frac", "0", "--generator", "openai", "--allow-external", "--yes", "-q",
            "--cache-dir", str(cache), "--generator-options", f"base_url={server.url},size=64x64,concurrency=1"]
    # no carve: 6 real images per class and 6 variations, one per source (counted per source below)
    proc = start(args, child_env(OPENAI_API_KEY=KEY), tmp_path)
    try:
        wait_for(lambda: len(server.seen) >= 3 and len(list(cache.rglob("*.png"))) >= 2, 120, proc,
                 "two cached images and a third request in flight")
    finally:
        kill(proc)
        gate.set()
    assert assert_cache_whole(cache) == 2
    result = CliRunner().invoke(__import__("synthmed.cli", fromlist=["main"]).main, args, env={"OPENAI_API_KEY": KEY})
    assert result.exit_code == 0, result.output
    assert assert_cache_whole(cache) >= 4 and "generated" in result.output
    assert_nothing_paid_twice(server)


def statuses(db: Path) -> Counter:
    return Counter(status for _, status, _ in runs_in(db))


@pytest.mark.slow
def test_sigkill_mid_training_is_reaped_by_the_next_run(store, tmp_path, tiny_folder):
    args = ["train", "--dataset", "imagefolder", "--data-dir", str(tiny_folder), *TINY]
    long = [a if a != "1" or i != TINY.index("--epochs") + 1 else "100000" for i, a in enumerate(TINY)]
    proc = start(["train", "--dataset", "imagefolder", "--data-dir", str(tiny_folder), *long],
                 child_env(MLFLOW_TRACKING_URI=os.environ["MLFLOW_TRACKING_URI"]), tmp_path)
    try:
        wait_for(lambda: any(s == "RUNNING" and "synthmed.pid" in t for _, s, t in runs_in(store)), 120, proc,
                 "a RUNNING run in the store")
    finally:
        kill(proc)
    (ghost,) = [r for r, s, _ in runs_in(store) if s == "RUNNING"]
    from synthmed.cli import main

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    runs = {r: (s, t) for r, s, t in runs_in(store)}
    assert runs[ghost][0] == "KILLED"
    assert f"process {proc.pid}" in runs[ghost][1]["synthmed.failure_reason"]
    assert statuses(store) == Counter({"KILLED": 1, "FINISHED": 1})


@pytest.mark.slow
def test_sigkill_mid_sweep_loses_and_repeats_nothing(store, tmp_path, tiny_folder):
    sims = 4
    args = ["sweep", "--dataset", "imagefolder", "--data-dir", str(tiny_folder), "--image-size", "16", "--epochs", "3",
            "--batch-size", "8", "--models", "cnn", "--policies", "none,synthetic", "--real-fracs", "0.5",
            "--simulations", str(sims), "--quiet"]
    proc = start(args, child_env(MLFLOW_TRACKING_URI=os.environ["MLFLOW_TRACKING_URI"],
                                 SYNTHMED_CACHE_DIR=os.environ["SYNTHMED_CACHE_DIR"]), tmp_path)
    try:
        wait_for(lambda: sum(s == "FINISHED" and "synthmed.simulation" in t for _, s, t in runs_in(store)) >= 1, 180,
                 proc, "a finished simulation")
    finally:
        kill(proc)
    before = {r: s for r, s, t in runs_in(store) if "synthmed.simulation" in t}
    assert "FINISHED" in before.values() and len([s for s in before.values() if s == "FINISHED"]) < 2 * sims
    from synthmed.cli import main

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    runs = runs_in(store)
    children = [(s, t) for _, s, t in runs if "synthmed.simulation" in t]
    finished = Counter((t["synthmed.cell"], t["synthmed.simulation"]) for s, t in children if s == "FINISHED")
    assert len(finished) == 2 * sims and set(finished.values()) == {1}, finished  # none lost, none repeated
    for run_id, status in before.items():
        if status == "FINISHED":  # finished before the kill: kept, not rerun
            assert dict((r, s) for r, s, _ in runs)[run_id] == "FINISHED"
    killed = [t for s, t in children if s == "KILLED"]
    for tags in killed:
        assert tags.get("synthmed.failure_reason") or tags.get("synthmed.error")
    assert not [r for r, s, _ in runs if s == "RUNNING"], "no ghost left RUNNING"
    assert_cache_whole(Path(os.environ["SYNTHMED_CACHE_DIR"]))



# the process dies the instant its run exists, before any header or sweep tags are logged
DIE_AT = {
    "train": ("synthmed.tracking.logger", "", "_log_run_header", TINY),
    "sweep": ("mlflow.tracking", "MlflowClient", "log_batch",
              ["--image-size", "16", "--epochs", "1", "--batch-size", "8", "--models", "cnn", "--policies", "none",
               "--real-fracs", "0.5", "--simulations", "1", "--quiet"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(DIE_AT))
def test_killed_the_instant_a_run_is_created_is_still_reaped(store, tmp_path, tiny_folder, command):
    """A run carries its owner from creation: a kill before the header leaves a ghost the next run can prove dead."""
    module, owner, attr, extra = DIE_AT[command]
    args = [command, "--dataset", "imagefolder", "--data-dir", str(tiny_folder), *extra]
    code = ("import importlib, os, sys\n"
            f"target = importlib.import_module({module!r})\n"
            f"target = getattr(target, {owner!r}) if {owner!r} else target\n"
            f"setattr(target, {attr!r}, lambda *a, **k: os._exit(9))\n"
            "from synthmed.cli import main\n"
            "main(sys.argv[1:])\n")
    died = subprocess.run([sys.executable, "-c", code, *args], env=child_env(MLFLOW_TRACKING_URI=os.environ["MLFLOW_TRACKING_URI"]),
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert died.returncode == 9, died.stdout + died.stderr
    (ghost,) = [(r, t) for r, s, t in runs_in(store) if s == "RUNNING"]
    assert "synthmed.pid" in ghost[1], ghost  # the owner was recorded when the run was created
    from synthmed.cli import main

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    runs = {r: (s, t) for r, s, t in runs_in(store)}
    assert "ended without ending this run" in runs[ghost[0]][1]["synthmed.failure_reason"]
    if command == "sweep":  # the killed sweep's parent is found by its tags and resumed, not duplicated
        assert [r for r, (_, t) in runs.items() if t.get("synthmed.sweep") == "1"] == [ghost[0]]
        assert runs[ghost[0]][0] == "FINISHED"
    else:
        assert runs[ghost[0]][0] == "KILLED"
    assert not [r for r, (s, _) in runs.items() if s == "RUNNING"], "no ghost left RUNNING"


@pytest.mark.slow
def test_learned_generator_sigkilled_mid_fit_resumes_from_its_last_periodic_checkpoint(store, tmp_path, tiny_folder):
    """SIGKILL (no cleanup at all) while an `ldm` fit writes a checkpoint every 0.2 s: the rerun removes the dead
    writer's temp file, continues the fit from the last whole checkpoint and finishes it."""
    cache = Path(os.environ["SYNTHMED_CACHE_DIR"])
    args = ["generate", "--dataset", "imagefolder", "--data-dir", str(tiny_folder), "--image-size", "16",
            "--real-frac", "0.5", "--generator", "ldm", "--generator-options", "ae_steps=200,steps=10,sample_steps=2",
            "--checkpoint-every", "0.2", "--yes"]
    proc = start(args, child_env(SYNTHMED_CACHE_DIR=str(cache)), tmp_path)
    try:
        wait_for(lambda: bool(list(cache.rglob("*.ckpt"))), 300, proc, "a periodic checkpoint")
    finally:
        kill(proc)
    (ckpt,) = cache.rglob("*.ckpt")
    reached = torch.load(ckpt, weights_only=False)["step"]
    assert 1 <= reached < 200
    again = subprocess.run(cli_argv(*args), env=child_env(SYNTHMED_CACHE_DIR=str(cache)), cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    resumed_at = [int(x) for x in re.findall(r" (\d+)/200 ", again.stderr)]
    assert resumed_at and min(resumed_at) >= reached  # not from step 0: from the last checkpoint (or later)
    assert not ckpt.exists() and not [p for p in cache.rglob("*") if p.name.endswith((".part", ".tmp"))]
