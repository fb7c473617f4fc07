"""Checkpoints and stop signals (synthmed.checkpoints, synthmed.interrupts): a stopped loop resumes to the
same numbers as one never stopped — the training loop and the ``ddpm``/``ldm`` fits, stopped at any step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synthmed import interrupts
from synthmed.checkpoints import Checkpointer
from synthmed.config import Config
from synthmed.data.base import ImageSet
from synthmed.errors import SynthmedError
from synthmed.generators.fitting import FitCache, ensure_fitted
from synthmed.paths import atomic_write, pid_alive
from synthmed.plugins import registry
from synthmed.training import fit

SIZE, CLASSES = 16, 4


# --- the checkpoint file ---------------------------------------------------------------------------------
def test_a_checkpoint_is_written_when_due_and_read_back(tmp_path):
    ckpt = Checkpointer(tmp_path / "c.pt", every=1e-9, what="test")
    assert ckpt.load() is None
    ckpt.step(lambda: {"w": torch.arange(3)}, 5)
    assert ckpt.saves == 1 and ckpt.seconds > 0
    again = Checkpointer(tmp_path / "c.pt", every=1e-9)
    state = again.load()
    assert torch.equal(state["w"], torch.arange(3)) and state["step"] == 5 and again.resumed_step == 5
    assert state["elapsed"] >= 0
    again.clear()
    assert not (tmp_path / "c.pt").exists()


def test_not_due_writes_nothing_and_zero_turns_checkpoints_off(tmp_path):
    slow = Checkpointer(tmp_path / "a.pt", every=3600)
    slow.step(lambda: pytest.fail("the state is not even built when nothing is due"), 1)
    off = Checkpointer(tmp_path / "b.pt", every=0)
    off.step(lambda: pytest.fail("off"), 1)
    assert not list(tmp_path.iterdir()) and off.load() is None and not off.enabled


def test_a_damaged_checkpoint_is_named_and_temp_files_of_dead_writers_are_removed(tmp_path):
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".c.pt.{dead.stdout.strip()}.x1.part"
    live = tmp_path / f".c.pt.{os.getpid()}.x2.part"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    with pytest.raises(SynthmedError, match=r"checkpoint .*c\.pt is unreadable .* delete it"):
        Checkpointer(tmp_path / "c.pt", every=1).load()
    assert not stale.exists() and live.exists()  # a live writer's temp file is its own business


# --- atomic writes (synthmed.paths.atomic_write: caches, checkpoints, the reference, prediction tables) ----
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=st.one_of(st.none(), st.binary(max_size=64)), new=st.binary(max_size=4096),
       fail_after=st.one_of(st.none(), st.integers(0, 4096)), durable=st.booleans())
def test_an_atomic_write_leaves_the_old_file_or_the_new_one_and_no_temp_file(tmp_path, old, new, fail_after, durable):
    target = tmp_path / "t.bin"
    target.unlink(missing_ok=True)
    if old is not None:
        target.write_bytes(old)

    def write(fh):
        if fail_after is not None:
            fh.write(new[:fail_after])
            raise interrupts.Stopped(signal.SIGTERM)  # a stop (or any error) in the middle of the write
        fh.write(new)

    if fail_after is None:
        assert atomic_write(target, write, durable=durable) == target
        assert target.read_bytes() == new
    else:
        with pytest.raises(interrupts.Stopped):
            atomic_write(target, write, durable=durable)
        assert (target.read_bytes() if target.exists() else None) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == (["t.bin"] if target.exists() else [])


def test_only_synthmed_paths_writes_temp_files_and_renames_them():
    """One way to write a file atomically: no module but synthmed.paths calls mkstemp (the caches,
    checkpoints, the reference classifier and synthmed predict go through atomic_write)."""
    src = Path(__file__).resolve().parents[1] / "src" / "synthmed"
    writers = sorted(str(p.relative_to(src)) for p in src.rglob("*.py") if "mkstemp(" in p.read_text())
    assert writers == ["paths.py"], writers


def test_pid_alive_and_dead():
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert pid_alive(os.getpid()) and not pid_alive(int(dead.stdout))


# --- signals ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_becomes_stopped_with_its_exit_code(signum):
    with pytest.raises(interrupts.Stopped) as caught, interrupts.handling():
        os.kill(os.getpid(), signum)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert caught.value.signum == signum and caught.value.exit_code == 128 + signum
    assert isinstance(caught.value, KeyboardInterrupt)  # every `except KeyboardInterrupt` cleanup runs
    assert signal.getsignal(signum) is not interrupts._handler  # the previous handler is back


def test_deferred_marks_the_stop_pending_until_a_safe_point(tmp_path):
    ckpt = Checkpointer(tmp_path / "c.pt", every=3600, what="loop")
    done = []
    with pytest.raises(interrupts.Stopped), interrupts.handling(), interrupts.deferred():
        for step in range(1, 5):
            if step == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            done.append(step)  # the step in progress finishes
            ckpt.step(lambda: {"done": list(done)}, step)
    assert done == [1, 2]
    assert Checkpointer(tmp_path / "c.pt", every=1).load()["done"] == [1, 2]  # written at the stop, though not due
    assert "loop checkpoint at step 2" in interrupts.kept()[0]


def test_the_second_signal_exits_at_once():
    code = textwrap.dedent("""
        import os, signal, time
        from synthmed import interrupts
        with interrupts.handling(), interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)   # pending: the loop would finish its step
            os.kill(os.getpid(), signal.SIGINT)    # the second: out now
            time.sleep(30)
        print("not reached")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGINT and "not reached" not in done.stdout
    assert "second SIGINT: exiting now" in done.stderr


def test_stopped_crosses_process_boundaries():
    import pickle

    again = pickle.loads(pickle.dumps(interrupts.Stopped(signal.SIGTERM)))
    assert isinstance(again, interrupts.Stopped) and again.exit_code == 143


# --- the training loop resumes to the same numbers -------------------------------------------------------
def _set(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    images = torch.randint(0, 256, (n, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    images[:, :, :4, :4] = (labels * 60).view(-1, 1, 1, 1).to(torch.uint8)
    return ImageSet(images, labels.long())


def _model(config: Config) -> torch.nn.Module:
    torch.manual_seed(config.seed)
    return registry("models").get("cnn")().create(CLASSES, SIZE, config).to(memory_format=torch.channels_last)


class _StopAt:
    """Wraps a policy: sends this process SIGTERM as the ``at``-th batch is augmented (a preemption mid-step)."""

    def __init__(self, policy, at: int):  # noqa: ANN001
        self.policy, self.at, self.calls = policy, at, 0

    def __getattr__(self, name):  # noqa: ANN001
        return getattr(self.policy, name)

    def augment_many(self, batches, generators):  # noqa: ANN001
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.policy.augment_many(batches, generators)


def _train(policy, config, data, ckpt, calls, stop_at=None):  # noqa: ANN001
    model = _model(config)
    wrapped = _StopAt(policy, stop_at) if stop_at else policy
    max_steps = 11 if config.budget == "steps" else None
    info = fit(model, wrapped, data[0], data[1], config, "cpu", lambda m, step=None: calls.append((step, dict(m))),
               max_steps=max_steps, checkpoint=ckpt)
    return model, info


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stop_at=st.integers(1, 16), policy_name=st.sampled_from(["none", "basic"]),
       budget=st.sampled_from(["epochs", "steps"]))
def test_a_training_run_stopped_at_any_step_resumes_to_the_same_numbers(tmp_path_factory, stop_at, policy_name,
                                                                        budget):
    """Stopped by SIGTERM at any optimizer step (mid-epoch or at an epoch's last batch), the rerun continues
    from the checkpoint written at the stop and ends with the weights, outcome (best epoch, kept steps,
    readings) and logged metrics of a run never stopped — validation choice, augmentation draws and the step
    budget included; the two attempts together log each epoch exactly once."""
    torch.set_num_threads(1)
    policy = registry("policies").get(policy_name)()
    config = Config(image_size=SIZE, epochs=3, batch_size=8, lr=0.005, val_frac=0.25, seed=3, device="cpu",
                    precision="fp32", quiet=True, budget=budget)
    data = (_set(40, 3), _set(12, 103))  # 5 batches an epoch: 15 steps (11 under budget=steps)
    whole_logs: list = []
    whole_model, whole = _train(policy, config, data, None, whole_logs)

    path = tmp_path_factory.mktemp("ckpt") / "run.pt"
    first_logs: list = []
    try:
        with interrupts.handling():
            _train(policy, config, data, Checkpointer(path, every=3600), first_logs, stop_at=stop_at)
        return  # the stop would come after the last step (the budget ended training first)
    except interrupts.Stopped:
        pass
    resumed, logs = Checkpointer(path, every=3600), []
    model, info = _train(policy, config, data, resumed, logs)
    assert resumed.resumed_step == stop_at
    for a, b in zip(whole_model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert {k: v for k, v in info.items() if k != "train_seconds"} == \
           {k: v for k, v in whole.items() if k != "train_seconds"}
    assert first_logs + logs == whole_logs


# --- generator fits resume to the same state -------------------------------------------------------------
FITS = {"ldm": {"ae_steps": 4, "steps": 5, "sample_steps": 4},
        "ddpm": {"steps": 6, "width": 8, "resolution": 16, "batch": 4, "sample_steps": 4}}


def _images(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, SIZE, SIZE), dtype=torch.uint8, generator=g), torch.arange(n) % CLASSES


class _StopAtLog:
    """A fit's ``log`` callback that sends SIGTERM when a metric is logged at step ``at`` (of the named one)."""

    def __init__(self, key: str, at: int):
        self.key, self.at = key, at

    def __call__(self, metrics, step=None):  # noqa: ANN001
        if self.key in metrics and step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("name,key,at", [("ldm", "generator_ae_loss", 0), ("ldm", "generator_fit_loss", 0),
                                         ("ddpm", "generator_fit_loss", 0)])
def test_a_fit_stopped_mid_way_resumes_from_its_checkpoint_to_the_same_state(tmp_path, name, key, at):
    """SIGTERM during the autoencoder phase, during the latent UNet phase (ldm) or the UNet fit (ddpm): the fit
    stops after that step with a checkpoint beside the fit cache; the rerun of the same fit continues there
    and stores exactly the state an uninterrupted fit stores."""
    pytest.importorskip("diffusers") if name == "ddpm" else None
    torch.set_num_threads(1)
    images, labels = _images()
    cls = registry("generators").get(name)

    def build():  # noqa: ANN202
        gen = cls(**FITS[name])
        gen.bind(("a", "b", "c", "d"))
        return gen

    whole = build()
    ensure_fitted(whole, images, labels, FitCache(tmp_path / "whole"), seed=0, quiet=True)

    cache = FitCache(tmp_path / "stopped")
    with interrupts.handling(), pytest.raises(interrupts.Stopped):
        ensure_fitted(build(), images, labels, cache, seed=0, quiet=True, log_metrics=_StopAtLog(key, at),
                      checkpoint_every=3600)
    (ckpt,) = list((tmp_path / "stopped").rglob("*.ckpt"))
    assert not list((tmp_path / "stopped").rglob("*.pt"))  # no fitted state: the fit did not finish
    logged: list = []
    again = build()
    info = ensure_fitted(again, images, labels, cache, seed=0, quiet=True, checkpoint_every=3600,
                         log_metrics=lambda m, step=None: logged.append((step, dict(m))))
    assert not info.from_cache and not ckpt.exists()  # finished: the checkpoint has served and is gone
    resumed_at = [m["generator_fit_resumed_at"] for _, m in logged if "generator_fit_resumed_at" in m]
    assert resumed_at and resumed_at[0] >= 1
    a, b = whole.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    for part in ("unet", "autoencoder"):
        if part in a:
            for k in a[part]:
                assert torch.equal(a[part][k], b[part][k]), (part, k)
