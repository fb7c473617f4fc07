"""The controls a methods reviewer asks for: matched optimizer steps, the oversample control,
fresh generations per simulation, a sweep's runtime in its identity."""

from __future__ import annotations

import math

import mlflow
import pytest

from synthmed.config import Config
from synthmed.errors import SynthmedError
from synthmed.generators.cache import GenerationCache, generation_salt, plan_keys
from synthmed.policies.base import PolicyContext
from synthmed.training import sample_real, train

FAST = dict(image_size=32, epochs=2, batch_size=8, gradcam=False, quiet=True, register="none", log_model=False,
            generator="elastic")


# --- budget=steps --------------------------------------------------------------------------------------
@pytest.mark.parametrize("frac", [0.25, 0.5])
def test_steps_budget_gives_none_and_synthetic_the_same_optimizer_steps(mlflow_uri, tiny_splits, tmp_path, frac):
    """Counted, not timed: both take epochs x ceil(N_full / batch) steps however large their sets."""
    expected = 2 * math.ceil(len(tiny_splits.train) / 8)
    steps = {}
    for policy in ("none", "synthetic", "oversample"):
        cfg = Config(**FAST, policy=policy, real_frac=frac, budget="steps", cache_dir=str(tmp_path / "cache"))
        run = mlflow.get_run(train(cfg, splits=tiny_splits).run_id)
        steps[policy] = int(run.data.params["optimizer_steps"])
        assert run.data.params["budget"] == "steps"
    assert steps == {"none": expected, "synthetic": expected, "oversample": expected}


def test_epochs_budget_keeps_its_meaning(mlflow_uri, tiny_splits, tmp_path):
    """budget=epochs: `epochs` passes over the run's own set, so synthetic takes more steps than none."""
    steps = {}
    for policy in ("none", "synthetic"):
        cfg = Config(**FAST, policy=policy, real_frac=0.25, cache_dir=str(tmp_path / "cache"))
        steps[policy] = int(mlflow.get_run(train(cfg, splits=tiny_splits).run_id).data.params["optimizer_steps"])
    assert steps["none"] == 2 * math.ceil(16 / 8) and steps["synthetic"] == 2 * math.ceil(64 / 8)


# --- oversample ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("frac,balance", [(0.25, False), (0.5, False), (0.25, True)])
def test_oversample_matches_the_synthetic_set_size_and_classes_with_real_images_only(tiny_splits, tmp_path, pm,
                                                                                      frac, balance):
    from synthmed.plugins import registry

    config = Config(**FAST, real_frac=frac, balance=balance, cache_dir=str(tmp_path / "cache"))
    real, _ = sample_real(tiny_splits, config)
    made = {}
    for name in ("synthetic", "oversample"):
        cfg = config.replace(policy=name)
        policy = registry("policies", pm).get(name).from_config(cfg, pm)
        made[name] = policy.training_set(real, PolicyContext(cfg, tiny_splits, pm))
    synthetic, oversample = made["synthetic"], made["oversample"]
    assert len(oversample) == len(synthetic)
    assert oversample.class_counts(4) == synthetic.class_counts(4)
    assert not bool(oversample.synthetic.any())  # copies are real images, flagged as such
    sample = {bytes(img.numpy()) for img in real.images}
    assert all(bytes(img.numpy()) in sample for img in oversample.images)  # only images of the sample
    assert set(oversample.index.tolist()) <= set(real.index.tolist())


def test_oversample_takes_no_policy_options(tiny_splits, pm):
    from synthmed.plugins import registry

    with pytest.raises(SynthmedError, match="does not take option.*accepted: none"):
        registry("policies", pm).get("oversample").from_config(Config(policy="oversample", policy_options="k=2"), pm)


# --- generations ----------------------------------------------------------------------------------------
def _keys(config: Config, tiny_splits, pm) -> list[str]:
    from synthmed.generators.build import build_generator
    from synthmed.policies.synthetic import plan_for

    generator = build_generator(config, pm, tiny_splits.classes)
    real, _ = sample_real(tiny_splits, config)
    plan = plan_for(real, tiny_splits.train, 4, config)
    return plan_keys(generator, real.images, plan.requests, generation_salt(config, generator))[1]


def test_per_simulation_generations_differ_between_seeds_and_are_shared_within_one(tiny_splits, pm, tmp_path):
    base = Config(**FAST, policy="synthetic", real_frac=1.0, synth_frac=1.0, cache_dir=str(tmp_path / "c"), val_frac=0.0)
    # real_frac=1, synth_frac=1, no carve: both seeds use variation 0 of every image, so only the generations can differ
    a, b = _keys(base.replace(seed=1), tiny_splits, pm), _keys(base.replace(seed=2), tiny_splits, pm)
    assert set(a).isdisjoint(b)
    other_model = _keys(base.replace(seed=1, model="vit", base_policy="basic"), tiny_splits, pm)
    assert other_model == a  # every policy and model of one simulation reads the same images
    shared = base.replace(generations="shared")
    assert _keys(shared.replace(seed=1), tiny_splits, pm) == _keys(shared.replace(seed=2), tiny_splits, pm)


def test_per_simulation_images_really_differ_and_are_logged(mlflow_uri, tiny_splits, tmp_path):
    images = {}
    for seed in (1, 2):
        cfg = Config(**FAST, policy="synthetic", real_frac=1.0, synth_frac=0.25, seed=seed,
                     cache_dir=str(tmp_path / "cache"))
        run = mlflow.get_run(train(cfg, splits=tiny_splits).run_id)
        assert run.data.params["synthetic_generations"] == "per-simulation"
        images[seed] = GenerationCache(tmp_path / "cache").stats()["elastic"]["entries"]
    assert images[2] == 2 * images[1]  # the second seed made its own 16, none shared


def test_auto_generations_are_shared_for_paid_generators():
    from synthmed.generators.base import Generator
    from synthmed.generators.cache import generations_mode

    class Paid(Generator):
        name = "paid-test"

        @property
        def cost_per_image_usd(self) -> float:
            return 0.01

        def generate(self, images, labels, *, variation, seed):
            return images

    class Free(Paid):
        @property
        def cost_per_image_usd(self) -> None:
            return None

    assert generations_mode(Config(), Paid()) == "shared"
    assert generations_mode(Config(), Free()) == "per-simulation"
    assert generations_mode(Config(generations="per-simulation"), Paid()) == "per-simulation"


# --- the sweep's runtime ----------------------------------------------------------------------------------
def test_resuming_a_sweep_at_another_precision_is_refused(mlflow_uri, tiny_splits):
    from synthmed.sweep import sweep

    grid = dict(policies="none", real_fracs="1", simulations=1, image_size=32, epochs=1, batch_size=16, quiet=True,
                splits=tiny_splits, device="cpu")
    first = sweep(Config(precision="fp32"), **grid)
    parent = mlflow.get_run(first.parent_run_id)
    assert parent.data.tags["synthmed.precision"] == "fp32" and parent.data.tags["synthmed.device"] == "cpu"
    with pytest.raises(SynthmedError, match=r"cpu/fp32.*cpu/bf16.*--precision fp32.*--experiment"):
        sweep(Config(precision="bf16"), **grid)
    again = sweep(Config(precision="fp32"), **grid)  # the same runtime resumes it: nothing to run
    assert again.parent_run_id == first.parent_run_id and again.ran == 0

