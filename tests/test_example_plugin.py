"""The example plugin from a blank folder: install it into a fresh virtual environment beside
synthmed, find it in ``synthmed plugins``, run its own tests (synthmed's generator contract, through
``synthmed.testing``), train one synthetic run.

The fresh environment is created without pip and without network: it sees the packages of the
interpreter running the tests through a ``.pth`` file (``site.addsitedir``), and the running
interpreter's pip installs synthmed and ``plugins/synthmed-example`` into it, editable, with
``--no-index --no-build-isolation``. What is checked is what a plugin author relies on: the
entry point, the provider shown, its own contract tests (``synthmed.testing``) and a training run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import mlflow
import pytest
from PIL import Image

from synthmed.testing import GENERATOR_RULES

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "plugins" / "synthmed-example"
NAME, DIST = "mirror-jitter", "synthmed-example"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new virtual environment holding editable synthmed and synthmed-example; returns its bin/."""
    root = tmp_path_factory.mktemp("example-plugin") / "venv"
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    parent = sysconfig.get_path("purelib")  # torch, mlflow, pytest, setuptools... of the test interpreter
    # "zz": after the fresh environment's own editable-install .pth files, so its synthmed comes first
    Path(purelib, "zz_synthmed_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index",
                    "--no-deps", "--no-build-isolation", "-e", str(REPO), "-e", str(EXAMPLE)],
                   check=True, timeout=300)
    return root / "bin"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_"))}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", SYNTHMED_CACHE_DIR=str(tmp_path / "cache"),
               SYNTHMED_DISABLE_PLUGIN_AUTOLOAD="0", HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    env.pop("PYTHONPATH", None)  # the fresh environment's own synthmed, not the caller's path
    return env


def test_plugins_lists_the_generator_with_its_distribution(fresh_venv, tmp_path):
    out = subprocess.run([fresh_venv / "synthmed", "plugins", "--json"], env=_env(tmp_path),
                         capture_output=True, text=True, check=True, timeout=120)
    generators = {e["name"]: e for e in json.loads(out.stdout)["generators"]}
    assert NAME in generators, out.stdout
    assert generators[NAME]["provider"] == f"{DIST} 0.1.0"
    assert generators[NAME]["class"] == "synthmed_example.MirrorJitter"


def test_its_own_tests_pass_synthmeds_contract(fresh_venv, tmp_path):
    """The plugin's tests/ (synthmed.testing's checks, as a plugin author runs them) against the installed synthmed."""
    result = subprocess.run([fresh_venv / "python", "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"],
                            env=_env(tmp_path), cwd=EXAMPLE, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for rule in GENERATOR_RULES:
        if rule != "fit":  # mirror-jitter does not learn: that one is skipped, saying so
            assert f"PASSED tests/test_contract.py::test_contract[{NAME}-{rule}]" in result.stdout, result.stdout[-3000:]
    assert f"generator '{NAME}': rule 'fit' not checked — it does not learn" in result.stdout
    assert "PASSED tests/test_contract.py::test_contract_with_options_as_the_command_line_gives_them" in result.stdout


def _image_folder(root: Path) -> Path:
    """Four classes of twelve 16x16 images each, a learnable bright corner per class."""
    for c, name in enumerate(("a", "b", "c", "d")):
        (root / name).mkdir(parents=True)
        for k in range(12):
            img = Image.new("L", (16, 16), color=20 + 3 * k)
            img.paste(60 * c + 20, (0, 0, 6, 6))
            img.save(root / name / f"{k}.png")
    return root


def test_trains_a_synthetic_run(fresh_venv, tmp_path):
    env = _env(tmp_path)
    data = _image_folder(tmp_path / "scans")
    out = subprocess.run(
        [fresh_venv / "synthmed", "train", "--dataset", "imagefolder", "--data-dir", str(data),
         "--policy", "synthetic", "--generator", NAME, "--generator-options", "shift=1,gain=0.05",
         "--real-frac", "0.5", "--epochs", "1", "--image-size", "16", "--batch-size", "8",
         "--device", "cpu", "--no-gradcam", "--no-log-model", "--register", "none", "--experiment", "example"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_id = out.stdout.split()[1]
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["generator"] == NAME
    assert int(run.data.params["n_train_synthetic"]) > 0
    assert "test_cross_entropy" in run.data.metrics
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
