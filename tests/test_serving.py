"""What synthmed hands to others: the registered model as a pyfunc over images, its card, `synthmed predict`,
and `mlflow models serve` answering over HTTP as users call it."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from synthmed import train
from synthmed.cli import main
from synthmed.config import Config
from synthmed.data._decode import decode_many
from synthmed.errors import SynthmedError
from synthmed.evaluation import predict_logits
from synthmed.serving import to_model_images

NAME = "synthmed-alzheimer_mri-cnn"
CLASSES = ["Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented"]


def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def registered(mlflow_uri, tiny_splits):
    """A tiny run's registered model (32 px): ``(train result, the network)``."""
    torch.set_num_threads(1)
    result = train(Config(image_size=32, epochs=2, batch_size=16, quiet=True, gradcam=True, experiment="serve",
                          val_frac=0.0), splits=tiny_splits)
    network = mlflow.pytorch.load_model(f"models:/{NAME}@newest", map_location="cpu")
    return result, network


def expected(network, images: torch.Tensor) -> np.ndarray:  # noqa: ANN001
    return torch.softmax(predict_logits(network, images), dim=1).numpy()


def test_the_pyfunc_answers_as_evaluation_does_for_every_kind_of_image(registered, tiny_splits):
    """uint8 arrays, floats in [0, 1], 3 channels (HWC and CHW), PNG and JPEG bytes, base64 text and other sizes:
    the pyfunc's probabilities are those of synthmed's own evaluation of the same images, decoded as training
    decodes them."""
    _, network = registered
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@newest")
    meta = model.metadata.metadata
    assert meta["image_size"] == 32 and meta["classes"] == CLASSES and len(meta["label_fingerprint"]) == 16
    images = tiny_splits.test.images[:6]  # (6, 1, 32, 32) uint8, as training saw them
    want = expected(network, images)
    gray = [im[0].numpy() for im in images]
    kinds = {
        "uint8": gray,
        "float": [g.astype(np.float32) / 255.0 for g in gray],
        "rgb": [np.stack([g] * 3, -1) for g in gray],
        "chw": [np.stack([g] * 3, 0) for g in gray],
        "png": [png(g) for g in gray],
        "base64": [base64.b64encode(png(g)).decode() for g in gray],
        "tensor": list(images),
    }
    for kind, items in kinds.items():
        table = model.predict(pd.DataFrame({"image": items}))
        assert list(table.columns) == [*CLASSES, "predicted"], kind
        np.testing.assert_allclose(table[CLASSES].to_numpy(), want, rtol=0, atol=1e-6, err_msg=kind)
        assert list(table["predicted"]) == [CLASSES[i] for i in want.argmax(1)]
    big = [np.kron(g, np.ones((3, 2), dtype=np.uint8)) for g in gray]  # 96 x 64: stretched back to 32 x 32
    jpegs = [png(g, "JPEG") for g in big]
    decoded, _, _ = decode_many(jpegs, [f"j{i}" for i in range(6)], 32, skip_bad=False, where="test")
    table = model.predict({"image": jpegs})
    np.testing.assert_allclose(table[CLASSES].to_numpy(), expected(network, decoded), atol=1e-6)


def test_bad_images_are_named(registered):
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@newest")
    with pytest.raises(SynthmedError, match=r"cannot read image 1 as an image.*base64"):
        model.predict({"image": [np.zeros((8, 8), np.uint8), b"not an image"]})
    with pytest.raises(SynthmedError, match=r"float image must hold values in \[0, 1\]"):
        to_model_images([np.full((8, 8), 3.0)], 32)
    images, kept, skipped = to_model_images([b"junk", np.zeros((8, 8), np.uint8)], 32, names=["a.png", "b"],
                                            skip_bad=True)
    assert kept == [1] and skipped == ["a.png"] and images.shape == (1, 1, 32, 32)


def test_the_model_card_names_the_runs_data_generator_and_metrics(mlflow_uri, tiny_splits):
    result = train(Config(image_size=32, epochs=1, batch_size=16, quiet=True, gradcam=False, experiment="card",
                          policy="synthetic", generator="pca", generator_options="components=4", real_frac=0.5,
                          val_frac=0.0), splits=tiny_splits)
    client = mlflow.MlflowClient()
    version = client.get_model_version(NAME, result.registered_version)
    card = version.description
    params = client.get_run(result.run_id).data.params
    assert card.startswith(f"# Model card: {NAME} v{result.registered_version}")
    assert "Research model — not for clinical use" in card and "near-twin" in card
    assert "generator `pca`" in card and params["generator_fit_key"] in card
    assert f"{result.metrics['test_cross_entropy']:.4f}" in card
    for c in CLASSES:
        assert f"recall of {c}" in card
    assert "1-NN pixel lookup cross-entropy" in card and "class prior cross-entropy" in card
    run_card = mlflow.artifacts.load_text(f"runs:/{result.run_id}/model_card.md")
    assert run_card == card
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/{result.registered_version}"))
    assert "generator `pca`" in (folder / "model_card.md").read_text()


def test_synthmed_predict_writes_a_csv_and_names_or_skips_bad_files(registered, tiny_splits, tmp_path):
    _, network = registered
    folder = tmp_path / "images"
    folder.mkdir()
    gray = [im[0].numpy() for im in tiny_splits.test.images[:4]]
    for i, g in enumerate(gray):
        (folder / f"{i}.png").write_bytes(png(g))
    out = tmp_path / "preds.csv"
    result = CliRunner().invoke(main, ["predict", "--model-uri", f"models:/{NAME}@newest", "--output", str(out),
                                       str(folder)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["file", *CLASSES, "predicted"] and len(table) == 4
    np.testing.assert_allclose(table[CLASSES].to_numpy(), expected(network, tiny_splits.test.images[:4]), atol=1e-6)
    (folder / "broken.png").write_bytes(b"\x89PNG truncated")
    result = CliRunner().invoke(main, ["predict", "--model-uri", f"models:/{NAME}@newest", str(folder)])
    assert result.exit_code != 0 and "broken.png" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["predict", "--model-uri", f"models:/{NAME}@newest", "--skip-bad-images",
                                       "--output", str(out), str(folder)])
    assert result.exit_code == 0 and "skipped 1 file(s)" in result.output and len(pd.read_csv(out)) == 4
    result = CliRunner().invoke(main, ["predict", "--model-uri", f"models:/{NAME}@newest", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "does not exist" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_posted_png_with_named_probabilities(registered, tiny_splits, tmp_path,
                                                                          mlflow_uri):
    """`mlflow models serve -m models:/...@newest --env-manager local`, as users start it, from another folder:
    posted PNGs (base64 in JSON) come back as the class probabilities synthmed's evaluation gives them."""
    _, network = registered
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["MLFLOW_TRACKING_URI"] = mlflow_uri
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # an activated venv: uvicorn
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cmd = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", f"models:/{NAME}@newest",
           "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(cmd, cwd=elsewhere, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow models serve did not start: {(tmp_path / 'serve.log').read_text()[-3000:]}")
                time.sleep(0.5)
        gray = [im[0].numpy() for im in tiny_splits.test.images[:3]]
        body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(png(g)).decode()] for g in gray]}}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())["predictions"]
        assert [sorted(row) for row in answer] == [sorted([*CLASSES, "predicted"])] * 3
        got = np.array([[row[c] for c in CLASSES] for row in answer])
        np.testing.assert_allclose(got, expected(network, tiny_splits.test.images[:3]), atol=1e-6)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
