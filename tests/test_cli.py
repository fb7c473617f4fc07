"""The CLI: user mistakes are clean errors (no traceback); options map onto Config."""

from __future__ import annotations

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
