"""The two protocols (docs/results.md): ``sound`` never reads the test split before its final evaluation;
``thesis`` keeps the last epoch and logs each reading of the thesis's "validation loss" under its own name."""

from __future__ import annotations

import math
from contextlib import contextmanager

import mlflow
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synthmed.config import Config
from synthmed.data.base import ImageSet, Splits
from synthmed.data.loading import keras_validation_split, unsampled_rest
from synthmed.errors import SynthmedError
from synthmed.policies.synthetic import plan_for
from synthmed.tracking.names import HELDOUT_LOSS, KERAS_VAL_LOSS, REST_LOSS
from synthmed.training import loop, sample_real, train

FAST = dict(image_size=32, batch_size=16, gradcam=False, quiet=True, register="none", log_model=False)

#: what touched the test split's images, in order: "during training" or "after training"
READS: list[str] = []
PHASE = ["before"]


#: what does not read an image's values: attribute getters (dtype, shape, device) and len()
METADATA = {"__get__", "__len__", "size", "dim"}


class Watched(torch.Tensor):
    """A tensor that notes every torch operation that reads its values (a copy made from it is such a read)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") not in METADATA:
            READS.append(PHASE[0])
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


def watched_splits(splits: Splits) -> Splits:
    test = splits.test
    images = test.images.as_subclass(Watched)
    return Splits(train=splits.train, test=ImageSet(images, test.labels, test.index), classes=splits.classes,
                  fingerprint=splits.fingerprint, meta=dict(splits.meta))


@contextmanager
def phases(monkeypatch):
    """Mark the training loop's span: reads during it are "training", reads after it "after"."""
    real_fit_stack = loop.fit_stack
    READS.clear()
    PHASE[0] = "before"

    def spied(*args, **kwargs):
        PHASE[0] = "training"
        try:
            return real_fit_stack(*args, **kwargs)
        finally:
            PHASE[0] = "after"

    monkeypatch.setattr(loop, "fit_stack", spied)
    yield


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(real_frac=st.sampled_from([0.25, 0.5, 0.75, 1.0]), seed=st.integers(0, 50),
       val_frac=st.sampled_from([0.0, 0.2, 0.4]), policy=st.sampled_from(["none", "basic", "oversample"]))
def test_sound_never_reads_the_test_split_before_its_final_evaluation(mlflow_uri, tiny_splits, monkeypatch,
                                                                        real_frac, seed, val_frac, policy):
    with phases(monkeypatch):
        res = train(Config(**FAST, epochs=2, real_frac=real_frac, seed=seed, val_frac=val_frac, policy=policy),
                    splits=watched_splits(tiny_splits))
    assert READS, "the spy saw no read of the test split at all: it is not watching"
    assert set(READS) == {"after"}, f"test images read {READS.count('before')} times before and " \
                                    f"{READS.count('training')} times during training"
    assert not any(k.startswith("thesis_") for k in res.metrics)


def test_the_spy_sees_the_thesis_protocol_read_the_test_split_every_epoch(mlflow_uri, tiny_splits, monkeypatch):
    with phases(monkeypatch):
        train(Config(**FAST, epochs=2, real_frac=0.5, protocol="thesis"), splits=watched_splits(tiny_splits))
    assert "training" in READS  # the held-out split's loss is read during training, as the thesis's reading is


def test_thesis_logs_each_reading_under_its_own_name_and_keeps_the_last_epoch(mlflow_uri, tiny_splits):
    res = train(Config(**FAST, epochs=4, lr=0.01, real_frac=0.5, val_frac=0.25, protocol="thesis"), splits=tiny_splits)
    client = mlflow.MlflowClient()
    run = mlflow.get_run(res.run_id)
    heldout = [m.value for m in sorted(client.get_metric_history(res.run_id, HELDOUT_LOSS), key=lambda m: m.step)]
    rest = [m.value for m in sorted(client.get_metric_history(res.run_id, REST_LOSS), key=lambda m: m.step)]
    val = [m.value for m in sorted(client.get_metric_history(res.run_id, "val_loss"), key=lambda m: m.step)]
    assert len(heldout) == len(rest) == len(val) == 4
    m = run.data.metrics
    assert m[f"{HELDOUT_LOSS}_last"] == pytest.approx(heldout[-1])
    assert m[f"{HELDOUT_LOSS}_min"] == pytest.approx(min(heldout))
    assert m[f"{HELDOUT_LOSS}_min_epoch"] == heldout.index(min(heldout)) + 1
    assert m[f"{REST_LOSS}_last"] == pytest.approx(rest[-1])
    assert m[f"{KERAS_VAL_LOSS}_last"] == pytest.approx(val[-1])
    # the last epoch is what the run evaluates: its test cross-entropy is the held-out loss of the last epoch
    assert m["test_cross_entropy"] == pytest.approx(heldout[-1], rel=1e-5)
    assert run.data.params["kept_epoch"] == "4" and run.data.params["selection"].startswith("last epoch")


def test_sound_keeps_the_best_validation_epoch_and_logs_its_steps(mlflow_uri, tiny_splits):
    res = train(Config(**FAST, epochs=5, lr=0.05, real_frac=1.0, val_frac=0.25), splits=tiny_splits)
    client = mlflow.MlflowClient()
    run = mlflow.get_run(res.run_id)
    val = [m.value for m in sorted(client.get_metric_history(res.run_id, "val_loss"), key=lambda m: m.step)]
    best = val.index(min(val)) + 1
    steps_per_epoch = math.ceil(48 / 16)  # 64 images, a quarter carved for validation, batches of 16
    assert run.data.params["kept_epoch"] == str(best)
    assert run.data.params["kept_optimizer_steps"] == str(best * steps_per_epoch)
    assert run.data.params["optimizer_steps"] == str(5 * steps_per_epoch)
    assert run.data.metrics["val_loss_min"] == pytest.approx(min(val))
    assert run.data.params["selection"].startswith("lowest validation loss")


def test_thesis_carve_is_kerass_last_rows_and_the_rest_is_the_unsampled_training_images(tiny_splits):
    train_rows, val_rows = keras_validation_split(10, 0.25)
    assert train_rows.tolist() == list(range(7)) and val_rows.tolist() == [7, 8, 9]  # int(10 * 0.75) = 7
    cfg = Config(real_frac=0.5, val_frac=0.25, seed=3, protocol="thesis")
    real, val = sample_real(tiny_splits, cfg)
    full, _ = sample_real(tiny_splits, cfg.replace(val_frac=0.0))
    assert torch.equal(torch.cat([real.index, val.index]), full.index)  # the sample's last rows, in order
    rest = unsampled_rest(tiny_splits, cfg)
    assert len(rest) + len(full) == len(tiny_splits.train)
    assert not set(rest.index.tolist()) & set(full.index.tolist())


def test_thesis_refuses_patience():
    with pytest.raises(SynthmedError, match="protocol=thesis trains a fixed number of epochs"):
        Config(protocol="thesis", patience=2)


@settings(max_examples=40, deadline=None)
@given(n=st.lists(st.integers(3, 60), min_size=4, max_size=4), real_frac=st.floats(0.1, 1.0),
       val_frac=st.floats(0.05, 0.5), seed=st.integers(0, 99))
def test_no_synthetic_image_stands_in_for_a_validation_image(n, real_frac, val_frac, seed):
    """The mixed set is filled to the full split's size less the carve, class by class."""
    labels = torch.cat([torch.full((k,), c) for c, k in enumerate(n)])
    images = torch.zeros(len(labels), 1, 4, 4, dtype=torch.uint8)
    splits = Splits(train=ImageSet(images, labels), test=ImageSet(images[:4], labels[:4]),
                    classes=("a", "b", "c", "d"), fingerprint="x", meta={})
    cfg = Config(real_frac=real_frac, val_frac=val_frac, seed=seed, policy="synthetic")
    real, val = sample_real(splits, cfg)
    plan = plan_for(real, splits.train, 4, cfg, val)
    assert len(real) + sum(plan.counts) + len(val) == len(labels)
    for c in range(4):
        assert real.class_counts(4)[c] + plan.counts[c] + val.class_counts(4)[c] == n[c]


def test_a_thesis_sweeps_report_gives_each_reading_and_refuses_the_equivalent(mlflow_uri, tiny_splits, tmp_path):
    from synthmed.sweep import sweep
    from synthmed.sweep.report import publish

    result = sweep(Config(**FAST, epochs=2, protocol="thesis", experiment="readings"), policies="none",
                   real_fracs="0.5,1.0", simulations=2, splits=tiny_splits)
    md = (publish(result.parent_run_id, output=tmp_path / "r").directory / "report.md").read_text()
    assert "## Readings of the thesis's validation loss" in md
    assert "held-out, min over epochs (selects on test)" in md and "held-out, last epoch" in md
    assert "no real-scan equivalent under budget=epochs" in md  # none at two fractions, but epochs mix steps


def test_synthmed_train_prints_each_reading_under_protocol_thesis(mlflow_uri, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from synthmed.cli import main as synthmed_cli

    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(((torch.rand(16, 16) * 255).to(torch.uint8) + (80 if c == "a" else 0)).numpy()).save(
                tmp_path / "data" / c / f"{i}.png")
    args = ["train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--image-size", "16",
            "--epochs", "2", "--batch-size", "8", "--gradcam", "false", "--log-model", "false", "--register", "none",
            "--quiet", "--real-frac", "0.5"]
    thesis = CliRunner().invoke(synthmed_cli, [*args, "--protocol", "thesis"])
    assert thesis.exit_code == 0, thesis.output
    for name in ("thesis_heldout_loss_last", "thesis_heldout_loss_min", "thesis_rest_loss_last",
                 "thesis_keras_val_loss_last"):
        assert name in thesis.output
    sound = CliRunner().invoke(synthmed_cli, args)
    assert sound.exit_code == 0, sound.output
    assert "thesis_" not in sound.output
