"""The model card: what a registered model was trained on, how, how well — and what it is not for.

Written from the run's own record in MLflow (its params, metrics, tags and Grad-CAM artifacts) when
the model is logged, so the card and the run cannot disagree. It is saved in the model's folder
(``model_card.md``), logged as a run artifact and set as the model version's description.
"""

from __future__ import annotations

from typing import Any

from synthmed.serving.model import label_fingerprint
from synthmed.tracking.names import LOOKUP_ACCURACY, LOOKUP_CE, PRIOR_CE, TAG_FINGERPRINT, TAG_GIT_COMMIT, TAG_VERSION

__all__ = ["INTENDED_USE", "model_card"]

INTENDED_USE = (
    "**Research model — not for clinical use.** It was trained to study whether synthetic images can stand in "
    "for real scans, on a public dataset of 2-D MRI slices. That dataset's own train/test split shares near-twin "
    "slices of the same brains (docs/splits.md): on `split=given` a 1-nearest-neighbour pixel lookup scores about "
    "as well as or better than the models trained here, so its test metrics overstate how it would do on new patients. Read them beside the lookup "
    "and the class prior below; prefer models trained with `split=grouped`."
)


def _row(name: str, value: Any) -> str:
    return f"| {name} | {value} |"


def _metric(metrics: dict[str, float], key: str) -> str:
    return f"{metrics[key]:.4f}" if key in metrics else "—"


def model_card(*, model_name: str | None, version: str | None, run_id: str, params: dict[str, str],
               metrics: dict[str, float], tags: dict[str, str], classes: list[str], gradcam: list[str],
               image_size: int) -> str:
    """The card's Markdown."""
    p = lambda key, default="—": params.get(key, default)  # noqa: E731
    title = f"{model_name} v{version}" if model_name and version else f"model of run {run_id}"
    synthetic = p("policy") == "synthetic"
    lines = [f"# Model card: {title}", "", INTENDED_USE, "",
             "## Data", "", "| | |", "|---|---|",
             _row("dataset", f"{p('dataset')} (revision "
                             f"{'not pinned' if p('revision') in ('None', '', '—') else p('revision')}; data "
                             f"fingerprint `{tags.get(TAG_FINGERPRINT, '—')}`)"),
             _row("split", f"{p('split')} — " + ("pseudo-subjects: no test image has a near-twin in training"
                                                  if p("split") == "grouped" else "the dataset's own (leaks near-twins)")),
             _row("real fraction", f"{p('real_frac')} of the training split (stratified), validation carve "
                                   f"{p('val_frac')}"),
             _row("classes", ", ".join(f"`{c}`" for c in classes) + f" (label-set fingerprint "
                             f"`{label_fingerprint(classes)}`)"),
             _row("input", f"grayscale {image_size} x {image_size}; see the model's `preprocessing` metadata"), "",
             "## Training", "", "| | |", "|---|---|",
             _row("model", p("model") + (" (pretrained)" if p("pretrained") == "True" else "")),
             _row("policy", p("policy") + (f" — generator `{p('generator')}` "
                                          f"({p('generator_options', '') or 'default options'}), fit key "
                                          f"`{p('generator_fit_key', 'n/a (does not learn)')}`" if synthetic else "")),
             _row("budget", f"{p('epochs')} epochs ({p('budget')}), batch {p('batch_size')}, Adam lr {p('lr')}, "
                            f"{p('optimizer_steps')} optimizer steps, {p('precision_used')} on {p('device_used')}"),
             _row("epoch kept", f"{p('kept_epoch')} — {p('selection')}"),
             _row("protocol", p("protocol")),
             _row("seed", p("seed")),
             _row("run", f"`{run_id}` (synthmed {tags.get(TAG_VERSION, '—')}, commit "
                         f"`{tags.get(TAG_GIT_COMMIT, '—')}`)"), "",
             "## Test metrics", "", "| metric | value |", "|---|---|"]
    for key in ("test_cross_entropy", "test_accuracy", "test_balanced_accuracy", "test_macro_f1"):
        lines.append(_row(key, _metric(metrics, key)))
    for c in classes:
        lines.append(_row(f"recall of {c}", _metric(metrics, f"test_recall_{c}")))
    lines += ["", "Beside it (what no learning scores on the same test split): "
              f"1-NN pixel lookup cross-entropy {_metric(metrics, LOOKUP_CE)}, accuracy "
              f"{_metric(metrics, LOOKUP_ACCURACY)}; class prior cross-entropy "
              f"{_metric(metrics, PRIOR_CE)}.", ""]
    lines += ["## Grad-CAM", ""]
    if gradcam:
        lines += [f"- run artifact `{path}`" for path in gradcam]
    else:
        lines.append("No panel was logged with this run (gradcam=false).")
    lines += ["", "## Use", "", "```python", "import mlflow",
              f"model = mlflow.pyfunc.load_model(\"{_uri(model_name, version, run_id)}\")",
              "model.predict({\"image\": [png_bytes, uint8_array]})  # one probability column per class, and 'predicted'",
              "```", ""]
    return "\n".join(lines)


def _uri(model_name: str | None, version: str | None, run_id: str) -> str:
    return f"models:/{model_name}/{version}" if model_name and version else f"runs:/{run_id}/model"
