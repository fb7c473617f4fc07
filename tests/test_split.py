"""A split without twins: distances, near-twin groups, the grouped split, the lookup baseline, the audit."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from synthmed.config import Config
from synthmed.data.base import ImageSet, Splits
from synthmed.data.grouped import group_split, near_twin_groups, regroup, subject_groups
from synthmed.data.loading import load_splits, sample_real, split_as_configured
from synthmed.data.twins import as_vectors, canonical_keys, choose_threshold, link_groups, nearest, rms_distances
from synthmed.errors import SynthmedError
from synthmed.lookup import lookup_baseline

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _components(points: np.ndarray, threshold: float) -> list[set[int]]:
    """Connected components by a plain union-find over every pair closer than ``threshold`` (the oracle)."""
    parent = list(range(len(points)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    d = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).mean(-1))
    for i, j in zip(*np.nonzero(d < threshold)):
        parent[find(int(i))] = find(int(j))
    out: dict[int, set[int]] = {}
    for i in range(len(points)):
        out.setdefault(find(i), set()).add(i)
    return sorted(out.values(), key=min)


def _partition(groups: torch.Tensor) -> list[set[int]]:
    out: dict[int, set[int]] = {}
    for row, g in enumerate(groups.tolist()):
        out.setdefault(g, set()).add(row)
    return sorted(out.values(), key=min)


# --- distances --------------------------------------------------------------------------------------
def test_rms_distances_match_scipy_cdist():
    from scipy.spatial.distance import cdist

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(37, 256, generator=g), torch.rand(11, 256, generator=g)
    expected = cdist(a.double().numpy(), b.double().numpy()) / math.sqrt(256)
    np.testing.assert_allclose(rms_distances(a, b).numpy(), expected, atol=2e-5)
    d, rows = nearest(a, b, 3)
    order = np.argsort(expected, axis=1)[:, :3]
    np.testing.assert_array_equal(rows.numpy(), order)
    d_self, rows_self = nearest(a, a, 1, exclude_self=True, block=5)  # blocks cut the rows
    assert not (rows_self[:, 0] == torch.arange(37)).any()


def test_as_vectors_area_averages_down_to_the_group_size():
    images = torch.randint(0, 256, (3, 1, 128, 128), dtype=torch.uint8)
    v = as_vectors(images, 64)
    assert v.shape == (3, 64 * 64)
    expected = images.float().div(255).view(3, 1, 64, 2, 64, 2).mean((3, 5)).flatten(1)
    torch.testing.assert_close(v, expected)
    assert as_vectors(images[:, :, :16, :16], 64).shape == (3, 256)  # smaller images keep their size


def test_threshold_sits_in_the_gap_between_twins_and_strangers():
    rng = np.random.default_rng(0)
    twins, strangers = rng.normal(0.04, 0.004, 500), rng.normal(0.10, 0.01, 1500)
    t = choose_threshold(np.concatenate([twins, strangers]))
    assert twins.max() < t < strangers.min() or 0.05 < t < 0.08
    with pytest.raises(SynthmedError, match="twin_threshold"):
        choose_threshold(np.array([0.1, 0.1]))


# --- groups -----------------------------------------------------------------------------------------
@FAST
@given(n=st.integers(2, 40), dim=st.integers(1, 4), threshold=st.floats(0.01, 0.6), seed=st.integers(0, 10_000))
def test_groups_are_exactly_the_connected_components(n, dim, threshold, seed):
    points = np.random.default_rng(seed).random((n, dim)).astype(np.float32)
    groups = link_groups(torch.from_numpy(points), threshold)
    assert _partition(groups) == _components(points, threshold)
    assert sorted(set(groups.tolist())) == list(range(int(groups.max()) + 1))  # ids 0..G-1


def _images(seed: int, n: int, twins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random 8x8 images in 3 classes plus ``twins`` near-copies (±2 grey levels) of some of them."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 3, (n,), generator=g)
    src = torch.randint(0, n, (twins,), generator=g)
    noise = torch.randint(-2, 3, (twins, 1, 8, 8), generator=g)
    copies = (base[src].int() + noise).clamp(0, 255).to(torch.uint8)
    return torch.cat([base, copies]), torch.cat([labels, labels[src]])


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(4, 30), twins=st.integers(0, 30), split_seed=st.integers(0, 50),
       frac=st.floats(0.1, 0.6))
def test_groups_and_the_split_ignore_the_order_of_the_images(seed, n, twins, split_seed, frac):
    images, labels = _images(seed, n, twins)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed + 1))
    keys = canonical_keys(images, labels)

    def by_content(imgs, labs):
        found = near_twin_groups(imgs, labs, threshold=0.05)
        cut = group_split(labs, found.groups, frac, split_seed)
        k = canonical_keys(imgs, labs)
        partition = {frozenset(k[i] for i in part) for part in _partition(found.groups)}
        return partition, sorted(k[i] for i in cut.test_rows.tolist())

    assert by_content(images, labels) == by_content(images[perm], labels[perm])
    assert len(set(keys)) <= len(keys)


@FAST
@given(n=st.integers(2, 60), dim=st.integers(1, 3), threshold=st.floats(0.02, 0.5), seed=st.integers(0, 10_000),
       frac=st.floats(0.05, 0.95), split_seed=st.integers(0, 100))
def test_a_grouped_split_never_separates_two_linked_images(n, dim, threshold, seed, frac, split_seed):
    rng = np.random.default_rng(seed)
    points = rng.random((n, dim)).astype(np.float32)
    labels = torch.from_numpy(rng.integers(0, 3, n))
    groups = link_groups(torch.from_numpy(points), threshold)
    cut = group_split(labels, groups, frac, split_seed)
    side = torch.zeros(n, dtype=torch.bool)
    side[cut.test_rows] = True
    d = np.sqrt(((points[:, None] - points[None]) ** 2).mean(-1))
    i, j = np.nonzero(d < threshold)
    assert (side[torch.from_numpy(i)] == side[torch.from_numpy(j)]).all()
    assert sorted(cut.train_rows.tolist() + cut.test_rows.tolist()) == list(range(n))


@FAST
@given(sizes=st.lists(st.lists(st.integers(1, 12), min_size=1, max_size=8), min_size=1, max_size=5),
       frac=st.floats(0.05, 0.9), seed=st.integers(0, 1000))
def test_stratification_keeps_every_class_with_two_groups_on_both_sides_and_says_when_it_cannot(sizes, frac, seed):
    labels, groups, g = [], [], 0
    for c, class_groups in enumerate(sizes):  # class c has len(class_groups) groups of these sizes
        for size in class_groups:
            labels += [c] * size
            groups += [g] * size
            g += 1
    cut = group_split(torch.tensor(labels), torch.tensor(groups), frac, seed, what="test")
    labels_t = torch.tensor(labels)
    for c, class_groups in enumerate(sizes):
        on_test = bool((labels_t[cut.test_rows] == c).any())
        on_train = bool((labels_t[cut.train_rows] == c).any())
        record = cut.per_class[c]
        assert record.groups_train + record.groups_test == len(class_groups)
        assert record.images_train + record.images_test == sum(class_groups)
        if len(class_groups) >= 2:
            assert on_test and on_train
        else:
            assert on_train and not on_test
            assert any(f"class {c} forms a single group" in note for note in cut.notes)
    if sizes and len(sizes[0]) == 2:  # fewer groups than min_groups: the class stays whole in training
        kept = group_split(torch.tensor(labels), torch.tensor(groups), frac, seed, min_groups=3)
        assert not (labels_t[kept.test_rows] == 0).any() and any("class 0 forms only 2 groups" in n for n in kept.notes)


def test_mixed_groups_are_counted_and_kept_whole():
    cut = group_split(torch.tensor([0, 0, 1, 1, 1, 0]), torch.tensor([0, 0, 0, 1, 1, 2]), 0.5, 0)
    assert cut.mixed_groups == 1
    test = set(cut.test_rows.tolist())
    assert {0, 1, 2} <= test or not {0, 1, 2} & test


# --- subject IDs ------------------------------------------------------------------------------------
def test_subject_groups_from_a_csv(tmp_path):
    csv = tmp_path / "subjects.csv"
    csv.write_text("file,subject\na/1.png,s2\na/2.png,s1\nb/1.png,s2\n")
    assert subject_groups(csv, ["a/1.png", "a/2.png", "b/1.png"]).tolist() == [1, 0, 1]
    with pytest.raises(SynthmedError, match=r"no subject for 1 of 4 images \(first: c/9.png\)"):
        subject_groups(csv, ["a/1.png", "a/2.png", "b/1.png", "c/9.png"])
    with pytest.raises(SynthmedError, match="no such file"):
        subject_groups(tmp_path / "absent.csv", ["a"])


def _folder(root, per_class: int = 6, size: int = 16):
    """Class folders of distinct random images; every image has a twin (±2 grey levels) named ``<i>b.png``."""
    g = torch.Generator().manual_seed(0)
    for c in ("alpha", "beta"):
        for i in range(per_class):
            img = torch.randint(0, 256, (size, size), generator=g, dtype=torch.uint8)
            twin = (img.int() + torch.randint(-2, 3, (size, size), generator=g)).clamp(0, 255).to(torch.uint8)
            for name, pixels in ((f"{i}a.png", img), (f"{i}b.png", twin)):
                (root / c).mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels.numpy()).save(root / c / name)
    return root


def test_grouped_imagefolder_by_near_twins_and_by_subject_csv(pm, tmp_path):
    root = _folder(tmp_path / "data")
    base = dict(dataset="imagefolder", data_dir=str(root), image_size=16, test_frac=0.3)
    given_split = load_splits(Config(**base), pm)
    grouped = load_splits(Config(**base, split="grouped", twin_threshold=0.05), pm)
    assert grouped.meta["split"] == "grouped" and grouped.meta["split_group_count"] == 12
    assert grouped.meta["split_mixed_groups"] == 0 and given_split.meta.get("split") is None
    train_groups, test_groups = set(grouped.train.groups.tolist()), set(grouped.test.groups.tolist())
    assert not train_groups & test_groups and len(grouped.train) + len(grouped.test) == 24
    d, _ = nearest(as_vectors(grouped.test.images), as_vectors(grouped.train.images), 1)
    assert float(d.min()) > 0.05  # no test image has a twin in training
    # subject IDs: pair image i of alpha with image i of beta (a "subject" spanning labels is kept whole)
    csv = tmp_path / "subjects.csv"
    csv.write_text("file,subject\n" + "".join(f"{c}/{i}{t}.png,subj{i}\n" for c in ("alpha", "beta")
                                             for i in range(6) for t in "ab"))
    by_subject = load_splits(Config(**base, split="grouped", groups=str(csv)), pm)
    assert by_subject.meta["split_groups"] == f"subjects from {csv}" and by_subject.meta["split_group_count"] == 6
    assert not set(by_subject.train.groups.tolist()) & set(by_subject.test.groups.tolist())


@functools.lru_cache(maxsize=1)
def _grouped_twins() -> tuple[Splits, Config]:
    """80 random 32 px images, each present twice (exact twins), regrouped with a 20% test split."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (80, 1, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(80) % 4
    twins = ImageSet(torch.cat([images, images]), torch.cat([labels, labels]))
    splits = Splits(train=twins.subset(torch.arange(4, 160)), test=twins.subset(torch.arange(4)),
                    classes=("a", "b", "c", "d"), fingerprint="twins")
    config = Config(split="grouped", twin_threshold=0.01, test_frac=0.2, image_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return regroup(splits, config), config


@FAST
@given(seed=st.integers(0, 10_000), frac=st.sampled_from([0.05, 0.3, 0.6, 1.0]), val=st.floats(0.05, 0.5))
def test_no_test_image_reaches_a_grouped_runs_sample_or_validation_carve(seed, frac, val):
    grouped, config = _grouped_twins()
    test_keys = set(canonical_keys(grouped.test.images, grouped.test.labels))
    real, carve = sample_real(grouped, config.replace(real_frac=frac, seed=seed, val_frac=val))
    assert not set(canonical_keys(real.images, real.labels)) & test_keys  # no test image, nor its twin
    assert not set(canonical_keys(carve.images, carve.labels)) & test_keys
    assert not set(real.groups.tolist()) & set(carve.groups.tolist())  # whole groups on each side
    assert not set(real.groups.tolist()) & set(grouped.test.groups.tolist())


def test_the_split_options_are_checked():
    with pytest.raises(SynthmedError, match="set split=grouped"):
        Config(groups="subjects.csv")
    with pytest.raises(SynthmedError, match="set split=grouped"):
        Config(twin_threshold=0.06)
    with pytest.raises(SynthmedError, match="split='random' is not allowed"):
        Config(split="random")


def test_regrouped_splits_refuse_a_config_that_says_given(tiny_splits):
    config = Config(split="grouped", twin_threshold=0.01, image_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grouped = split_as_configured(tiny_splits, config)
    assert split_as_configured(grouped, config) is grouped
    with pytest.raises(SynthmedError, match="regrouped"):
        split_as_configured(grouped, Config(image_size=32))


# --- the lookup -------------------------------------------------------------------------------------
def test_lookup_of_exact_copies_is_perfect():
    g = torch.Generator().manual_seed(0)
    one = ImageSet(torch.randint(0, 256, (40, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(40) % 4)
    ref = ImageSet.concat([one, one])  # every reference image has a copy: leave-one-out finds it, as the test will
    found = lookup_baseline(ref, one.subset(torch.arange(0, 40, 3)), 4)
    assert found.accuracy == 1.0 and found.balanced_accuracy == 1.0
    assert found.cross_entropy < 0.01 and found.fitted_on == "leave-one-out"
    alone = lookup_baseline(one, one.subset(torch.arange(0, 40, 3)), 4)  # no copies to fit on: T flattens to chance
    assert alone.accuracy == 1.0 and alone.cross_entropy > found.cross_entropy


def test_lookup_of_random_labels_is_chance():
    g = torch.Generator().manual_seed(1)
    ref = ImageSet(torch.randint(0, 256, (600, 1, 6, 6), generator=g, dtype=torch.uint8),
                   torch.randint(0, 4, (600,), generator=g))
    val = ImageSet(torch.randint(0, 256, (300, 1, 6, 6), generator=g, dtype=torch.uint8),
                   torch.randint(0, 4, (300,), generator=g))
    test = ImageSet(torch.randint(0, 256, (800, 1, 6, 6), generator=g, dtype=torch.uint8),
                    torch.randint(0, 4, (800,), generator=g))
    found = lookup_baseline(ref, test, 4, validation=val)
    assert abs(found.accuracy - 0.25) < 0.06
    assert abs(found.cross_entropy - math.log(4)) < 0.05  # the fitted temperature flattens it to the prior
    assert found.fitted_on == "validation"


# --- the audit --------------------------------------------------------------------------------------
def test_the_audit_finds_exactly_the_constructed_twins(pm, tmp_path):
    from synthmed.inspection.split import audit_split

    root = _folder(tmp_path / "data")
    for c in ("alpha", "beta"):  # the explicit layout: twins "a" in train/, "b" of images 0-2 in test/
        for i in range(6):
            (root / "train" / c).mkdir(parents=True, exist_ok=True)
            (root / "test" / c).mkdir(parents=True, exist_ok=True)
            (root / c / f"{i}a.png").rename(root / "train" / c / f"{i}a.png")
            (root / c / f"{i}b.png").rename(root / ("test" if i < 3 else "train") / c / f"{i}b.png")
        (root / c).rmdir()
    config = Config(dataset="imagefolder", data_dir=str(root), image_size=16, twin_threshold=0.05, split="grouped")
    splits = load_splits(config.replace(split="given", twin_threshold=None), pm)
    audit = audit_split(splits, config.replace(split="given", twin_threshold=None),
                        fractions=(1.0,), simulations=1)
    # the threshold chosen from the gap separates the ±2-level twins from the random strangers
    assert audit.twin_share == 1.0 and audit.groups == 12 and audit.groups_spanning == 6
    twin_rows = audit.test_nearest_row.tolist()
    names = splits.meta["image_files"]
    for test_name, row in zip(names["test"], twin_rows):
        assert names["train"][row].replace("train/", "test/").replace("a.png", "b.png") == test_name  # its own twin
    assert audit.lookup[0]["accuracy"] > 0.8  # the validation carve (for the temperature) may hold one twin
    grouped = audit_split(load_splits(config, pm), config, fractions=(1.0,), simulations=1)
    assert grouped.groups_spanning == 0 and grouped.twin_share == 0.0
    assert "| alpha | 6 |" in audit.markdown()


# --- beside every run, in sweep reports, and from the command line --------------------------------------
def test_every_run_logs_the_lookup_and_the_prior_beside_its_own_scores(mlflow_uri, tiny_splits):
    import mlflow

    from synthmed.training import train

    fast = dict(epochs=1, image_size=32, gradcam=False, log_model=False, register="none", quiet=True, batch_size=16)
    result = train(Config(**fast, real_frac=0.5, val_frac=0.25), splits=tiny_splits)
    logged = mlflow.get_run(result.run_id).data
    for name in ("lookup_test_accuracy", "lookup_test_cross_entropy", "lookup_temperature", "prior_test_cross_entropy"):
        assert name in logged.metrics and math.isfinite(logged.metrics[name])
    counts = torch.bincount(sample_real(tiny_splits, Config(**fast, real_frac=0.5, val_frac=0.25))[0].labels,
                            minlength=4).double()
    prior = -(counts / counts.sum()).log()[tiny_splits.test.labels].mean()
    assert logged.metrics["prior_test_cross_entropy"] == pytest.approx(float(prior))
    assert logged.tags["synthmed.split"] == "given"
    off = train(Config(**fast, lookup=False), splits=tiny_splits)
    assert "lookup_test_accuracy" not in mlflow.get_run(off.run_id).data.metrics


def test_the_sweep_report_draws_the_lookup_and_prior_lines():
    import pandas as pd

    from synthmed.sweep.render import median_figure, reference_lines

    results = pd.DataFrame({"model": "cnn", "policy": ["none"] * 4, "real_frac": [0.3, 0.3, 1.0, 1.0],
                            "test_cross_entropy": [0.7, 0.8, 0.2, 0.3],
                            "lookup_test_cross_entropy": [0.30, 0.34, 0.01, 0.02],
                            "prior_test_cross_entropy": [1.0, 1.0, 1.0, 1.0]})
    lines = reference_lines(results, "cnn")
    assert lines["1-NN pixel lookup (no learning)"] == ([0.3, 1.0], [pytest.approx(0.32), pytest.approx(0.015)])
    summary = pd.DataFrame({"model": "cnn", "policy": "none", "real_frac": [0.3, 1.0],
                            "test_cross_entropy.median": [0.75, 0.25], "test_cross_entropy.ci_low": [0.7, 0.2],
                            "test_cross_entropy.ci_high": [0.8, 0.3]})
    fig = median_figure(summary, "cnn", ["none"], references=lines)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "1-NN pixel lookup (no learning)" in labels and "class prior" in labels and "none" in labels
    assert reference_lines(results.drop(columns=["lookup_test_cross_entropy", "prior_test_cross_entropy"]), "cnn") == {}


def test_audit_split_command_logs_and_writes_the_audit(mlflow_uri, tmp_path):
    import mlflow
    from click.testing import CliRunner

    from synthmed.cli import main

    root = _folder(tmp_path / "data", per_class=8)
    out = tmp_path / "audit"
    result = CliRunner().invoke(main, ["audit-split", "--dataset", "imagefolder", "--data-dir", str(root),
                                       "--image-size", "16", "--test-frac", "0.25", "--fractions", "0.5,1",
                                       "--simulations", "2", "--features", "false", "--output", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "test images with a near-twin in training" in result.output
    assert {p.name for p in out.iterdir()} == {"twin_distances.png", "closest_pairs.png", "report.md", "lookup.json"}
    import re

    run_id = re.search(r"^run ([0-9a-f]{32})$", result.output, re.M).group(1)
    run = mlflow.get_run(run_id)
    assert run.data.tags["synthmed.kind"] == "audit-split" and "audit_twin_share" in run.data.metrics
    assert "audit_lookup_cross_entropy.0.5" in run.data.metrics
    assert "audit_feature_nn_accuracy" not in run.data.metrics  # --features false: no reference classifier
    bad = CliRunner().invoke(main, ["audit-split", "--fractions", "0,2"])
    assert bad.exit_code != 0 and "each fraction must be in (0, 1]" in bad.output


def test_the_grouped_split_is_the_same_whatever_size_a_run_trains_at(pm, tmp_path):
    root = _folder(tmp_path / "data", size=24)
    base = dict(dataset="imagefolder", data_dir=str(root), test_frac=0.3, split="grouped")
    cuts = [load_splits(Config(**base, image_size=size), pm) for size in (16, 24, 40)]
    for splits in cuts:
        assert splits.meta["twin_distance_px"] == 64 and splits.meta["split_group_count"] == 12
    assert all(torch.equal(c.test.index, cuts[0].test.index) for c in cuts)  # the same pooled rows held out
    assert len({c.meta["twin_threshold"] for c in cuts}) == 1
