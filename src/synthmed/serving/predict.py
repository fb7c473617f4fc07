"""``synthmed predict``: image files or folders in, a table of class probabilities out, from a model URI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from synthmed.errors import SynthmedError
from synthmed.serving.images import to_model_images
from synthmed.serving.model import PREDICTED, ImageClassifier

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["IMAGE_SUFFIXES", "image_files", "load_classifier", "predict_files"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_files(paths: Iterable[str]) -> list[Path]:
    """Each file as given, and every image file under each folder (by suffix, recursively, sorted)."""
    files: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise SynthmedError(f"folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise SynthmedError(f"{path} does not exist — pass image files or folders of them")
    if not files:
        raise SynthmedError("no images given — pass image files or folders of them")
    return files


def load_classifier(model_uri: str) -> ImageClassifier:
    """The :class:`ImageClassifier` of a synthmed model (``models:/NAME@alias``, ``models:/NAME/3``, ``runs:/ID/model``)."""
    import mlflow

    model = mlflow.pyfunc.load_model(model_uri)
    try:
        raw = model.get_raw_model()
    except Exception:  # other pyfunc implementations: not a synthmed image model
        raw = None
    if not isinstance(raw, ImageClassifier):
        raise SynthmedError(f"{model_uri} is not a synthmed image model (no images-in pyfunc: logged by another tool "
                            "or by a synthmed older than the served model) — retrain it, or load the network with "
                            "mlflow.pytorch.load_model")
    return raw


def predict_files(model_uri: str, paths: Iterable[str], *, skip_bad: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """``(table, skipped)``: a row per readable image (``file``, a probability per class, ``predicted``)."""
    import pandas as pd

    files = image_files(paths)
    classifier = load_classifier(model_uri)
    names = [str(f) for f in files]
    contents = []
    for f in files:
        try:
            contents.append(f.read_bytes())
        except OSError as exc:
            raise SynthmedError(f"cannot read {f}: {exc.strerror or exc}") from exc
    images, kept, skipped = to_model_images(contents, classifier.image_size, names=names, skip_bad=skip_bad)
    probs = classifier.probabilities(images) if len(kept) else []
    table = pd.DataFrame(probs, columns=classifier.classes)
    table.insert(0, "file", [names[i] for i in kept])
    table[PREDICTED] = [classifier.classes[i] for i in table[classifier.classes].to_numpy().argmax(axis=1)] if len(kept) else []
    return table, skipped
