"""The logged model: the network (``pytorch`` flavor) and images in, named probabilities out (``python_function``).

One MLflow model directory with two flavors, logged through :meth:`mlflow.models.Model.log` with this
module as its flavor (:func:`save_model`):

- ``pytorch`` — the trained network as MLflow's own flavor writes it, so
  ``mlflow.pytorch.load_model("models:/synthmed-alzheimer_mri-cnn@newest")`` still gives the module
  (over float tensors ``(N, 1, S, S)`` in ``[0, 1]``);
- ``python_function`` — loaded by :func:`_load_pyfunc` here: a batch of images as users have them (a
  column ``image`` of PNG/JPEG bytes, base64 text, or arrays; see :mod:`synthmed.serving.images`)
  in, a table out with one probability column per class name and the ``predicted`` class — what
  ``mlflow.pyfunc.load_model`` returns and ``mlflow models serve`` serves.

The model's metadata carries what the pyfunc needs and a reader wants: ``image_size``,
``classes`` (the label order), ``display_classes``, ``label_fingerprint`` and the preprocessing in
words.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from synthmed.evaluation import predict_logits
from synthmed.serving.images import to_model_images

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

__all__ = ["FLAVOR_PREPROCESSING", "ImageClassifier", "label_fingerprint", "log_classifier", "save_model"]

FLAVOR_PREPROCESSING = ("decoded as training decoded (synthmed.data._decode: luma for colour, min-max for "
                        "16-bit/float files, bilinear resize to image_size x image_size), uint8 arrays as is, "
                        "float arrays in [0, 1] as round(255 x); fed as x / 255")
PREDICTED = "predicted"


def label_fingerprint(classes: tuple[str, ...] | list[str]) -> str:
    """sha256 of the label order: two models answer in the same columns only when these agree."""
    return hashlib.sha256(json.dumps(list(classes)).encode()).hexdigest()[:16]


class ImageClassifier:
    """The ``python_function`` of a synthmed model: images in, class probabilities out.

    Args:
        network: the trained module (takes ``(N, 1, S, S)`` floats in ``[0, 1]``).
        image_size: ``S``, the side training fed it.
        classes: the class names in label order (the output columns).
    """

    def __init__(self, network: nn.Module, image_size: int, classes: list[str]):
        self.network = network  # evaluated by predict_logits, in eval mode
        self.image_size = int(image_size)
        self.classes = list(classes)

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        """``(N, C)`` probabilities for uint8 ``(N, 1, S, S)`` images (the evaluation's own path)."""
        return torch.softmax(predict_logits(self.network, images), dim=1).numpy()

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """A table with one probability column per class and ``predicted``, a row per input image."""
        import pandas as pd

        if isinstance(model_input, pd.DataFrame):
            column = "image" if "image" in model_input.columns else model_input.columns[0]
            items = list(model_input[column])
        elif isinstance(model_input, dict):
            items = list(model_input.get("image", next(iter(model_input.values()))))
        else:
            items = list(model_input)
        images, _, _ = to_model_images(items, self.image_size)
        probs = self.probabilities(images)
        table = pd.DataFrame(probs.astype(np.float64), columns=self.classes)
        table[PREDICTED] = [self.classes[i] for i in probs.argmax(axis=1)]
        return table


# --- the flavor: written by Model.log(flavor=this module), read by mlflow.pyfunc ---------------------------
def save_model(network: nn.Module, path: str, mlflow_model: Any, *, image_size: int, classes: list[str],
               display_classes: list[str], example: np.ndarray, card: str | None = None, **kwargs: Any) -> None:
    """Write the model directory: MLflow's ``pytorch`` flavor, then this module as its ``python_function``
    (and the model card, ``model_card.md``, beside them)."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    requirements = [f"torch=={torch.__version__.split('+')[0]}"]  # explicit: inferring costs a subprocess
    mlflow.pytorch.save_model(network, path, mlflow_model=mlflow_model, input_example=example,
                              pip_requirements=requirements)
    for name in ("input_example.json", "serving_input_example.json"):  # the network's example, not the pyfunc's
        if os.path.exists(os.path.join(path, name)):
            os.remove(os.path.join(path, name))
    mlflow_model.saved_input_example_info = None
    pyfunc = mlflow_model.flavors.pop("python_function")
    mlflow.pyfunc.add_to_model(mlflow_model, loader_module=__name__, data=pyfunc.get("data", "data"),
                               env=pyfunc.get("env"), python_version=sys.version.split()[0])
    mlflow_model.signature = ModelSignature(
        inputs=Schema([ColSpec(AnyType(), "image")]),
        outputs=Schema([*(ColSpec("double", c) for c in classes), ColSpec("string", PREDICTED)]))
    mlflow_model.metadata = {**(mlflow_model.metadata or {}), "image_size": int(image_size),
                             "classes": list(classes), "display_classes": list(display_classes),
                             "label_fingerprint": label_fingerprint(classes), "preprocessing": FLAVOR_PREPROCESSING}
    mlflow_model.save(os.path.join(path, "MLmodel"))
    if card:
        with open(os.path.join(path, "model_card.md"), "w") as fh:
            fh.write(card)


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> _PyfuncWrapper:
    """MLflow's pyfunc loader for this flavor: the model root is the folder above its ``data``."""
    import mlflow
    from mlflow.models import Model

    root = os.path.dirname(os.path.abspath(data_path))
    meta = Model.load(os.path.join(root, "MLmodel")).metadata
    network = mlflow.pytorch.load_model(root, map_location="cpu")
    return _PyfuncWrapper(ImageClassifier(network, meta["image_size"], meta["classes"]))


class _PyfuncWrapper:
    """What ``mlflow.pyfunc`` calls: ``predict(data, params=None)``."""

    def __init__(self, classifier: ImageClassifier):
        self.classifier = classifier

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.classifier.predict(data, params)

    def get_raw_model(self) -> ImageClassifier:
        return self.classifier


def log_classifier(network: nn.Module, *, name: str, image_size: int, classes: list[str],
                   display_classes: list[str], registered_model_name: str | None, card: str | None = None) -> Any:
    """Log ``network`` as a synthmed model (both flavors) to the active run; register it when named."""
    import copy

    from mlflow.models import Model

    cpu = copy.deepcopy(network).to("cpu", memory_format=torch.contiguous_format).float().eval()
    example = np.zeros((2, 1, image_size, image_size), dtype=np.float32)  # pt2 traces with a batch of 2
    return Model.log(artifact_path=None, name=name, flavor=sys.modules[__name__], network=cpu,
                     registered_model_name=registered_model_name, image_size=image_size, classes=list(classes),
                     display_classes=list(display_classes), example=example, card=card)
