"""Grad-CAM real vs synthetic: maps, the model left as found, metrics, overlays, MLflow, the command."""

from __future__ import annotations

import json
import math

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from synthmed import hookimpl
from synthmed.gradcam.figures import overlay, panel_figure
from synthmed.gradcam.metrics import faithfulness, pearson, summarize, top_iou
from synthmed.gradcam.compute import METHODS, build_panels, cam_session, target_layers
from synthmed.cli import main as synthmed_cli
from synthmed.config import Config
from synthmed.data.base import ImageSet
from synthmed.errors import SynthmedError
from synthmed.generators.base import Generator
from synthmed.generators.cache import GenerationCache
from synthmed.plugins import get_plugin_manager, registry

MODEL_NAMES = registry("models", get_plugin_manager()).names()  # installed third-party ones too
CLASSES = ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")
THESIS = ["Moderate_Demented", "Non_Demented"]


# --- fake generators, registered as a plugin ---------------------------------------------------
class Identity(Generator):
    """The "variation" is the source itself: its map must agree perfectly."""

    name = "test-identity"
    deterministic = True

    def generate(self, images, labels, *, variation, seed):
        return images.clone()


class Noise(Generator):
    """An unrelated image: uniform noise."""

    name = "test-noise"
    deterministic = True

    def generate(self, images, labels, *, variation, seed):
        g = torch.Generator().manual_seed(seed % 2**31)
        return torch.randint(0, 256, images.shape, generator=g, dtype=torch.uint8)


class FakeGenerators:
    @hookimpl
    def register_generators(self):
        return [Identity, Noise]


@pytest.fixture
def gpm(pm):
    """The plugin manager with the fake generators."""
    plugin = FakeGenerators()
    pm.register(plugin, name="test-generators")
    yield pm
    pm.unregister(plugin)


def make_model(pm, name: str, size: int = 32, num_classes: int = 4):
    factory = registry("models", pm).get(name)()
    torch.manual_seed(0)
    return factory, factory.create(num_classes, size, Config(model=name, image_size=size))


def brains(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """``(n, 1, size, size)`` uint8: a bright disc with dark random blobs (a cartoon MRI)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.4) ** 2).float()
    noise = torch.rand(n, 1, size, size, generator=g)
    return ((disc * (0.5 + 0.5 * noise)) * 255).to(torch.uint8)


def hooks_left(model) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


# --- maps ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", (32, 64))
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_gives_maps_of_the_input_size_in_unit_range(pm, name, size):
    factory, model = make_model(pm, name, size)
    model.train()
    x = torch.rand(3, 1, size, size)
    layers = target_layers(model, factory)
    with cam_session(model, layers, reshape_transform=factory.gradcam_reshape_transform(model)) as maps:
        cams, logits = maps(x, [0, 1, 2])
    assert cams.shape == (3, size, size)
    assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0
    # the model is left as found: train mode, trainable, no grads written, no hooks
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert hooks_left(model) == 0


@pytest.mark.parametrize("name", ["cnn", "resnet18", "vit"])
def test_maps_equal_plain_pytorch_grad_cam(pm, name):
    """Cutting the backward pass at the target layer changes nothing but the cost."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    factory, model = make_model(pm, name)
    model.eval()
    x, targets = torch.rand(3, 1, 32, 32), [0, 2, 3]
    plain = GradCAM(model, factory.gradcam_target_layers(model), factory.gradcam_reshape_transform(model))
    expected = plain(x, [ClassifierOutputTarget(t) for t in targets])
    plain.activations_and_grads.release()
    with cam_session(model, target_layers(model, factory), reshape_transform=factory.gradcam_reshape_transform(model)) as maps:
        cams, logits = maps(x, targets)
    np.testing.assert_allclose(cams, expected, atol=1e-6)
    torch.testing.assert_close(logits, model(x))


def test_several_target_layers_are_averaged(pm):
    factory, model = make_model(pm, "cnn")
    with cam_session(model, target_layers(model, factory, "block1.relu,block2.relu")) as maps:
        cams, _ = maps(torch.rand(2, 1, 32, 32), [0, 1])
    assert cams.shape == (2, 32, 32) and cams.max() <= 1
    assert all(p.grad is None for p in model.parameters()) and hooks_left(model) == 0


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_on_the_cnn(pm, method):
    factory, model = make_model(pm, "cnn")
    with cam_session(model, target_layers(model, factory), method=method) as maps:
        cams, _ = maps(torch.rand(2, 1, 32, 32), [1, 2])
    assert cams.shape == (2, 32, 32) and cams.min() >= 0 and cams.max() <= 1


def test_errors_inside_a_session_propagate_and_the_model_is_restored(pm):
    factory, model = make_model(pm, "cnn")
    model.train()
    model(torch.rand(2, 1, 32, 32)).sum().backward()
    before = [p.grad.clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="boom"):
        with cam_session(model, target_layers(model, factory)) as maps:
            maps(torch.rand(2, 1, 32, 32), [0, 1])
            raise RuntimeError("boom")
    assert model.training and hooks_left(model) == 0
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))


def test_unknown_method_and_bad_target_layer_are_user_errors(pm):
    factory, model = make_model(pm, "cnn")
    with pytest.raises(SynthmedError, match="unknown Grad-CAM method 'gradcamz' — choose one of gradcam"):
        with cam_session(model, target_layers(model, factory), method="gradcamz"):
            pass
    with pytest.raises(SynthmedError, match="target layer 'block9.relu' is not a module"):
        target_layers(model, factory, "block9.relu")
    assert target_layers(model, factory, "block1.relu, block2.conv") == [model.block1.relu, model.block2.conv]


# --- metrics -------------------------------------------------------------------------------------
maps_8x8 = arrays(np.float64, (8, 8), elements=st.floats(0, 1, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(maps_8x8)
def test_a_map_agrees_perfectly_with_itself(a):
    if np.ptp(a) > 1e-6:
        assert pearson(a, a) == pytest.approx(1.0)
    if a.max() > 0:
        assert top_iou(a, a) == 1.0


@settings(max_examples=60, deadline=None)
@given(maps_8x8, maps_8x8)
def test_agreement_is_symmetric_and_bounded(a, b):
    r, iou = pearson(a, b), top_iou(a, b)
    assert (math.isnan(r) and math.isnan(pearson(b, a))) or (-1 <= r <= 1 and r == pytest.approx(pearson(b, a)))
    assert (math.isnan(iou) and math.isnan(top_iou(b, a))) or (0 <= iou <= 1 and iou == pytest.approx(top_iou(b, a)))


def test_unrelated_maps_agree_less_and_empty_maps_are_explicit():
    rng = np.random.default_rng(0)
    a, b = rng.random((32, 32)), rng.random((32, 32))
    assert abs(pearson(a, b)) < 0.2 and top_iou(a, b) < 0.3
    empty = np.zeros((32, 32))
    assert pearson(a, empty) == 0.0 and top_iou(a, empty) == 0.0  # evidence vs none
    assert math.isnan(pearson(empty, empty)) and math.isnan(top_iou(empty, empty))  # nothing to compare


def test_summarize_means_overall_and_per_class_skipping_missing():
    records = [
        {"class": "A", "agreement_pearson": 1.0, "baseline_pearson": None},
        {"class": "A", "agreement_pearson": 0.0, "baseline_pearson": 0.5},
        {"class": "B", "agreement_pearson": float("nan"), "baseline_pearson": 0.1},
    ]
    out = summarize(records, ["A", "B"], "gradcam")
    assert out["gradcam_agreement_pearson"] == 0.5 and out["gradcam_agreement_pearson_A"] == 0.5
    assert "gradcam_agreement_pearson_B" not in out
    assert out["gradcam_baseline_pearson"] == pytest.approx(0.3)


def test_faithfulness_is_bounded_seeded_and_leaves_the_global_rng_alone(pm):
    factory, model = make_model(pm, "cnn")
    model.eval()
    x = torch.rand(3, 1, 32, 32)
    with cam_session(model, target_layers(model, factory)) as maps:
        cams, logits = maps(x, [0, 1, 2])
    state = torch.random.get_rng_state()
    a = faithfulness(model, x, cams, [0, 1, 2], seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
    assert a.shape == (3,) and np.all(np.abs(a) <= 0.5)
    assert np.array_equal(a, faithfulness(model, x, cams, [0, 1, 2], seed=1))


@pytest.mark.parametrize("size,channels", [(32, 1), (24, 3)])
def test_faithfulness_gives_pytorch_grad_cams_road_numbers(size, channels):
    """The fast ROAD is pytorch-grad-cam's: same thresholds, linear system and noise draws."""
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from synthmed.gradcam.metrics import ROAD_PERCENTILE

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(channels, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * size * size, 3)).eval()
    x = torch.rand(4, channels, size, size)
    yy, xx = np.mgrid[0:size, 0:size]  # smooth blobs (one connected removed region) and noise
    cams = np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (size * 2.0)) for cy, cx in
                     ((5, 7), (size // 2, size // 2), (size - 3, 2))] + [np.random.default_rng(1).random((size, size))])
    cams = cams.astype(np.float32)
    targets = [0, 1, 2, 1]
    scorers = [ClassifierOutputSoftmaxTarget(t) for t in targets]
    with torch.random.fork_rng():
        torch.manual_seed(7)
        kept = ROADLeastRelevantFirst(ROAD_PERCENTILE)(x, cams, scorers, model, return_diff=False)
        lost = ROADMostRelevantFirst(ROAD_PERCENTILE)(x, cams, scorers, model, return_diff=False)
    reference = (kept - lost) / 2
    assert np.abs(reference).max() > 1e-4  # the removal changes the model's output at all
    np.testing.assert_allclose(faithfulness(model, x, cams, targets, seed=7), reference, atol=1e-5)


# --- overlay and figure ---------------------------------------------------------------------------
def test_overlay_is_rgb_uint8_gray_where_the_cam_is_zero():
    gray = np.linspace(0, 1, 16 * 16).reshape(16, 16)
    cam = np.zeros((16, 16))
    cam[4:8, 4:8] = 1.0
    out = overlay(gray, cam)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    expected = np.round(gray * 255).astype(np.uint8)
    off = cam == 0
    for c in range(3):
        assert np.array_equal(out[..., c][off], expected[off])  # untouched gray
    assert not np.array_equal(out[4:8, 4:8, 0], out[4:8, 4:8, 2])  # coloured where the CAM is hot
    assert np.array_equal(overlay((gray * 255).round().astype(np.uint8), cam), out)  # uint8 input too
    with pytest.raises(ValueError, match="one size"):
        overlay(gray, np.zeros((8, 8)))


# --- panels --------------------------------------------------------------------------------------
@pytest.fixture
def pool() -> ImageSet:
    labels = torch.arange(24) % 4
    return ImageSet(brains(24), labels)


def panels_with(gpm, pool, tmp_path, generator: str, model_name: str = "cnn"):
    factory, model = make_model(gpm, model_name)
    gen = registry("generators", gpm).get(generator)()
    return build_panels(model, target_layers(model, factory), pool=pool, classes=CLASSES, names=THESIS, pairs=3,
                        generator=gen, cache=GenerationCache(tmp_path / "cache"), seed=0, device="cpu",
                        reshape_transform=factory.gradcam_reshape_transform(model))


def test_identical_variation_agrees_perfectly_and_noise_does_not(gpm, pool, tmp_path):
    panels, records = panels_with(gpm, pool, tmp_path, "test-identity")
    assert [p.class_name for p in panels] == THESIS and len(records) == 6
    for r in records:
        assert r["agreement_pearson"] in (None, pytest.approx(1.0))
        assert r["agreement_top20_iou"] in (None, 1.0)
        assert r["p_true_real"] == pytest.approx(r["p_true_synthetic"])
    assert any(r["agreement_pearson"] is not None for r in records)
    _, noisy = panels_with(gpm, pool, tmp_path, "test-noise")
    ours = summarize(noisy, THESIS, "g")
    assert ours["g_agreement_pearson"] < 0.9
    assert set(summarize(records, THESIS, "g")) >= {"g_baseline_pearson", "g_faithfulness_real", "g_p_true_real"}
    for r in records:
        assert r["source_row"] in pool.index.tolist() and CLASSES[pool.labels[r["source_row"]]] == r["class"]


def test_panel_figure_has_six_labelled_tiles_per_pair(gpm, pool, tmp_path):
    panels, _ = panels_with(gpm, pool, tmp_path, "test-identity")
    n = len(panels[0])
    fig = panel_figure(panels[0], title="the title", notes=["r=1.00"] * n)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 6 * n + 1 and texts[-1] == "the title"
    assert texts[0].startswith("real #") and texts[1].startswith("CAM true: Moderate")
    assert texts[2].startswith("CAM pred:") and texts[3].startswith("synthetic (r=1.00)")
    canvas = fig.axes[0].images[0].get_array()
    assert canvas.shape[1] >= 6 * 128 and canvas.dtype == np.uint8  # 32-px tiles enlarged to 128


def test_every_training_run_logs_the_panel(mlflow_uri, gpm, tiny_splits, tmp_path):
    from synthmed.training import train

    res = train(Config(image_size=32, epochs=1, batch_size=16, quiet=True, register="none", gradcam=True,
                       generator="test-noise", cache_dir=str(tmp_path / "cache")), splits=tiny_splits, pm=gpm)
    client = mlflow.MlflowClient()
    paths = {a.path for a in client.list_artifacts(res.run_id, "gradcam")}
    assert {"gradcam/Moderate_Demented.png", "gradcam/Non_Demented.png", "gradcam/gradcam.json"} <= paths
    metrics = client.get_run(res.run_id).data.metrics
    for key in ("gradcam_faithfulness_real", "gradcam_faithfulness_synthetic", "gradcam_p_true_synthetic",
                "gradcam_empty_share_real_Non_Demented", "gradcam_faithfulness_real_Moderate_Demented"):
        assert key in metrics and key in res.metrics
    # agreement is missing only where both maps of every pair are empty (nothing to compare)
    empty = metrics["gradcam_empty_share_real"] == 1.0 and metrics["gradcam_empty_share_synthetic"] == 1.0
    assert empty or "gradcam_agreement_top20_iou" in metrics
    saved = json.loads(open(client.download_artifacts(res.run_id, "gradcam/gradcam.json", str(tmp_path))).read())
    assert saved["settings"]["images"] == "training sample" and len(saved["pairs"]) == 8  # 4 pairs x 2 classes


def test_run_config_reads_the_logged_params_and_ignores_the_others():
    from synthmed.gradcam import run_config

    params = {**{k: str(v) for k, v in Config(model="vit", image_size=64).to_dict().items()},
              "generator_options": "size=64", "n_train": "512", "epochs_run": "1"}
    cfg = run_config(params)
    assert cfg.model == "vit" and cfg.image_size == 64 and cfg.data_dir is None
    assert cfg.generator_params() == {"size": "64"}


# --- the command on a run trained for one epoch on the real data --------------------------------
@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("model", ["cnn", "resnet18", "vit"])
def test_command_logs_figures_and_metrics_for_a_trained_run(mlflow_uri, real_data_dir, tmp_path, monkeypatch, model):
    from synthmed.gradcam import gradcam
    from synthmed.training import train

    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    cfg = Config(dataset="alzheimer_mri", data_dir=str(real_data_dir), model=model, real_frac=0.1, epochs=1,
                 image_size=64, quiet=True, cache_dir=str(tmp_path / "cache"), experiment="gradcam")
    res = train(cfg)
    client = mlflow.MlflowClient()
    assert "gradcam_agreement_pearson" in client.get_run(res.run_id).data.metrics  # the training panel

    report = gradcam(f"runs:/{res.run_id}/model", pairs=2, method="hirescam")
    assert report.run_id == res.run_id
    assert report.figures == ["gradcam/test_hirescam/Moderate_Demented.png", "gradcam/test_hirescam/Non_Demented.png"]
    metrics = client.get_run(res.run_id).data.metrics
    for key in ("gradcam_test_hirescam_agreement_pearson", "gradcam_test_hirescam_agreement_top20_iou",
                "gradcam_test_hirescam_faithfulness_real", "gradcam_test_hirescam_faithfulness_synthetic"):
        assert key in metrics
    if model != "cnn":
        return
    # the click command, by registry URI, into a run of our own
    other = client.create_run(client.get_experiment_by_name("gradcam").experiment_id).info.run_id
    name = cfg.registered_model_name
    result = CliRunner().invoke(synthmed_cli, ["gradcam", "--model-uri", f"models:/{name}/1", "--pairs", "2", "--run-id",
                                                  other, "--classes", "Non_Demented", "--target-layer", "block1.relu"])
    assert result.exit_code == 0, result.output
    assert "gradcam/test/Non_Demented.png" in result.output
    assert {a.path for a in client.list_artifacts(other, "gradcam/test")} == {
        "gradcam/test/Non_Demented.png", "gradcam/test/gradcam.json"}
    assert "gradcam_test_agreement_pearson_Non_Demented" in client.get_run(other).data.metrics
    bad = CliRunner().invoke(synthmed_cli, ["gradcam", "--model-uri", f"models:/{name}/1", "--classes", "Sad"])
    assert bad.exit_code != 0 and "unknown class(es) Sad" in bad.output and "Traceback" not in bad.output


def test_mlproject_style_options_parse_and_a_bad_uri_is_a_click_error(mlflow_uri):
    """`mlflow run -e gradcam` passes every option, unset ones as '' and booleans as values."""
    args = ["--model-uri", "models:/nope/1", "--classes", "Moderate_Demented,Non_Demented", "--pairs", "8.0",
            "--generator", "", "--generator-options", "", "--method", "gradcam++", "--target-layer", "",
            "--images", "test", "--data-dir", "", "--run-id", "", "--cache-dir", "", "--allow-external", "False",
            "--device", "cpu", "--quiet", "false"]
    result = CliRunner().invoke(synthmed_cli, ["gradcam", *args])
    assert result.exit_code == 1, result.output
    assert "cannot resolve model URI 'models:/nope/1'" in result.output and "Traceback" not in result.output
    bad = CliRunner().invoke(synthmed_cli, ["gradcam", "--model-uri", "runs:/x/model", "--pairs", "2.5"])
    assert bad.exit_code == 2 and "2.5 is not a whole number" in bad.output
