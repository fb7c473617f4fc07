"""Training end to end: determinism, what a run logs to MLflow, the registry, failure handling."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch

from synthmed.config import Config
from synthmed.training import sample_real, train

FAST = dict(image_size=32, epochs=1, batch_size=16, gradcam=False, quiet=True, register="none")


def test_same_seed_same_metrics_on_cpu(mlflow_uri, tiny_splits):
    a = train(Config(**FAST, seed=3), splits=tiny_splits)
    b = train(Config(**FAST, seed=3), splits=tiny_splits)
    c = train(Config(**FAST, seed=4), splits=tiny_splits)
    assert a.metrics == b.metrics
    assert a.metrics["test_cross_entropy"] != c.metrics["test_cross_entropy"]


def test_validation_part_comes_from_the_sample_only(tiny_splits):
    cfg = Config(real_frac=0.5, val_frac=0.25, seed=1)
    real, val = sample_real(tiny_splits, cfg)
    assert len(real) + len(val) == 32
    assert not set(real.index.tolist()) & set(val.index.tolist())


def test_early_stopping_logs_epochs_and_val_loss(mlflow_uri, tiny_splits):
    res = train(Config(**{**FAST, "epochs": 6}, val_frac=0.25, patience=1, lr=0.5), splits=tiny_splits)
    run = mlflow.get_run(res.run_id)
    history = mlflow.MlflowClient().get_metric_history(res.run_id, "val_loss")
    assert 1 <= len(history) <= 6
    assert int(run.data.params["epochs_run"]) == len(history)


def test_failed_run_is_marked_failed_with_the_error(mlflow_uri, tiny_splits, monkeypatch):
    from synthmed.training import loop

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(loop, "fit", boom)
    with pytest.raises(RuntimeError):
        train(Config(**FAST, experiment="fails"), splits=tiny_splits)
    runs = mlflow.search_runs(experiment_names=["fails"], output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert runs[0].data.tags["synthmed.error"] == "RuntimeError: disk full"
    assert runs[0].data.params["real_frac"] == "1.0"  # the config was logged before the failure


def test_unknown_plugin_fails_before_loading_data(mlflow_uri):
    from synthmed.errors import SynthmedError

    with pytest.raises(SynthmedError, match="unknown model 'resnet'"):
        train(Config(model="resnet", data_dir="/nonexistent"))


@pytest.mark.slow
def test_end_to_end_real_data_cnn(mlflow_uri, real_data_dir):
    """The issue's end-to-end test: CNN, one epoch, real_frac 0.1, on the real data."""
    cfg = Config(data_dir=str(real_data_dir), model="cnn", policy="basic", real_frac=0.1, epochs=1,
                 quiet=True, experiment="e2e", gradcam=True, val_frac=0.0)  # the sample's exact counts below
    res = train(cfg)
    client = mlflow.MlflowClient()
    run = client.get_run(res.run_id)
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    # params: the whole config, plus what the data and the sample were
    for field in Config.field_names():
        assert field in params
    assert params["real_frac"] == "0.1" and params["policy"] == "basic"
    assert params["n_train"] == "512"  # 724,49,2566,1781 x 0.1 rounded per class: 72+5+257+178
    assert params["train_count_Moderate_Demented"] == "5"
    assert params["n_test"] == "1280"
    # tags
    assert tags["synthmed.version"]
    assert len(tags["synthmed.dataset_fingerprint"]) == 16
    from synthmed.tracking import git_commit

    assert tags.get("synthmed.git_commit") == git_commit()  # the source's commit, not the cwd's
    # metrics: per epoch and final
    assert len(client.get_metric_history(res.run_id, "train_loss")) == 1
    for key in ("test_cross_entropy", "test_accuracy", "test_balanced_accuracy", "test_macro_f1",
                "test_recall_Moderate_Demented"):
        assert np.isfinite(metrics[key])
    assert metrics["test_cross_entropy"] == pytest.approx(res.metrics["test_cross_entropy"])
    assert 0 < metrics["train_seconds"] < 600  # the training loop's wall time
    assert "train_seconds" not in res.metrics  # a wall time is not a result: same seed, same metrics
    # artifacts
    names = {a.path for a in client.list_artifacts(res.run_id)}
    assert {"config.yaml", "confusion_matrix.png", "augmented_training_images.png",
            "per_class_metrics.csv", "confusion_matrix.csv", "data", "gradcam"} <= names
    logged = Config.from_yaml(mlflow.artifacts.download_artifacts(run_id=res.run_id, artifact_path="config.yaml"))
    assert logged == cfg
    # the registered model: loaded back, predicts a batch of 3
    name = "synthmed-alzheimer_mri-cnn"
    assert res.registered_version == "1"
    version = client.get_model_version(name, "1")
    assert version.tags["policy"] == "basic" and version.tags["real_frac"] == "0.1"
    assert str(client.get_model_version_by_alias(name, "newest").version) == "1"
    model = mlflow.pytorch.load_model(f"models:/{name}/1")
    x = torch.rand(3, 1, 128, 128)
    assert model(x).shape == (3, 4)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}@newest")  # images in, named probabilities out
    table = pyfunc.predict({"image": list(x.numpy())})
    assert table.shape == (3, 5) and list(table.columns)[-1] == "predicted"


def test_the_logged_config_rebuilds_the_run(mlflow_uri, tiny_splits):
    from synthmed.tracking import load_run_config

    cfg = Config(**FAST, generator_options=r"prompt=axial\, brain,size=64")
    res = train(cfg, splits=tiny_splits)
    assert load_run_config(res.run_id) == cfg


@pytest.mark.parametrize("option", ["api_key=sk-secret", "Token=abc", "password=x"])
def test_secrets_are_refused_in_generator_options(option, monkeypatch):
    from synthmed.errors import SynthmedError

    with pytest.raises(SynthmedError, match="must not carry secrets.*OPENAI_API_KEY"):
        Config(generator_options=f"size=64,{option}")
    monkeypatch.setenv("MLFLOW_RUN_ID", "abc")
    with pytest.raises(SynthmedError, match="rotate the key"):
        Config(generator_options=option)


def test_training_computes_logits_with_the_factorys_training_forward(mlflow_uri, tiny_splits, monkeypatch):
    """train() trains through the factory's training_forward (for the CNN, pool before ReLU), one call a step."""
    from synthmed.models.cnn import CNN

    calls = []
    lean = CNN.training_forward

    def counted(self, model):
        forward = lean(self, model)
        return lambda x: calls.append(x.shape[0]) or forward(x)

    monkeypatch.setattr(CNN, "training_forward", counted)
    res = train(Config(**FAST, seed=3), splits=tiny_splits)
    steps = int(mlflow.get_run(res.run_id).data.params["optimizer_steps"])
    assert steps > 0 and len(calls) == steps
