"""synthmed.testing, the conformance kit for plugin authors: it passes good plugins and names the rule a broken one
breaks. (test_generators.py, test_policies.py and test_models.py run it on every registered class.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from synthmed.generators.base import Generator
from synthmed.models.base import ModelFactory
from synthmed.policies.base import AugmentationPolicy
from synthmed.testing import (
    GENERATOR_RULES,
    MODEL_RULES,
    POLICY_RULES,
    ContractError,
    check_generator,
    check_model_factory,
    check_policy,
    contract_cases,
)

DOCS = Path(__file__).resolve().parents[1] / "docs"


def broken(rule: str) -> pytest.RaisesExc:
    """``pytest.raises`` of a ContractError that names ``rule`` (and a test asserts the message says so)."""
    return pytest.raises(ContractError, match=rf"breaks rule '{rule}': ")


# --- generators -------------------------------------------------------------------------------------
class Shift(Generator):
    """A good deterministic generator: each pixel moved by (variation + seed), per image."""

    name = "shift"
    deterministic = True

    def generate(self, images, labels, *, variation, seed):
        return ((images.int() + variation + seed) % 256).to(torch.uint8)


class WrongShape(Shift):
    name = "wrong-shape"

    def generate(self, images, labels, *, variation, seed):
        return super().generate(images, labels, variation=variation, seed=seed)[..., :16, :16]


class WrongDtype(Shift):
    name = "wrong-dtype"

    def generate(self, images, labels, *, variation, seed):
        return super().generate(images, labels, variation=variation, seed=seed).float()


class BatchDependent(Shift):
    """Declared deterministic, but each image is moved by the size of its batch."""

    name = "batchy"

    def generate(self, images, labels, *, variation, seed):
        return ((images.int() + len(images)) % 256).to(torch.uint8)


class DropsAnItem(Shift):
    name = "drops-an-item"

    def iter_generate(self, images, labels, *, variations, seeds):
        yield from list(super().iter_generate(images, labels, variations=variations, seeds=seeds))[:-1]


class NotReproducible(Shift):
    """Declared deterministic, but draws from torch's global RNG."""

    name = "global-noise"

    def generate(self, images, labels, *, variation, seed):
        return torch.randint(0, 256, images.shape, dtype=torch.uint8)


class LeaksItsKey(Shift):
    name = "leaky"

    def __init__(self, api_key=None):
        self.api_key = api_key

    def output_params(self):
        return {"auth": self.api_key}


class NegativeCost(Shift):
    name = "negative-cost"

    @property
    def cost_per_image_usd(self):
        return -0.01


@pytest.mark.parametrize("cls, rule, says", [
    (WrongShape, "shape-and-dtype", r"on \(3, 1, 32, 32\) sources returned shape \(3, 1, 16, 16\)"),
    (WrongDtype, "shape-and-dtype", "returned dtype torch.float32, not torch.uint8"),
    (BatchDependent, "batch-independent",
     "declared deterministic=True but item 0 differs when generated alone vs in a batch of 4"),
    (DropsAnItem, "iter-generate-every-item-once", r"asked for items 0-3, iter_generate\(\) yielded indices \[0, 1, 2\]"),
    (NotReproducible, "reproducible", r"two identical generate\(\) calls differ"),
    (NegativeCost, "declarations", "cost_per_image_usd must be None .* got -0.01"),
], ids=lambda v: v.name if isinstance(v, type) else None)
def test_check_generator_names_the_rule_a_broken_generator_breaks(cls, rule, says):
    with broken(rule) as caught:
        check_generator(cls)
    assert str(caught.value).startswith(f"generator {cls.name!r} breaks rule {rule!r}: ")
    assert caught.value.rule == rule and caught.value.name == cls.name
    assert caught.match(says)


def test_a_secret_option_must_not_reach_output_params():
    with broken("output-params"):
        check_generator(LeaksItsKey, api_key="sk-test-kit")
    check_generator(LeaksItsKey)  # no key given: nothing to leak


def test_a_good_generator_passes_every_rule_that_applies():
    report = check_generator(Shift)
    assert report.checked == tuple(r for r in GENERATOR_RULES if r != "fit")
    assert report.not_checked == {"fit": "it does not learn"}


def test_batch_dependence_is_allowed_when_not_declared_deterministic():
    class Batchy(BatchDependent):
        deterministic = False

    report = check_generator(Batchy)
    assert set(report.not_checked) == {"fit", "reproducible", "batch-independent"}


def test_a_learning_generator_is_fitted_on_tiny_scans_first():
    class Learns(Shift):
        name = "learns"
        learns = True
        seen = None

        def fit(self, images, labels, *, seed, progress, log):
            type(self).seen = tuple(images.shape)
            return {"steps": 1}

    report = check_generator(Learns, rules=["fit", "shape-and-dtype"])
    assert report.checked == ("fit", "shape-and-dtype")
    assert Learns.seen == (8, 1, 32, 32)


def test_a_fit_that_fails_breaks_the_fit_rule_with_its_cause():
    class FailsToFit(Shift):
        name = "fails-to-fit"
        learns = True

        def fit(self, images, labels, *, seed, progress, log):
            raise RuntimeError("diverged")

    with broken("fit") as caught:
        check_generator(FailsToFit, rules=["declarations"])  # nothing is checked on an unfitted generator
    assert "raised RuntimeError: diverged" in str(caught.value)
    assert isinstance(caught.value.__cause__, RuntimeError)


class Remote(Shift):
    """Sends its sources away: here, to no server at all."""

    name = "remote"
    sends_data_off_machine = True

    def generate(self, images, labels, *, variation, seed):
        raise ConnectionError("no service in this test")


def test_an_off_machine_generator_is_checked_offline_only_for_what_needs_no_service():
    report = check_generator(Remote)
    assert report.checked == ("declarations", "output-params")
    assert set(report.not_checked) == set(GENERATOR_RULES) - {"declarations", "output-params"}
    assert all("allow_external=True" in why for why in report.not_checked.values())
    with broken("shape-and-dtype") as caught:  # allowed out: what its generate() raises breaks a rule
        check_generator(Remote, allow_external=True)
    assert isinstance(caught.value.__cause__, ConnectionError)


def test_rules_and_classes_are_checked_before_anything_runs():
    with pytest.raises(ValueError, match=r"no generator rule 'batch-independant' — the rules are: fit, declarations"):
        check_generator(Shift, rules=["batch-independant"])
    with pytest.raises(TypeError, match="Generator subclass"):
        check_generator(Shift())
    with pytest.raises(TypeError, match="AugmentationPolicy subclass"):
        check_policy(Shift)


# --- policies ---------------------------------------------------------------------------------------
class Flip(AugmentationPolicy):
    """A good policy: each image flipped left-right with probability 1/2, its own draw."""

    name = "flip"

    def augment(self, images, rng):
        flip = torch.rand(len(images), generator=rng) < 0.5  # (B,)
        return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


class GlobalNoise(Flip):
    name = "global-noise"

    def augment(self, images, rng):
        return images ^ torch.randint(0, 2, images.shape, dtype=torch.uint8)  # torch's global RNG


class OneDrawPerBatch(Flip):
    name = "one-draw"

    def augment(self, images, rng):
        return images.roll(int(torch.randint(1, 8, (1,), generator=rng)), -1)  # the same shift for every image


class ManyIgnoresItsRngs(Flip):
    name = "many-ignores-rngs"

    def augment_many(self, batches, rngs):
        return [self.augment(images, rngs[0]) for images in batches]


@pytest.mark.parametrize("cls, rule, says", [
    (GlobalNoise, "depends-only-on-the-rng", "two calls with generators seeded alike gave different images"),
    (OneDrawPerBatch, "per-image-draws", "eight copies of one scan came out identical"),
    (ManyIgnoresItsRngs, "augment-many-equals-augment",
     r"batch \d \(\d images, seed \d\) differs from augment\(\) of that batch alone"),
], ids=lambda v: v.name if isinstance(v, type) else None)
def test_check_policy_names_the_rule_a_broken_policy_breaks(cls, rule, says):
    with broken(rule) as caught:
        check_policy(cls)
    assert str(caught.value).startswith(f"policy {cls.name!r} breaks rule {rule!r}: ")
    assert caught.match(says)


def test_a_good_policy_passes_and_gets_its_options_as_a_run_gives_them():
    assert check_policy(Flip).checked == tuple(POLICY_RULES)

    class Strength(Flip):
        name = "strength"

        def __init__(self, p=0.5):
            assert isinstance(p, str)  # --policy-options give strings
            self.p = float(p)

    assert check_policy(Strength, p=0.25).checked == tuple(POLICY_RULES)


# --- model factories ----------------------------------------------------------------------------------
class TinyNet(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, classes)

    def forward(self, x):  # (B, 1, H, W) -> (B, classes)
        return self.head(self.conv(x).relu().mean((2, 3)))


class Tiny(ModelFactory):
    name = "tiny"

    def create(self, num_classes, image_size, config):
        return TinyNet(num_classes)

    def gradcam_target_layers(self, model):
        return [model.conv]


class LooksOutside(Tiny):
    name = "looks-outside"

    def gradcam_target_layers(self, model):
        return [nn.Conv2d(1, 4, 3)]  # a layer of no model


class TimesNan(nn.Module):
    def forward(self, x):
        return x * float("nan")


class NanLogits(Tiny):
    name = "nan-logits"

    def create(self, num_classes, image_size, config):
        return nn.Sequential(TinyNet(num_classes), TimesNan())


@pytest.mark.parametrize("cls, rule, says", [
    (LooksOutside, "gradcam-target-layers", r"a layer gradcam_target_layers\(\) returned is not in the model"),
    (NanLogits, "finite-logits-and-gradients", "at image_size=32 the logits are not all finite"),
], ids=lambda v: v.name if isinstance(v, type) else None)
def test_check_model_factory_names_the_rule_a_broken_factory_breaks(cls, rule, says):
    with broken(rule) as caught:
        check_model_factory(cls)
    assert str(caught.value).startswith(f"model {cls.name!r} breaks rule {rule!r}: ")
    assert caught.match(says)


def test_a_good_model_factory_passes_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    assert check_model_factory(Tiny, dropout=0.1).checked == tuple(MODEL_RULES)
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="sets image_size itself"):
        check_model_factory(Tiny, image_size=16)


def test_a_factory_without_gradcam_layers_breaks_that_rule():
    class NoGradcam(ModelFactory):
        name = "no-gradcam"

        def create(self, num_classes, image_size, config):
            return TinyNet(num_classes)

    with broken("gradcam-target-layers") as caught:
        check_model_factory(NoGradcam)
    assert "raised NotImplementedError: model 'no-gradcam' declares no Grad-CAM target layer" in str(caught.value)


# --- the pytest helper ----------------------------------------------------------------------------------
def test_contract_cases_give_one_case_per_rule_that_skips_what_does_not_apply():
    cases = contract_cases(Shift)
    assert [c.id for c in cases] == [f"shift-{rule}" for rule in GENERATOR_RULES]
    for param in cases:
        case = param.values[0]
        if case.rule == "fit":
            with pytest.raises(pytest.skip.Exception, match="generator 'shift': rule 'fit' not checked — it does not learn"):
                case()
        else:
            assert case().checked == (case.rule,)
    failing = {c.values[0].rule for c in contract_cases(BatchDependent) if _fails(c.values[0])}
    assert failing == {"batch-independent"}
    assert [c.id for c in contract_cases(Tiny)] == [f"tiny-{rule}" for rule in MODEL_RULES]
    assert [c.id for c in contract_cases(Flip)] == [f"flip-{rule}" for rule in POLICY_RULES]


def _fails(case) -> bool:
    try:
        case()
    except ContractError:
        return True
    except pytest.skip.Exception:
        pass
    return False


def test_synthmed_testing_imports_without_pytest():
    code = "import sys, synthmed.testing; print(sorted(m for m in ('pytest', 'hypothesis') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_the_plugin_guide_names_every_rule():
    text = (DOCS / "plugins.md").read_text()
    missing = [rule for rules in (GENERATOR_RULES, POLICY_RULES, MODEL_RULES) for rule in rules if f"`{rule}`" not in text]
    assert not missing, f"docs/plugins.md does not name these contract rules: {missing}"
