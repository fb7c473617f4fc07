"""What synthmed hands to others: the registered model, its card, and predictions from it.

- :mod:`.images`: any image a user has (PNG/JPEG bytes, base64 text, uint8 or float arrays of any
  size, 1 or 3 channels) → the model's input, through the very functions training decoded with.
- :mod:`.model`: the logged model — one MLflow model with two flavors: ``pytorch`` (the network,
  for ``mlflow.pytorch.load_model``) and ``python_function`` (images in, a table of class
  probabilities with the class names and the predicted class out; what ``mlflow models serve``
  serves), carrying its preprocessing parameters, class names and label-set fingerprint.
- :mod:`.card`: the model card logged with every registered model.
- :mod:`.predict`: ``synthmed predict`` — files or folders in, a CSV out.

Serving imports no training, sweep or CLI code: a served model needs synthmed's image functions, not
its experiments.
"""

from __future__ import annotations

from synthmed.serving.images import to_model_images
from synthmed.serving.model import ImageClassifier, log_classifier

__all__ = ["ImageClassifier", "log_classifier", "to_model_images"]
