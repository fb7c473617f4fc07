"""Grad-CAM, real versus synthetic (thesis Chapter 3): what the classifier looks at, shown and measured.

For each chosen class: real source images, one synthetic variation of each (from the run's
generator or a named one), the Grad-CAM map of every image for its true and for its predicted
class, and the predicted probabilities — one figure per class — plus agreement and faithfulness
metrics (see ``docs/gradcam.md``). Built on ``pytorch-grad-cam``. The room has four parts:

* :mod:`.compute` — hooks, maps and per-pair numbers (tensors in, maps out; no MLflow);
* :mod:`.metrics` — agreement (Pearson, top-20% IoU) and ROAD faithfulness;
* :mod:`.figures` — the thesis-style panels (no MLflow);
* :mod:`.panel` and :mod:`.entry` — what a training run logs (:func:`log_run_gradcam`, logging
  passed in) and ``synthmed gradcam`` for any logged model (:func:`gradcam`).

Importing this package is cheap: torch, pytorch-grad-cam and MLflow load when a function runs.
"""

from __future__ import annotations

from synthmed.gradcam.compute import METHODS, build_panels, cam_session, target_layers
from synthmed.gradcam.entry import CamReport, gradcam, load_logged_model, run_config
from synthmed.gradcam.panel import RUN_PAIRS, CamSink, log_run_gradcam

__all__ = ["METHODS", "RUN_PAIRS", "CamReport", "CamSink", "build_panels", "cam_session", "gradcam",
           "load_logged_model", "log_run_gradcam", "run_config", "target_layers"]
