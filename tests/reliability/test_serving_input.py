"""Bad input to what synthmed hands to others: `synthmed predict` and the registered model's pyfunc.

Each case ends in one clear error that names the thing and says what to do — never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from synthmed.errors import SynthmedError

pytestmark = pytest.mark.bad_input

NAME = "rel-serving"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A synthmed model (untrained cnn, 16 px) and a plain MLflow pytorch model, in a store of their own."""
    import mlflow
    import torch

    from synthmed.config import Config
    from synthmed.plugins import registry
    from synthmed.serving import log_classifier

    root = tmp_path_factory.mktemp("serving-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved = {k: os.environ.pop(k, None) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")}
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    try:
        torch.manual_seed(0)
        net = registry("models").get("cnn")().create(2, 16, Config(image_size=16))
        experiment = mlflow.set_experiment("rel-serving")  # not whichever experiment an earlier test left active
        with mlflow.start_run(experiment_id=experiment.experiment_id):
            log_classifier(net, name="model", image_size=16, classes=["a", "b"], display_classes=["a", "b"],
                           registered_model_name=NAME)
            plain = mlflow.pytorch.log_model(torch.nn.Linear(2, 2), name="plain", serialization_format="pickle")
        yield {"synthmed": f"models:/{NAME}/1", "plain": plain.model_uri, "uri": uri}
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ.update({k: v for k, v in saved.items() if v is not None})


def _images(folder: Path) -> Path:
    from _rel import png_bytes

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        (folder / f"{i}.png").write_bytes(png_bytes(i))
    return folder


def _predict(models, *args: str) -> tuple[int, str]:  # noqa: ANN001
    from synthmed.cli import main

    result = CliRunner().invoke(main, ["predict", *args], env={"MLFLOW_TRACKING_URI": models["uri"]},
                                catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        raise AssertionError("".join(traceback.format_exception(result.exception)))
    return result.exit_code, result.output


PREDICT_CASES = {
    "model-not-registered": (lambda m, t: ["--model-uri", "models:/no-such-model@newest", str(_images(t / "i"))],
                             r"Error: MLflow: .*no-such-model"),
    "not-a-synthmed-model": (lambda m, t: ["--model-uri", m["plain"], str(_images(t / "i"))],
                             r"is not a synthmed image model .* mlflow\.pytorch\.load_model"),
    "empty-folder": (lambda m, t: ["--model-uri", m["synthmed"], str((t / "empty").mkdir() or t / "empty")],
                     r"folder .*empty holds no image files"),
    "missing-path": (lambda m, t: ["--model-uri", m["synthmed"], str(t / "nowhere")],
                     r"nowhere does not exist — pass image files or folders of them"),
    "output-is-a-folder": (lambda m, t: ["--model-uri", m["synthmed"], "--output", str(t), str(_images(t / "i"))],
                           r"Invalid value for '--output': File .* is a directory"),
    "output-below-a-file": (lambda m, t: ["--model-uri", m["synthmed"], "--output",
                                          str((t / "f").write_text("x") and t / "f" / "p.csv"), str(_images(t / "i"))],
                            r"folder of the prediction table \(--output\) .*/f (is not a folder|cannot be created)"),
    "broken-image": (lambda m, t: ["--model-uri", m["synthmed"],
                                   str((t / "bad.png").write_bytes(b"\x89PNG no") and t / "bad.png")],
                     r"cannot read .*bad\.png as an image: .*--skip-bad-images|cannot read .*bad\.png as an image"),
}


@pytest.mark.parametrize("case", PREDICT_CASES, ids=PREDICT_CASES.keys())
def test_predict(models, tmp_path, case):
    import re

    argv, pattern = PREDICT_CASES[case]
    code, out = _predict(models, *argv(models, tmp_path))
    assert code != 0 and "Traceback" not in out, out
    assert re.search(pattern, out), f"{pattern!r} not in:\n{out}"
    assert not list(tmp_path.rglob("*.part")), "no half-written table"


IMAGE_CASES = {
    "float-outside-0-1": (np.full((8, 8), 3.0), r"float image must hold values in \[0, 1\]"),
    "float-nan": (np.full((8, 8), np.nan), r"float image must hold values in \[0, 1\]"),
    "bad-shape": (np.zeros((2, 2, 2, 2), np.uint8), r"must be \(H, W\), \(H, W, C\) or \(C, H, W\)"),
    "int64-array": (np.zeros((8, 8), np.int64), r"must be uint8 or float in \[0, 1\], not int64"),
    "text-not-base64": ("certainly not base64!", r"text is not base64-encoded image bytes"),
}


@pytest.mark.parametrize("case", IMAGE_CASES, ids=IMAGE_CASES.keys())
def test_pyfunc_input(models, case):
    import mlflow

    item, pattern = IMAGE_CASES[case]
    model = mlflow.pyfunc.load_model(models["synthmed"])
    with pytest.raises(SynthmedError, match=rf"cannot read image 1 as an image: .*{pattern}"):
        model.predict({"image": [np.zeros((8, 8), np.uint8), item]})
