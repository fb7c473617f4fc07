"""The CLI: user mistakes are clean errors (no traceback); options map onto Config."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from synthmed.cli import build_config, main


@pytest.mark.parametrize(
    "args, message",
    [
        (["--real-frac", "0"], "real_frac=0.0 is out of range — allowed: > 0.0 and <= 1.0"),
        (["--real-frac", "1.5"], "real_frac=1.5 is out of range"),
        (["--real-frac", "nan"], "real_frac=nan must be a finite number"),
        (["--model", "resnet"], "unknown model 'resnet' — installed:"),
        (["--policy", "dalle"], "unknown policy 'dalle' — installed:"),
        (["--config", "missing.yaml"], "config file 'missing.yaml' does not exist"),
        (["--dataset", "imagefolder", "--data-dir", "/no/such/dir"], "/no/such/dir"),
        (["--device", "gpu", "--data-dir", "/no/such/dir"], "device='gpu' is not a torch device"),
        (["--device", "cuda:99", "--data-dir", "/no/such/dir"], "device='cuda:99' but this machine has"),
    ],
)
def test_user_mistakes_are_click_errors(args, message, mlflow_uri):
    result = CliRunner().invoke(main, ["train", "--quiet", *args])
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_bool_options_take_values_like_mlproject():
    assert build_config(None, {"pretrained": "true", "gradcam": None, "no_gradcam": True}).gradcam is False
    assert build_config(None, {"pretrained": "true", "no_pretrained": False}).pretrained is True
    assert build_config(None, {"quiet": "false"}).quiet is False


def test_empty_optional_values_from_mlproject_mean_unset():
    cfg = build_config(None, {"synth_frac": "", "data_dir": "", "generator_options": ""})
    assert cfg.synth_frac is None and cfg.data_dir is None and cfg.generator_options is None
    result = CliRunner().invoke(main, ["train", "--synth-frac", "", "--real-frac", "2"])
    assert "real_frac=2.0 is out of range" in result.output  # parsed past the empty synth_frac


def test_config_file_then_options(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("real_frac: 0.3\nepochs: 7\n")
    cfg = build_config(str(path), {"epochs": 2, "policy": None})
    assert cfg.real_frac == 0.3 and cfg.epochs == 2


def test_plugins_command_lists_every_kind():
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    for kind in ("datasets:", "policies:", "models:", "generators:"):
        assert kind in result.output
    assert "alzheimer_mri" in result.output and "synthmed 0.1.0" in result.output


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "synthmed.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout


@pytest.mark.parametrize("kept, given, expected", [(False, None, "1"), (False, "0", "0"), (True, None, None)])
def test_the_cli_asks_for_huge_pages_where_freed_memory_is_not_kept_unless_the_environment_says(
        monkeypatch, kept, given, expected):
    import synthmed.runtime
    from synthmed.runtime import HUGE_PAGES_ENV

    monkeypatch.setattr(synthmed.runtime, "keep_freed_memory", lambda: kept)
    if given is None:
        monkeypatch.setenv(HUGE_PAGES_ENV, "recorded, so that the test's undo removes what the CLI sets")
        monkeypatch.delenv(HUGE_PAGES_ENV)
    else:
        monkeypatch.setenv(HUGE_PAGES_ENV, given)
    assert CliRunner().invoke(main, ["plugins"]).exit_code == 0
    assert os.environ.get(HUGE_PAGES_ENV) == expected


_FAULTS = """
import resource, sys
from synthmed.runtime import use_huge_pages
use_huge_pages()  # what the CLI does first
import torch
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    x = torch.empty(64 << 20, dtype=torch.uint8)
    x.fill_(1)  # touch every page
    del x
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
"""


def _kernel_offers_huge_pages() -> bool:
    try:
        return "[never]" not in open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return False


@pytest.mark.skipif(not _kernel_offers_huge_pages(), reason="this kernel has transparent huge pages off")
def test_huge_pages_cut_the_page_faults_of_large_tensors():
    """A 64 MiB tensor costs 16,384 faults in 4 KiB pages; in 2 MiB pages a few dozen (plus the C library's)."""
    def faults(extra_env):
        env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"} | extra_env
        out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return int(out.stdout.split()[-1])

    off, on = faults({"THP_MEM_ALLOC_ENABLE": "0"}), faults({})
    assert off > 10_000 and on < off / 4, (off, on)


_STEP_FAULTS = """
import resource
from synthmed.runtime import keep_freed_memory
applied = keep_freed_memory()  # what the CLI does first (tune_memory)
import torch
import torch.nn.functional as F
from synthmed.models.cnn import basic_cnn

model = basic_cnn(4, 128)
opt = torch.optim.Adam(model.parameters(), fused=True)
x, y = torch.rand(32, 1, 128, 128), torch.randint(0, 4, (32,))

def step():
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

for _ in range(3):  # the first steps fault in either case
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
"""


def _glibc_with_4k_pages_for_fresh_maps() -> bool:
    import platform

    try:
        always = "[always]" in open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        always = False
    return sys.platform == "linux" and platform.libc_ver()[0] == "glibc" and not always


@pytest.mark.skipif(not _glibc_with_4k_pages_for_fresh_maps(), reason="needs glibc, and fresh maps in 4 KiB pages")
def test_a_training_step_reuses_freed_memory_instead_of_faulting_it_in_again():
    """The 128-px CNN's step, batch 32: glibc maps its large activations afresh every step (measured
    about 179,000 faults a step); with the freed blocks kept, a few thousand. glibc's own variable opts out."""
    def run(extra_env):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        env |= {"THP_MEM_ALLOC_ENABLE": "0", **extra_env}
        out = subprocess.run([sys.executable, "-c", _STEP_FAULTS], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        applied, faults = out.stdout.split()[-2:]
        return applied == "True", int(faults)

    (applied, kept), (opted_out, fresh) = run({}), run({"MALLOC_MMAP_MAX_": "65536"})
    assert applied and not opted_out
    assert fresh > 50_000 and kept < fresh / 10, (fresh, kept)


_RELEASE = """
import os
from synthmed.runtime import keep_freed_memory, release_freed_memory
import torch

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

assert keep_freed_memory()
keep = torch.ones(1 << 20)  # a live block after the large one, so the heap's top cannot simply shrink
x = torch.ones(64 << 20)  # 256 MiB, touched
y = torch.ones(1 << 20)
del x
kept = rss_mb()
release_freed_memory()
print(kept - rss_mb())
"""


@pytest.mark.skipif(not _glibc_with_4k_pages_for_fresh_maps(), reason="needs glibc")
def test_freed_memory_kept_during_a_run_goes_back_to_the_kernel_after_it():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | {"THP_MEM_ALLOC_ENABLE": "0"}
    out = subprocess.run([sys.executable, "-c", _RELEASE], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) > 200  # MiB handed back
