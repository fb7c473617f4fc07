"""The synthetic policy: mixing arithmetic (hypothesis), the mixed set, logging, replace, CLI, real data."""

from __future__ import annotations

import csv
import json
import math
import tempfile
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import synthmed.plugins
from synthmed.cli import main as synthmed_cli
from synthmed.config import Config
from synthmed.data.base import Dataset, ImageSet, Splits
from synthmed.errors import SynthmedError
from synthmed.generators.base import Generator, source_hash
from synthmed.generators.cache import GenerationCache
from synthmed.generators.elastic import ElasticGenerator
from synthmed.hookspecs import hookimpl
from synthmed.policies._mixing import plan_synthetic, synthetic_counts, synthetic_total
from synthmed.policies.base import PolicyContext
from synthmed.policies.synthetic import SyntheticPolicy, replace_epoch
from synthmed.training import sample_real

CLASSES = ("Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented")


# --- the arithmetic ---------------------------------------------------------------------------------
def stratified(full, frac):
    return [min(n, max(1, math.floor(frac * n + 0.5))) for n in full]


splits_st = st.tuples(
    st.lists(st.integers(1, 400), min_size=2, max_size=6),  # n_c
    st.floats(0.02, 1.0),  # X
    st.one_of(st.none(), st.floats(0.0, 2.0)),  # Y (None: fill up)
)


@given(splits_st)
def test_counts_sum_to_s_and_follow_the_full_proportions(case):
    full, x, y = case
    real = stratified(full, x)
    total = synthetic_total(sum(full), sum(real), y)
    counts = synthetic_counts(full, real, total)
    assert sum(counts) == total and min(counts) >= 0
    if y is None:  # fill up: every class back to its full size, whatever the sample's rounding
        assert [r + s for r, s in zip(real, counts)] == full
    mixed = sum(real) + total
    targets = [Fraction(mixed * n, sum(full)) for n in full]
    if all(t >= r for t, r in zip(targets, real)):  # no class already above its share
        assert all(abs(r + s - t) < 1 for r, s, t in zip(real, counts, targets))


@given(splits_st)
def test_balance_gives_rare_classes_at_least_the_default_and_levels_the_rest(case):
    full, x, y = case
    real = stratified(full, x)
    total = synthetic_total(sum(full), sum(real), y)
    default = synthetic_counts(full, real, total)
    balanced = synthetic_counts(full, real, total, balance=True)
    assert sum(balanced) == total
    rarest = min(range(len(full)), key=lambda c: (full[c], c))
    assert balanced[rarest] >= default[rarest] - 1  # up to rounding
    topped = [r + s for r, s in zip(real, balanced) if s > 0]
    if topped:
        assert max(topped) - min(topped) <= 1  # water-filling: one common level
        assert all(r >= min(topped) - 1 for r, s in zip(real, balanced) if s == 0)


def test_the_thesis_numbers():
    full, real = [724, 49, 2566, 1781], [217, 15, 770, 534]  # 30 % stratified
    counts = synthetic_counts(full, real, synthetic_total(5120, sum(real), None))
    assert counts == [507, 34, 1796, 1247] and sum(real) + sum(counts) == 5120


def test_classes_without_a_real_source_get_nothing():
    assert synthetic_counts([10, 10], [5, 0], 10) == [10, 0]
    with pytest.raises(SynthmedError, match="no source image"):
        synthetic_counts([10, 10], [0, 0], 5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=40), st.lists(st.integers(0, 60), min_size=4, max_size=4),
       st.integers(1, 4), st.integers(0, 2**31))
def test_plan_spreads_counts_over_sources(labels, wanted, k, seed):
    labels = torch.tensor(labels)
    counts = [w if (labels == c).any() else 0 for c, w in enumerate(wanted)]
    plan = plan_synthetic(labels, counts, variations_per_image=k, seed=seed)
    assert len(set(plan.requests)) == len(plan.requests) == sum(counts)
    for c, s_c in enumerate(counts):
        rows = (labels == c).nonzero().flatten().tolist()
        mine = [(row, v) for row, v in plan.requests if labels[row] == c]
        assert len(mine) == s_c
        if rows:
            assert plan.pool[c] >= max(k, math.ceil(s_c / len(rows)))
            per_source = [sum(1 for row, _ in mine if row == r) for r in rows]
            assert max(per_source) - min(per_source) <= 1  # spread evenly
            assert all(v < plan.pool[c] for _, v in mine)
    assert plan == plan_synthetic(labels, counts, variations_per_image=k, seed=seed)


# --- the policy on toy data -------------------------------------------------------------------------
def toy_splits(n_train=40, n_test=12, size=16):
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 12 + [1] * 3 + [2] * 15 + [3] * 10)[:n_train]
    train = ImageSet(torch.randint(0, 256, (n_train, 1, size, size), generator=g, dtype=torch.uint8), labels)
    test = ImageSet(torch.randint(0, 256, (n_test, 1, size, size), generator=g, dtype=torch.uint8), torch.arange(n_test) % 4)
    return Splits(train, test, CLASSES, "toy")


class Recorder:
    def __init__(self):
        self.params, self.metrics, self.artifacts = {}, {}, {}

    def ctx(self, config, splits, pm=None, validation=None):
        def artifact(path, folder):
            self.artifacts[Path(path).name] = (folder, Path(path).read_bytes())

        return PolicyContext(config, splits, pm, log_metrics=self.metrics.update, log_params=self.params.update,
                             log_artifact=artifact, validation=validation)


def run(config, splits=None, pm=None):
    splits = splits or toy_splits()
    real, val = sample_real(splits, config)  # as a run does: the carve goes to the context
    rec = Recorder()
    mixed = SyntheticPolicy.from_config(config).training_set(real, rec.ctx(config, splits, pm, val))
    return mixed, real, rec


@pytest.fixture
def config(tmp_path):
    return Config(policy="synthetic", real_frac=0.3, val_frac=0.0, cache_dir=str(tmp_path / "cache"), quiet=True,
                  image_size=16)


def test_append_fills_up_to_the_full_split_with_provenance(config):
    mixed, real, rec = run(config)
    assert len(mixed) == 40 and mixed.class_counts(4) == [12, 3, 15, 10]
    synth = mixed.subset(mixed.synthetic.nonzero().flatten())
    assert torch.equal(mixed.images[: len(real)], real.images)  # real first, untouched
    by_index = {int(i): int(l) for i, l in zip(real.index, real.labels)}
    assert all(by_index[int(i)] == int(label) for i, label in zip(synth.index, synth.labels))  # source's label
    assert rec.params["synthetic_real_images"] == len(real) and rec.params["synthetic_images"] == len(synth)
    assert rec.params["synthetic_generator_provider"].startswith("synthmed ")
    assert rec.metrics["synthetic_cache_misses"] == len(synth) and rec.metrics["synthetic_paid_images"] == 0
    folder, raw = rec.artifacts["provenance.csv"]
    rows = list(csv.DictReader(raw.decode().splitlines()))
    assert folder == "synthetic" and len(rows) == len(synth)
    hashes = {source_hash(img): int(i) for img, i in zip(real.images, real.index)}
    for row in rows:
        assert hashes[row["source_sha256"]] == int(row["source_index"])
        assert int(mixed.index[int(row["train_row"])]) == int(row["source_index"])
    assert rec.artifacts["grid.png"][1][:8] == b"\x89PNG\r\n\x1a\n"


def test_second_identical_run_pays_nothing_and_shared_pools_serve_other_seeds(config):
    first, _, _ = run(config)
    second, _, rec = run(config)
    assert rec.metrics["synthetic_cache_misses"] == 0 and torch.equal(first.images, second.images)
    _, _, fresh = run(config.replace(seed=1))  # per-simulation (the default for a free generator): its own images
    assert fresh.metrics["synthetic_cache_hits"] == 0 and fresh.params["synthetic_generations"] == "per-simulation"
    shared = config.replace(generations="shared")
    run(shared)
    _, _, other_seed = run(shared.replace(seed=1))  # another sample, another draw: still reuses the pool
    assert other_seed.metrics["synthetic_cache_hits"] > 0 and other_seed.params["synthetic_generations"] == "shared"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.floats(0.05, 0.9), st.integers(0, 1000), st.booleans())
def test_sources_are_only_the_runs_real_subset_never_test_images(tmp_path, frac, seed, balance):
    splits = toy_splits()
    config = Config(policy="synthetic", real_frac=frac, seed=seed, balance=balance, quiet=True, image_size=16,
                    cache_dir=tempfile.mkdtemp(dir=tmp_path))  # a fresh cache per example
    mixed, real, _ = run(config, splits)
    allowed = {source_hash(img) for img in real.images}
    forbidden = {source_hash(img) for img in splits.test.images} | {
        source_hash(img) for i, img in enumerate(splits.train.images) if i not in set(real.index.tolist())}
    cache = GenerationCache(config.cache_dir)
    used = {json.loads(Image.open(p).text["synthmed"])["source"] for p in (cache.root / "elastic").glob("*/*.png")}
    assert used <= allowed and not used & forbidden
    assert set(mixed.index[mixed.synthetic].tolist()) <= set(real.index.tolist())


def test_balance_gives_the_rare_class_more(config):
    plain, _, _ = run(config)
    balanced, _, _ = run(config.replace(balance=True))
    assert len(balanced) == len(plain)
    assert balanced.class_counts(4)[1] > plain.class_counts(4)[1]


def test_replace_swaps_real_images_for_their_own_variations(config):
    mixed, real, _ = run(config.replace(mix="replace"))
    policy = SyntheticPolicy(config.replace(mix="replace", replace_p=1.0))
    epoch = policy.epoch_set(mixed, 0, torch.Generator().manual_seed(0))
    assert len(epoch) == len(real) and bool(epoch.synthetic.all())  # every real image has a variation
    assert torch.equal(epoch.index, real.index) and torch.equal(epoch.labels, real.labels)
    none = replace_epoch(mixed, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(none.images, real.images)
    half = [replace_epoch(mixed, 0.5, torch.Generator().manual_seed(s)).synthetic.float().mean() for s in range(20)]
    assert 0.3 < float(torch.stack(half).mean()) < 0.7
    assert SyntheticPolicy(config).epoch_set(mixed, 0, torch.Generator()) is mixed  # append: unchanged


def test_base_policy_is_applied_and_synthetic_is_refused(config):
    images = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    assert torch.equal(SyntheticPolicy(config).augment(images, torch.Generator()), images)
    flipped = SyntheticPolicy.from_config(config.replace(base_policy="basic")).augment(images, torch.Generator().manual_seed(0))
    assert flipped.shape == images.shape and flipped.dtype == torch.uint8
    with pytest.raises(SynthmedError, match="base_policy='synthetic'"):
        SyntheticPolicy.from_config(config.replace(base_policy="synthetic"))


# --- plugins: an external generator, refusals, a custom pm ------------------------------------------
class Remote(Generator):
    name = "remote-test"
    sends_data_off_machine = True

    def __init__(self):
        self.inner = ElasticGenerator()

    @property
    def cost_per_image_usd(self):
        return 0.5

    def generate(self, images, labels, *, variation, seed):
        return self.inner.generate(images, labels, variation=variation, seed=seed)

    def iter_generate(self, images, labels, *, variations, seeds):
        for i, item in super().iter_generate(images, labels, variations=variations, seeds=seeds):
            yield i, None if i == 0 else item  # the service refuses the first item of each batch


class TinyDataset(Dataset):
    name = "tiny-test"

    def load(self, config):
        return toy_splits()


class FakePlugin:
    @hookimpl
    def register_generators(self):
        return [Remote]

    @hookimpl
    def register_datasets(self):
        return [TinyDataset]


@pytest.fixture
def fake_pm(pm, monkeypatch):
    pm.register(FakePlugin(), name="fake-plugin")
    monkeypatch.setattr(synthmed.plugins, "_default_pm", pm)
    yield pm


def test_external_generators_need_the_opt_in(config, fake_pm):
    remote = config.replace(generator="remote-test")
    with pytest.raises(SynthmedError, match="--allow-external.*allow_external=true"):
        run(remote, pm=fake_pm)
    mixed, real, rec = run(remote.replace(allow_external=True), pm=fake_pm)
    assert rec.params["synthetic_sends_data_off_machine"] is True
    refused = int(rec.metrics["synthetic_refused"])
    assert refused > 0 and len(mixed) == 40 - refused  # fewer images, no substitutes
    assert rec.metrics["synthetic_cost_usd"] == pytest.approx(0.5 * (40 - len(real) - refused))


def test_openai_is_refused_before_any_data_is_loaded(config):
    from synthmed.plugins import get_plugin_manager, registry

    if "openai" not in registry("generators", get_plugin_manager()):
        pytest.skip("synthmed-openai is not installed")
    with pytest.raises(SynthmedError, match="allow-external"):
        SyntheticPolicy.from_config(config.replace(generator="openai"))


# --- synthmed generate --------------------------------------------------------------------------------
def test_generate_prefills_exactly_what_the_run_uses(config, fake_pm):
    args = ["--dataset", "tiny-test", "--real-frac", "0.3", "--image-size", "16", "--cache-dir", config.cache_dir, "-q"]
    runner = CliRunner()
    estimate = runner.invoke(synthmed_cli, ["generate", *args, "--estimate"])
    assert estimate.exit_code == 0, estimate.output
    assert "0 cached, 27 to generate" in estimate.output and "free (local)" in estimate.output
    assert GenerationCache(config.cache_dir).stats() == {}  # --estimate makes nothing
    done = runner.invoke(synthmed_cli, ["generate", *args])
    assert done.exit_code == 0 and "generated 27" in done.output
    _, _, rec = run(config.replace(dataset="tiny-test", val_frac=Config().val_frac))  # the CLI's default carve
    assert rec.metrics["synthetic_cache_misses"] == 0 and rec.metrics["synthetic_cache_hits"] == 27


def test_generate_asks_above_max_cost_and_refuses_external_without_opt_in(config, fake_pm):
    args = ["--dataset", "tiny-test", "--real-frac", "0.3", "--image-size", "16", "--cache-dir", config.cache_dir,
            "--generator", "remote-test", "-q"]
    runner = CliRunner()
    refused = runner.invoke(synthmed_cli, ["generate", *args])
    assert refused.exit_code == 1 and "--allow-external" in refused.output and "Traceback" not in refused.output
    estimate = runner.invoke(synthmed_cli, ["generate", *args, "--estimate"])
    assert "estimated cost $13.50" in estimate.output and "needs --allow-external" in estimate.output
    declined = runner.invoke(synthmed_cli, ["generate", *args, "--allow-external"], input="n\n")
    assert declined.exit_code == 1 and "above --max-cost" in declined.output
    assert GenerationCache(config.cache_dir).stats() == {}
    done = runner.invoke(synthmed_cli, ["generate", *args, "--allow-external", "--max-cost", "20"])
    assert done.exit_code == 0 and "refused" in done.output


# --- the real data --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.data
def test_real_data_thesis_mix_and_a_free_second_run(real_data_dir, tmp_path):
    from synthmed.plugins import get_plugin_manager, registry

    config = Config(policy="synthetic", real_frac=0.3, generator="elastic", image_size=64, data_dir=str(real_data_dir),
                    cache_dir=str(tmp_path / "cache"), quiet=True, val_frac=0.0)  # the thesis's mix: no carve
    pm = get_plugin_manager()
    splits = registry("datasets", pm).get(config.dataset)().load(config)
    mixed, real, rec = run(config, splits, pm)
    assert len(mixed) == 5120 and mixed.class_counts(4) == [724, 49, 2566, 1781]
    assert rec.metrics["synthetic_images"] == 5120 - len(real)
    _, _, again = run(config, splits, pm)
    assert again.metrics["synthetic_cache_misses"] == 0 and again.metrics["synthetic_paid_images"] == 0
    assert again.metrics["synthetic_cache_hits"] == 5120 - len(real)


def test_a_folder_pool_made_of_test_images_is_refused(config, tmp_path):
    """The folder generator replaying test scans (layout <class>/*.png) would leak the test set."""
    from PIL import Image

    splits = toy_splits()
    for label, name in enumerate(CLASSES):
        (tmp_path / "pool" / name).mkdir(parents=True)
        for row in (splits.test.labels == label).nonzero().flatten().tolist():
            Image.fromarray(splits.test.images[row, 0].numpy()).save(tmp_path / "pool" / name / f"{row}.png")
    leaky = config.replace(generator="folder", generator_options=f"path={tmp_path / 'pool'}")
    with pytest.raises(SynthmedError, match="identical to test images"):
        run(leaky, splits)
