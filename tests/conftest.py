"""Shared fixtures: a fresh plugin manager, a real MLflow store in a tmp dir, the real dataset."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("SYNTHMED_TEST_DATA", REPO.parent / "shared" / "data" / "alzheimer_mri"))

# Under pytest-xdist (`pytest -n 2`, the README's command) each worker computes on one thread, and so do
# the subprocesses it starts: two workers of two threads each on a 2-core machine spin against each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

# Tests never touch the network: hub calls fail in 0.1 s instead of ~45 s of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
# Installed third-party plugins are loaded on purpose in the tests that want them.
os.environ.setdefault("SYNTHMED_DISABLE_PLUGIN_AUTOLOAD", "0")


@pytest.fixture(autouse=True, scope="session")
def _private_generation_cache(tmp_path_factory):
    """No test writes to the user's real generation cache."""
    saved = os.environ.get("SYNTHMED_CACHE_DIR")
    os.environ["SYNTHMED_CACHE_DIR"] = str(tmp_path_factory.mktemp("generation-cache"))
    yield
    if saved is None:
        os.environ.pop("SYNTHMED_CACHE_DIR", None)
    else:
        os.environ["SYNTHMED_CACHE_DIR"] = saved


@pytest.fixture
def pm():
    """A fresh plugin manager per test (built-ins and installed entry points)."""
    from synthmed.plugins import get_plugin_manager

    return get_plugin_manager()


@pytest.fixture(scope="session")
def tiny_sd_img2img(tmp_path_factory) -> Path:
    """A tiny random ``StableDiffusionImg2ImgPipeline`` folder (for the synthmed-diffusers plugin)."""
    pytest.importorskip("diffusers", reason="diffusers is not installed")
    pytest.importorskip("transformers", reason="transformers is not installed")
    from _tiny_diffusers import save_tiny_img2img

    return save_tiny_img2img(tmp_path_factory.mktemp("tiny-sd-img2img"))


@pytest.fixture
def real_data_dir() -> Path:
    """The real Alzheimer MRI copy; required under CI, skipped elsewhere when absent."""
    if (REAL_DATA / "data").is_dir():
        return REAL_DATA
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the real dataset is missing at {REAL_DATA}")
    pytest.skip(f"real dataset not found at {REAL_DATA}")


@pytest.fixture(scope="session")
def store_template(tmp_path_factory) -> Path:
    """An empty, migrated MLflow sqlite store: migrating one costs seconds, so it is done once and copied per test."""
    db = tmp_path_factory.mktemp("store-template") / "mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_"))}
    code = "import mlflow, sys; mlflow.MlflowClient(sys.argv[1]).search_experiments()"
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{db}"], check=True, env=env, timeout=300)
    return db


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch, store_template) -> str:
    """A real MLflow sqlite store (and artifact root) in a tmp dir, made the tracking URI.

    The store is a fresh copy of the session's migrated empty store: the same as a new one, without
    the seconds of schema migrations each new sqlite store costs.
    """
    import mlflow

    for var in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)  # mlflow.set_experiment exports the id to os.environ
    shutil.copy(store_template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    monkeypatch.chdir(tmp_path)  # default artifact root ./mlruns lands in tmp_path
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    for var in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(var, None)


@pytest.fixture
def tiny_splits():
    """A 4-class toy dataset of 32x32 uint8 images (fast, no files)."""
    import torch

    from synthmed.data.base import ImageSet, Splits

    g = torch.Generator().manual_seed(0)

    def make(n: int) -> ImageSet:
        labels = torch.arange(n) % 4
        images = torch.randint(0, 256, (n, 1, 32, 32), generator=g, dtype=torch.uint8)
        images[:, :, :8, :8] = (labels * 60).view(-1, 1, 1, 1).to(torch.uint8)  # learnable signal
        return ImageSet(images, labels.long())

    return Splits(
        train=make(64),
        test=make(16),
        classes=("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented"),
        fingerprint="tiny",
        meta={"source": "tiny"},
    )


@pytest.fixture
def image_folder():
    """``make(root, per_class=12, size=16)``: two classes of tiny PNGs, bright in the left or the right half
    (learnable in a few epochs), in the imagefolder layout; returns ``root``."""
    import torch
    from PIL import Image

    def make(root: Path, per_class: int = 12, size: int = 16) -> Path:
        g = torch.Generator().manual_seed(0)
        for c, name in enumerate(("left", "right")):
            (root / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = torch.randint(0, 60, (size, size), generator=g)
                img[:, c * size // 2:(c + 1) * size // 2] += 150
                Image.fromarray(img.clamp(0, 255).to(torch.uint8).numpy()).save(root / name / f"{i}.png")
        return root

    return make
