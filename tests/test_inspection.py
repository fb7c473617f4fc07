"""synthmed.inspection on constructed cases: tiny sets, 32 px, 1-2 epochs."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from synthmed.data.base import ImageSet
from synthmed.inspection import (
    InspectionResult,
    frechet_distance,
    inspect_generation,
    kid,
    knn_precision_recall,
    label_fidelity,
    log_inspection,
    memorization,
    metric_suffix,
)
from synthmed.inspection import reference as ref_mod

from _toy_images import quadrant_set
from synthmed.inspection.realism import equal_size_draw, realism
from synthmed.inspection.reference import ReferenceClassifier

S = 32
CLASSES = ("a", "b", "c", "d")


def toy_set(n_per_class: int = 24, seed: int = 0, size: int = S) -> ImageSet:
    """Separable classes: class c is bright in quadrant c, plus noise."""
    return quadrant_set(n_per_class, seed, size)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    train = toy_set()
    root = tmp_path_factory.mktemp("ref")
    clf, cached = ReferenceClassifier.fit_or_load(train, 4, S, "toy-fp", root, epochs=2)
    assert not cached
    return train, clf, root


# --- metrics ---------------------------------------------------------------------------------

def test_frechet_distance_zero_for_same_and_grows_with_shift():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    d1, d2 = frechet_distance(x, x + 1), frechet_distance(x, x + 3)
    assert d1 == pytest.approx(8.0, rel=1e-3)  # |shift|^2 = 8 * 1
    assert d2 > d1 > 0


def test_frechet_distance_singular_covariance():
    x = torch.randn(10, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # N < D: singular
    assert frechet_distance(x, x + 0.5) == pytest.approx(20 * 0.25, rel=1e-12)  # same covariance: |shift|^2 only
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-12)


# --- agreement with torchmetrics on the same features ------------------------------------------------

class _Identity(torch.nn.Module):
    """torchmetrics' ``feature`` extractor over precomputed feature vectors: hands them through."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _dead_units(n: int, dim: int, shift: float, seed: int) -> torch.Tensor:
    """ReLU features with 10 dead units, like a classifier's penultimate layer: singular covariance."""
    x = torch.relu(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift)
    x[:, :10] = 0
    return x


FEATURE_CASES = {
    "gaussian": lambda: (torch.randn(400, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
                         1.3 * torch.randn(500, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
                         + 0.5),
    "dead-units": lambda: (_dead_units(300, 64, 0.0, 2), _dead_units(300, 64, 0.1, 3)),
    "fewer-rows-than-dims": lambda: (torch.randn(40, 64, generator=torch.Generator().manual_seed(4),
                                                 dtype=torch.float64),
                                     torch.randn(50, 64, generator=torch.Generator().manual_seed(5),
                                                 dtype=torch.float64) + 0.2),
}


@pytest.mark.parametrize("case", FEATURE_CASES)
def test_frechet_distance_agrees_with_torchmetrics(case):
    fid_mod = pytest.importorskip("torchmetrics.image.fid")
    a, b = FEATURE_CASES[case]()
    fid = fid_mod.FrechetInceptionDistance(feature=_Identity(a.shape[1]))
    fid.update(a, real=True)
    fid.update(b, real=False)
    assert frechet_distance(a, b) == pytest.approx(float(fid.compute()), rel=1e-6)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save all extracted features")
@pytest.mark.parametrize("case", FEATURE_CASES)
def test_kid_agrees_with_torchmetrics_on_the_same_subsets(case):
    kid_mod = pytest.importorskip("torchmetrics.image.kid")
    a, b = FEATURE_CASES[case]()
    n = min(len(a), len(b))
    # one subset of every row: no draw at all (an MMD does not depend on the order of the rows)
    tm = kid_mod.KernelInceptionDistance(feature=_Identity(a.shape[1]), subsets=1, subset_size=n)
    tm.update(a[:n], real=True)
    tm.update(b[:n], real=False)
    assert kid(a[:n], b[:n], subsets=1, subset_size=n)[0] == pytest.approx(float(tm.compute()[0]), rel=1e-6)
    # ten subsets: torchmetrics draws them from torch's global generator, synthmed from its own seeded
    # one; seeding the global one alike gives the same draws, hence the same mean and (population) std
    tm = kid_mod.KernelInceptionDistance(feature=_Identity(a.shape[1]), subsets=10, subset_size=n // 2)
    tm.update(a, real=True)
    tm.update(b, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        tm_mean, tm_std = (float(v) for v in tm.compute())
    mean, std = kid(a, b, subsets=10, subset_size=n // 2, seed=7)
    assert mean == pytest.approx(tm_mean, rel=1e-6) and std == pytest.approx(tm_std, rel=1e-6)


def test_frechet_distance_agrees_with_torchmetrics_on_reference_features(trained):
    fid_mod = pytest.importorskip("torchmetrics.image.fid")
    train, clf, _ = trained
    f = clf.features(train.images).double()  # (96, 64), with dead units: singular covariances

    def torchmetrics_fd(a, b):
        fid = fid_mod.FrechetInceptionDistance(feature=_Identity(f.shape[1]))
        fid.update(a, real=True)
        fid.update(b, real=False)
        return float(fid.compute())

    a, b = f[train.labels == 0], f[train.labels == 1]
    assert frechet_distance(a, b) == pytest.approx(torchmetrics_fd(a, b), rel=1e-6)
    # two halves of the same classes: FD ~5e-5, where torchmetrics' square roots of near-zero
    # eigenvalues of S_a S_b carry ~1e-8 of round-off (synthmed's singular values do not: checked
    # against 40-digit arithmetic when this test was written)
    a, b = f[::2], f[1::2]
    assert frechet_distance(a, b) == pytest.approx(torchmetrics_fd(a, b), rel=1e-3, abs=1e-7)


# --- realism at equal set sizes, beside its floor ----------------------------------------------------

def test_equal_size_draw_takes_the_smaller_of_the_synthetic_set_and_half_the_pool():
    draw = equal_size_draw(300, 401, seed=0)
    assert draw.size == len(draw.a_rows) == len(draw.b_rows) == 200
    assert not set(draw.a_rows.tolist()) & set(draw.b_rows.tolist())
    assert max(draw.a_rows.max(), draw.b_rows.max()) < 401 and draw.synth_rows.max() < 300
    small = equal_size_draw(50, 401, seed=0)
    assert small.size == 50 and len(small.synth_rows.unique()) == 50
    assert torch.equal(small.a_rows, equal_size_draw(50, 401, seed=0).a_rows)  # seeded
    with pytest.raises(ValueError, match="equal set sizes"):
        realism(torch.zeros(5, 2), torch.zeros(5, 2), torch.zeros(4, 2), k=3, with_kid=False, seed=0)


def test_the_floor_of_two_real_halves_is_far_below_a_shifted_distribution():
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(2000, 16, generator=g)
    same = torch.randn(800, 16, generator=g)  # synthetic from the real distribution
    shifted = torch.randn(800, 16, generator=g) + 0.5
    draw = equal_size_draw(800, len(pool), seed=1)
    assert draw.size == 800
    a, b = pool[draw.a_rows], pool[draw.b_rows]
    good = realism(same[draw.synth_rows], a, b, k=3, with_kid=True, seed=0)
    bad = realism(shifted[draw.synth_rows], a, b, k=3, with_kid=True, seed=0)
    assert good["set_size"] == bad["set_size"] == 800
    assert good["fd_floor"] == bad["fd_floor"] and good["kid_floor"] == bad["kid_floor"]  # the floor: real only
    assert bad["fd"] > 10 * bad["fd_floor"] and bad["kid"] > 10 * abs(bad["kid_floor"])
    assert good["fd"] < 2 * good["fd_floor"]  # the same distribution scores like two real halves
    assert 0 < good["fd_floor"] < 0.5  # FD's finite-sample bias at 800 rows in 16 dimensions, not zero
    assert bad["recall"] < good["recall"] and abs(good["recall"] - good["recall_floor"]) < 0.1


def test_kid_zero_for_same_distribution_positive_for_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 16, generator=g), torch.randn(400, 16, generator=g)
    same, _ = kid(a, b, subsets=10, subset_size=200)
    shifted, std = kid(a, b + 1.0, subsets=10, subset_size=200)
    assert abs(same) < 0.05
    assert shifted > 0.5 and shifted > 10 * abs(same)
    assert std >= 0


def test_precision_recall_identical_and_disjoint():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 5, generator=g)
    assert knn_precision_recall(x, x.clone(), k=3) == (1.0, 1.0)
    p, r = knn_precision_recall(x, torch.randn(100, 5, generator=g) + 100, k=3)
    assert p == pytest.approx(0.0, abs=0.01) and r == pytest.approx(0.0, abs=0.01)


def test_label_fidelity_per_class_nan():
    out = label_fidelity(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]), 3)
    assert out["overall"] == 0.75
    assert out["per_class"][0] == pytest.approx(2 / 3) and out["per_class"][1] == 1.0
    assert math.isnan(out["per_class"][2]) and out["counts"] == [3, 1, 0]


def test_memorization_identity_generator_source_distance_zero():
    real = toy_set(8)
    x = real.images.reshape(len(real), -1).float() / 255
    mem = memorization(x, real.index, x, real.index)
    assert torch.all(mem["source_distance"] == 0)
    assert torch.all(mem["nearest_other"] > 0)  # its own source is excluded
    assert mem["near_copies"] == 0 and mem["n"] == len(real)


def test_memorization_copy_of_other_real_image_is_near_copy():
    real = toy_set(8)
    x = real.images.reshape(len(real), -1).float() / 255
    n = len(real)
    other = (torch.arange(n) + 1) % n  # synthetic i is an exact copy of real image i+1
    mem = memorization(x[other], real.index, x, real.index, chunk=7)  # small chunks on purpose
    assert mem["near_copies"] == n and mem["near_copy_rate"] == 1.0
    assert torch.all(mem["nearest_other"] == 0)
    assert torch.equal(mem["nearest_other_id"], real.index[other])
    assert torch.all(mem["source_distance"] > 0)


def test_memorization_missing_source_is_nan():
    x = torch.randn(5, 4)
    mem = memorization(x + 0.1, torch.tensor([100, 101, 102, 103, 104]), x, torch.arange(5))
    assert torch.isnan(mem["source_distance"]).all()


# --- reference classifier --------------------------------------------------------------------

def test_reference_fidelity_high_on_train_low_on_noise(trained):
    train, clf, _ = trained
    assert (clf.predict(train.images) == train.labels).double().mean() > 0.9
    g = torch.Generator().manual_seed(1)
    noise = torch.randint(0, 256, (64, 1, S, S), generator=g, dtype=torch.uint8)
    intended = torch.arange(64) % 4
    fid = label_fidelity(clf.predict(noise), intended, 4)["overall"]
    assert fid < 0.5
    feats = clf.features(train.images[:5])
    assert feats.shape == (5, 64) and feats.dtype == torch.float32


def test_reference_cache_second_call_does_not_train(trained, monkeypatch):
    train, clf, root = trained
    calls = []
    real_train = ref_mod._train
    monkeypatch.setattr(ref_mod, "_train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    clf2, cached = ReferenceClassifier.fit_or_load(train, 4, S, "toy-fp", root, epochs=2)
    assert cached and not calls
    assert torch.equal(clf2.predict(train.images), clf.predict(train.images))
    assert len(list((root / "_reference").glob("*.pt"))) == 1
    assert not list((root / "_reference").glob("*.part"))
    _, cached = ReferenceClassifier.fit_or_load(train, 4, S, "other-fp", root, epochs=1)
    assert not cached and len(calls) == 1  # another fingerprint: a new key, trains


def _hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha256(im.numpy().tobytes()).hexdigest() for im in images}


def test_reference_trains_on_the_given_train_split_only(tmp_path, monkeypatch):
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    seen = []
    monkeypatch.setattr(ref_mod, "_train", lambda model, data, **k: seen.append(data))

    @settings(max_examples=5, deadline=None)
    @given(seed=st.integers(0, 10_000), n=st.integers(8, 30), frac=st.floats(0.2, 0.8))
    def check(seed, n, frac):
        g = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
        perm = torch.randperm(n, generator=g)
        cut = max(1, min(n - 1, int(n * frac)))
        full = ImageSet(images, torch.randint(0, 2, (n,), generator=g))
        train, test = full.subset(perm[:cut]), full.subset(perm[cut:])
        seen.clear()
        ReferenceClassifier.fit_or_load(train, 2, 8, f"fp-{seed}-{n}-{frac}", tmp_path / str(seed))
        assert len(seen) == 1
        used = _hashes(seen[0].images)
        assert used == _hashes(train.images)
        assert not used & (_hashes(test.images) - _hashes(train.images))

    check()


# --- inspect_generation ----------------------------------------------------------------------

def test_blur_keeps_shape_and_mean_and_removes_fine_detail():
    from synthmed.inspection import blur

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8, generator=g)
    out = blur(images)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert abs(out.float().mean() - images.float().mean()) < 3  # same brightness (up to the black border)
    detail = lambda x: x.float().diff(dim=-1).abs().mean()  # noqa: E731
    assert detail(out) < 0.5 * detail(images)


def test_inspect_generation_identity_and_copy(trained):
    train, clf, _ = trained
    n = len(train)
    ident = ImageSet(train.images.clone(), train.labels.clone(), train.index.clone(), torch.ones(n, dtype=torch.bool))
    res = inspect_generation(train, ident, clf, CLASSES, cheap=False)
    assert isinstance(res, InspectionResult)
    m = res.metrics
    assert m["memorization_source_distance"] == 0.0
    assert m["memorization_near_copies_pixel"] == 0.0
    assert 0 <= m["memorization_near_copies_pixel_floor"] <= 1 and 0 <= m["memorization_near_copies_feature_floor"] <= 1
    assert all(f"fidelity_real_blurred_{metric_suffix(c)}" in m for c in CLASSES)  # the sharpness calibration
    # equal set sizes: half the pool; an identity generator scores like two real halves (up to the
    # draw: 48 images in 64 dimensions), a noise generator far above them
    assert m["quality_set_size"] == n // 2
    assert 0 < m["quality_fd"] < 3 * m["quality_fd_floor"]
    assert m["quality_recall"] >= m["quality_recall_floor"] - 0.15
    g = torch.Generator().manual_seed(1)
    noise = ImageSet(torch.randint(0, 256, train.images.shape, dtype=torch.uint8, generator=g),
                     train.labels, train.index, torch.ones(n, dtype=torch.bool))
    m_noise = inspect_generation(train, noise, clf, CLASSES, cheap=True).metrics
    assert m_noise["quality_fd_floor"] == m["quality_fd_floor"]  # same seed, same real halves
    assert m_noise["quality_fd"] > 20 * m_noise["quality_fd_floor"] and m_noise["quality_recall"] == 0.0
    assert m_noise["fidelity"] <= 0.5  # chance is 0.25
    assert m["fidelity"] > 0.9
    # an identity generator's images are the sources: the real ceiling equals the synthetic score
    assert m["fidelity_real"] == pytest.approx(m["fidelity"])
    assert all(m[f"fidelity_real_{c}"] == pytest.approx(m[f"fidelity_{c}"], nan_ok=True) for c in CLASSES)
    for key in ("quality_kid", "quality_kid_std", "quality_kid_floor", "quality_kid_std_floor",
                "quality_precision_floor", "quality_recall_floor", "quality_precision_a", "quality_recall_d",
                "fidelity_b",
                "memorization_near_copies_feature", "memorization_near_copies_c",
                "memorization_nearest_other_distance"):
        assert key in m
    assert "inspection/class_a.png" in res.figures and "inspection/overview.png" in res.figures
    assert len(res.worst_pairs) == n

    # a generator that returns a copy of another real image of the same class
    other = torch.cat([torch.roll(torch.nonzero(train.labels == c).flatten(), 1) for c in range(4)])
    rows = torch.cat([torch.nonzero(train.labels == c).flatten() for c in range(4)])
    copy = ImageSet(train.images[other], train.labels[rows], train.index[rows], torch.ones(n, dtype=torch.bool))
    res = inspect_generation(train, copy, clf, CLASSES, cheap=True, max_images=40, seed=3)
    assert res.metrics["memorization_near_copies_pixel"] == 1.0
    assert all(res.metrics[f"memorization_near_copies_{c}"] == 1.0 for c in CLASSES
               if not math.isnan(res.metrics[f"memorization_near_copies_{c}"]))
    assert "quality_kid" not in res.metrics and "quality_kid_floor" not in res.metrics
    assert res.metrics["quality_set_size"] == 40  # min(40 synthetic, 96 // 2)
    assert set(res.figures) == {"inspection/overview.png", "inspection/worst_pairs.png"}
    assert len(res.worst_pairs) == 40

    logged = {}
    log_inspection(res, lambda d: logged.setdefault("metrics", d),
                   lambda fig, name: logged.setdefault("figs", []).append(name),
                   lambda text, name: logged.setdefault("text", (name, text)), prefix="check_")
    assert all(not (isinstance(v, float) and np.isnan(v)) for v in logged["metrics"].values())
    assert all(k.startswith("check_") for k in logged["metrics"]) and "check_quality_fd_floor" in logged["metrics"]
    assert logged["text"][0] == "inspection/worst_pairs.csv" and "near_copy_pixel" in logged["text"][1]
    assert len(logged["figs"]) == 2


def test_predict_from_features_matches_predict(trained):
    train, clf, _ = trained
    f = clf.features(train.images)
    assert torch.equal(clf.predict_from_features(f), clf.predict(train.images))
    f[:] = 0  # a returned copy: the memo is not changed
    assert clf.features(train.images).abs().sum() > 0


# --- the per-run check and the full check: one set of metrics, two names -----------------------------

class _Sink:
    """A run logger's three methods, keeping what they were handed."""

    def __init__(self):
        self.metrics, self.figures, self.texts = {}, [], []

    def log_metrics(self, metrics):
        self.metrics.update(metrics)

    def log_figure(self, fig, path):
        self.figures.append(path)

    def log_text(self, text, path):
        self.texts.append(path)


def test_the_per_run_check_logs_check_names_and_the_full_check_the_plain_ones(tiny_splits):
    from synthmed.config import Config
    from synthmed.inspection.run import check_run

    config = Config(image_size=32, quiet=True)
    real = tiny_splits.train.subset(torch.arange(0, 64, 2))  # the run's sample: 32 of the 64 training images
    synth = ImageSet(real.images.flip(-1), real.labels, real.index, torch.ones(len(real), dtype=torch.bool))
    train_set = ImageSet.concat([real, synth])
    per_run, full = _Sink(), _Sink()
    check_run(train_set, real, tiny_splits, config, per_run)
    result = check_run(train_set, real, tiny_splits, config, full, cheap=False)
    assert all(k.startswith("check_") for k in per_run.metrics)
    assert {"check_quality_fd", "check_quality_fd_floor", "check_quality_set_size", "check_fidelity",
            "check_fidelity_real", "check_memorization_near_copies_pixel",
            "check_inspection_reference_from_cache"} <= set(per_run.metrics)
    assert not any(k.startswith("check_") for k in full.metrics)
    assert {"quality_fd", "quality_fd_floor", "quality_kid", "quality_kid_floor", "fidelity"} <= set(full.metrics)
    assert {k for k, v in result.metrics.items() if v == v} <= set(full.metrics)  # the plain names (NaN: not logged)
    # realism against the full training split's halves: m = min(32 synthetic, 64 // 2)
    assert per_run.metrics["check_quality_set_size"] == full.metrics["quality_set_size"] == 32
