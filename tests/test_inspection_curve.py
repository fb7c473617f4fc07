"""The fidelity–diversity curve on constructed generators, and ``synthmed inspect-generator --strengths``.

The curve's computation is tested with a stub reference whose features are known (the four
quadrant brightnesses; it predicts the brightest quadrant), on tiny images; the CLI end to end on
a tiny image folder with the real reference classifier and the ``pca`` generator.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from synthmed.data.base import ImageSet
from synthmed.inspection import curve_sources, fidelity_diversity_curve
from synthmed.inspection.figures import fidelity_diversity_figure

import _toy_images as toy_images

S = 16
CLASSES = ("a", "b", "c", "d")


def quadrant_set(n_per_class: int, seed: int, size: int = S) -> ImageSet:
    """Class c is bright in quadrant c, plus noise."""
    return toy_images.quadrant_set(n_per_class, seed, size)


class QuadrantReference:
    """A stub reference classifier: features are the four quadrant means in [0, 1]; it predicts the brightest."""

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255  # (N, 1, H, W)
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        quads = [x[:, 0, r * h:(r + 1) * h, q * w:(q + 1) * w].mean((1, 2)) for r in range(2) for q in range(2)]
        return torch.stack(quads, 1)  # (N, 4)

    def predict_from_features(self, features: torch.Tensor) -> torch.Tensor:
        return features.argmax(1).long()


def noise_like(images: torch.Tensor, seed: int = 7) -> torch.Tensor:
    return torch.randint(0, 256, images.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.fixture
def pool() -> ImageSet:
    return quadrant_set(24, seed=0)


@pytest.fixture
def sources(pool) -> ImageSet:
    return pool.subset(curve_sources(pool.labels, 10, seed=0))


def test_curve_sources_are_a_seeded_stratified_draw():
    labels = torch.tensor([0] * 30 + [1] * 5 + [2] * 12)
    rows = curve_sources(labels, 8, seed=3)
    assert torch.bincount(labels[rows]).tolist() == [8, 5, 8]  # every image of a class with fewer
    assert torch.equal(rows, curve_sources(labels, 8, seed=3)) and torch.equal(rows, rows.sort().values)
    assert not torch.equal(rows, curve_sources(labels, 8, seed=4))


def test_identity_generator_scores_the_real_sources(pool, sources):
    curve = fidelity_diversity_curve(sources, lambda s: sources.images.clone(), [0.2, 0.8], QuadrantReference(),
                                     CLASSES, pool)
    t = curve.table
    real, synth = t[t["images"] == "real"].iloc[0], t[t["images"] == "synthetic"]
    assert math.isnan(real["strength"]) and synth["strength"].tolist() == [0.2, 0.8]
    assert (synth["distance_to_source"] == 0).all() and real["distance_to_source"] == 0
    for column in ["fidelity", *(f"fidelity_{c}" for c in CLASSES), "precision", "recall"]:
        assert (synth[column] == real[column]).all(), column  # an identity generator is its sources
    assert real["fidelity"] == 1.0  # the stub recognises every real toy image
    # equal set sizes: as many other real images as sources, per class, none of them a source
    assert curve.comparison_size == len(sources) and curve.sources_per_class == [10] * 4
    assert "40 sources" in curve.note() and "one variation each" in curve.note()


def test_noise_generator_loses_the_labels_and_covers_no_real_image(pool, sources):
    curve = fidelity_diversity_curve(sources, lambda s: noise_like(sources.images), [0.5], QuadrantReference(),
                                     CLASSES, pool)
    noise = curve.table.iloc[1]
    assert noise["fidelity"] < 0.5  # chance is 0.25: the prediction no longer follows the intended class
    assert noise["recall"] == 0.0 and noise["precision"] == 0.0
    assert noise["distance_to_source"] > 0.3
    assert curve.table.iloc[0]["recall"] > 0.5  # real vs other real images of the same classes


def test_a_source_to_noise_interpolation_trades_fidelity_for_distance(pool, sources):
    noise = noise_like(sources.images).float()

    def interpolate(strength: float) -> torch.Tensor:  # strength 0: the source; 1: pure noise
        return ((1 - strength) * sources.images.float() + strength * noise).round().clamp(0, 255).to(torch.uint8)

    strengths = [0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0]
    curve = fidelity_diversity_curve(sources, interpolate, strengths, QuadrantReference(), CLASSES, pool)
    synth = curve.table[curve.table["images"] == "synthetic"]
    fidelity, distance = synth["fidelity"].tolist(), synth["distance_to_source"].tolist()
    assert all(a >= b for a, b in zip(fidelity, fidelity[1:])), fidelity  # non-increasing
    assert all(a < b for a, b in zip(distance, distance[1:])), distance  # increasing
    assert fidelity[0] == 1.0 and fidelity[-1] < 0.5 and distance[0] == 0.0
    for c in CLASSES:
        per_class = synth[f"fidelity_{c}"].tolist()
        assert all(a >= b for a, b in zip(per_class, per_class[1:])), (c, per_class)

    md = curve.markdown()
    assert md.splitlines()[0].startswith("| images | strength | fidelity | fidelity_a") and len(md.splitlines()) == 10
    fig = fidelity_diversity_figure(curve)
    assert len(fig.axes) == 3
    dashed = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 4  # the reference's fidelity on the real sources, one per class
    recall_lines = {line.get_label() for line in fig.axes[1].get_lines()}
    assert {"recall", "precision", "recall, real vs real", "precision, real vs real"} <= recall_lines


def test_the_comparison_images_are_other_real_images_of_the_same_classes(pool):
    # a pool barely larger than the sources: each class compares as many images as it has left
    sources = pool.subset(curve_sources(pool.labels, 20, seed=1))
    seen = []

    class Spy(QuadrantReference):
        def features(self, images):
            seen.append(images)
            return super().features(images)

    curve = fidelity_diversity_curve(sources, lambda s: sources.images, [0.5], Spy(), CLASSES, pool)
    compared = seen[0]
    assert len(compared) == curve.comparison_size == 4 * 4  # 24 - 20 others per class
    source_bytes = {bytes(im.numpy().tobytes()) for im in sources.images}
    assert not any(bytes(im.numpy().tobytes()) in source_bytes for im in compared)


def test_a_variation_of_the_wrong_shape_is_refused(pool, sources):
    with pytest.raises(ValueError, match="strength 0.5: expected"):
        fidelity_diversity_curve(sources, lambda s: sources.images[:, :, :8], [0.5], QuadrantReference(), CLASSES,
                                 pool)


# --- `synthmed inspect-generator --strengths` end to end ---------------------------------------------

def _args(root, *extra: str) -> list[str]:
    return ["inspect-generator", "--dataset", "imagefolder", "--data-dir", str(root), "--image-size", str(S),
            "--test-frac", "0.25", "--real-frac", "0.5", "--val-frac", "0", "--quiet", *extra]


@pytest.mark.slow
def test_inspect_generator_strengths_logs_and_prints_the_curve(image_folder, mlflow_uri, tmp_path, monkeypatch):
    import mlflow
    from click.testing import CliRunner

    from synthmed.cli import main
    from synthmed.generators.pca import PcaGenerator

    calls = []
    original = PcaGenerator._one  # what makes one image, whichever entry point the cache uses
    monkeypatch.setattr(PcaGenerator, "_one", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    root = image_folder(tmp_path / "data")
    args = _args(root, "--generator", "pca", "--generator-options", "components=3", "--strengths", "0.8,0,0.4",
                 "--curve-images", "3")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    made_for_the_run = len(calls)
    out = result.output
    assert "floor: B vs A" in out and re.search(r"^\s+fd\s+\S+\s+\S+$", out, re.M)
    assert "6 sources (seeded, stratified: left 3, right 3), one variation each" in out
    assert re.search(r"^\| real \|  \|", out, re.M) and re.search(r"^\| synthetic \| 0\.4 \|", out, re.M)

    run = mlflow.get_run(re.search(r"^run ([0-9a-f]{32})$", out, re.M).group(1))
    metrics, params = run.data.metrics, run.data.params
    assert {"quality_fd", "quality_fd_floor", "quality_kid_floor", "quality_set_size", "fidelity"} <= set(metrics)
    assert not any(k.startswith("check_") for k in metrics)  # the full check's names
    assert params["inspection_curve_strengths"] == "0,0.4,0.8" and params["inspection_curve_fits"] == "1"
    # the run's variations (at the default strength 0.5), then 6 sources at each of the 3 other strengths
    assert made_for_the_run == int(params["synthetic_images"]) + 3 * 6, out
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "inspection")}
    assert {"inspection/curve.csv", "inspection/curve.md", "inspection/fidelity_diversity.png"} <= artifacts

    calls.clear()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert not calls  # the rerun read every image, the curve's included, from the generation cache


@pytest.mark.parametrize(("extra", "message"), [
    (["--generator", "elastic"], r"generator 'elastic' has none — installed ones that have it: .*pca"),
    (["--generator", "pca", "--generator-options", "mode=sample"], r"'pca' with mode=sample .* ignores strength"),
])
def test_inspect_generator_strengths_refuses_a_generator_without_strength(image_folder, mlflow_uri, tmp_path, extra, message):
    import mlflow
    from click.testing import CliRunner

    from synthmed.cli import main

    result = CliRunner().invoke(main, _args(image_folder(tmp_path / "data"), *extra, "--strengths", "0.1,0.5"))
    assert result.exit_code != 0 and re.search(message, result.output), result.output
    assert "Traceback" not in result.output
    assert not mlflow.search_runs(search_all_experiments=True).shape[0]  # refused before any run was opened


def test_inspect_generator_strengths_refuses_a_strength_outside_the_generators_range(image_folder, mlflow_uri, tmp_path):
    from click.testing import CliRunner

    from synthmed.cli import main

    root = image_folder(tmp_path / "data")
    result = CliRunner().invoke(main, _args(root, "--generator", "pca", "--strengths", "0.5,1.5"))
    assert result.exit_code != 0 and "pca" in result.output and "strength" in result.output, result.output
    bad = CliRunner().invoke(main, _args(root, "--generator", "pca", "--strengths", "0.5,x"))
    assert bad.exit_code != 0 and "comma-separated list of numbers" in bad.output
