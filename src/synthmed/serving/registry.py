"""A run's model into MLflow: logged with both flavors and its card, registered, tagged, aliased ``newest``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from synthmed.serving.card import model_card
from synthmed.serving.model import log_classifier
from synthmed.tracking import MODEL_ARTIFACT, REGISTRY_ALIAS

if TYPE_CHECKING:
    from torch import nn

    from synthmed.config import Config
    from synthmed.data.base import Splits

__all__ = ["CARD_ARTIFACT", "log_run_model"]

CARD_ARTIFACT = "model_card.md"


def log_run_model(run_id: str, model: nn.Module, splits: Splits, config: Config) -> tuple[str, str | None]:
    """Log the active run's model; register it under ``config.registered_model_name`` (unless ``None``).

    The card is written from the run's record as it stands (call this last: after evaluation, the
    lookup and Grad-CAM) into the model's folder and the run's artifacts, and becomes the
    registered version's description. Returns ``(model URI, registered version or None)``.
    """
    import mlflow

    client = mlflow.MlflowClient()
    name = config.registered_model_name

    def card(version: str | None) -> str:
        run = client.get_run(run_id)
        gradcam = [a.path for a in client.list_artifacts(run_id, "gradcam") if a.path.endswith(".png")]
        return model_card(model_name=name, version=version, run_id=run_id, params=dict(run.data.params),
                          metrics=dict(run.data.metrics), tags=dict(run.data.tags), classes=list(splits.classes),
                          gradcam=gradcam, image_size=config.image_size)

    info: Any = log_classifier(model, name=MODEL_ARTIFACT, image_size=config.image_size, classes=list(splits.classes),
                               display_classes=list(splits.display_classes), registered_model_name=name,
                               card=card(None))
    version = None
    if name:
        version = str(info.registered_model_version)
        for key, value in {"policy": config.policy, "model": config.model, "real_frac": config.real_frac,
                           "dataset": config.dataset, "split": config.split, "run_id": run_id}.items():
            client.set_model_version_tag(name, version, key, str(value))
        client.set_registered_model_alias(name, REGISTRY_ALIAS, version)
        text = card(version)
        client.update_model_version(name, version, description=text)
        mlflow.log_text(text, CARD_ARTIFACT)
    else:
        mlflow.log_text(card(None), CARD_ARTIFACT)
    return info.model_uri, version
