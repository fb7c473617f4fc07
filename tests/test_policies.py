"""Augmentation policies: a contract every registered policy passes (synthmed.testing's ``check_policy``),
then the classic ones."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synthmed.config import Config
from synthmed.plugins import get_plugin_manager, registry
from synthmed.testing import POLICY_RULES, ContractCase, check_policy

POLICY_NAMES = registry("policies", get_plugin_manager()).names()  # installed third-party ones too
CLASSIC = ("none", "basic", "autoaugment", "randaugment", "trivialaugment")


def policy(pm, name: str):
    return registry("policies", pm).get(name).from_config(Config(policy=name))


def brains(n: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Brain-like toy scans: a noisy bright ellipse on a black background, ``(n, 1, S, S)`` uint8."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    inside = (xx / 0.7) ** 2 + (yy / 0.85) ** 2 <= 1  # (S, S)
    noise = torch.randint(60, 200, (n, 1, size, size), generator=g, dtype=torch.uint8)
    return noise * inside


def rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- contract: synthmed.testing's checks, for every registered policy --------------------------
@pytest.mark.parametrize("rule", POLICY_RULES)
@pytest.mark.parametrize("name", POLICY_NAMES)
def test_policy_contract(pm, name, rule):
    ContractCase(registry("policies", pm).get(name), rule)()


def test_classic_policies_are_registered(pm):
    assert set(CLASSIC) <= set(registry("policies", pm).names())


@pytest.mark.parametrize("name", [n for n in CLASSIC if n != "none"])
def test_random_policies_change_images(pm, name):
    images = brains()
    assert not torch.equal(policy(pm, name).augment(images, rng(0)), images)


@pytest.mark.parametrize("name", [n for n in CLASSIC if n != "none"])
def test_each_image_gets_its_own_draw(pm, name):
    """The contract's per-image-draws rule is checked on the random classic policies, not skipped as not applying."""
    report = check_policy(registry("policies", pm).get(name), rules=["per-image-draws"])
    assert report.checked == ("per-image-draws",)


# --- none and basic ----------------------------------------------------------------------------
def test_none_is_identity(pm):
    images = brains()
    assert torch.equal(policy(pm, "none").augment(images, rng(0)), images)


def test_basic_is_mild(pm):
    images = brains(16)
    out = policy(pm, "basic").augment(images, rng(0))
    before, after = images.float().mean(), out.float().mean()
    assert abs(after - before) / before < 0.1  # mean intensity roughly kept
    assert (out.float() - images.float()).abs().mean() < 60  # not a different picture


def test_basic_with_zero_ranges_is_identity():
    from synthmed.policies.classic import BasicAugmentation

    still = BasicAugmentation(flip_p=0, degrees=0, translate=0, scale=0, brightness=0, contrast=0)
    images = brains()
    assert torch.equal(still.augment(images, rng(0)), images)


def test_basic_flip_is_left_right_only():
    from synthmed.policies.classic import BasicAugmentation

    flip = BasicAugmentation(flip_p=1, degrees=0, translate=0, scale=0, brightness=0, contrast=0)
    images = brains()
    assert torch.equal(flip.augment(images, rng(0)), images.flip(-1))


def test_basic_shifts_in_black_not_wrapped_pixels():
    from synthmed.policies.classic import BasicAugmentation

    images = torch.full((4, 1, 32, 32), 200, dtype=torch.uint8)
    out = BasicAugmentation(flip_p=0, degrees=10, translate=0.05, scale=0, brightness=0, contrast=0).augment(
        images, rng(0)
    )
    assert (out[..., 0, 0] < 200).all()  # corners rotate out of the image and come in black


# --- torchvision policies ----------------------------------------------------------------------
def test_autoaugment_uses_the_imagenet_policy(pm):
    from torchvision.transforms import v2

    assert policy(pm, "autoaugment").transform.policy == v2.AutoAugmentPolicy.IMAGENET


# --- one call for many batches, one draw per image ----------------------------------------------
TORCHVISION = ("autoaugment", "randaugment", "trivialaugment")


def per_image_reference(transform, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """How synthmed applied torchvision's policies before they were batched: image by image, under
    the global RNG seeded from one draw of the generator (torchvision's own forward, untouched)."""
    if images.shape[0] == 0:
        return images
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([transform(image) for image in images])


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(TORCHVISION), seed=st.integers(0, 2**32 - 1), n=st.integers(0, 12),
       size=st.integers(8, 40), content=st.integers(0, 2**16))
def test_torchvision_policies_give_torchvisions_own_images_image_by_image(name, seed, n, size, content):
    p = policy(get_plugin_manager(), name)
    g = torch.Generator().manual_seed(content)
    images = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    batched = p.augment(images, rng(seed))
    assert torch.equal(batched, per_image_reference(p.transform, images, rng(seed)))


@pytest.mark.parametrize("name", TORCHVISION)
def test_the_batched_torchvision_policies_use_their_whole_op_space(pm, name):
    """Not a vacuous equality: over many images the draws reach most of the ops, and change most images."""
    p = policy(pm, name)
    g = torch.Generator().manual_seed(3)
    ops = {op for _ in range(400) for op, _ in p.draw(g, 32, 32)}
    assert len(ops) >= 9, ops
    images = brains(64, 32)
    changed = (p.augment(images, rng(0)) != images).flatten(1).any(1)
    assert changed.float().mean() > 0.5


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(POLICY_NAMES), seeds=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4),
       sizes=st.lists(st.integers(0, 6), min_size=4, max_size=4))
def test_augment_many_equals_augment_on_each_batch(name, seeds, sizes):
    """The contract of ``augment_many`` (k simulations' batches at once), for every registered policy."""
    p = policy(get_plugin_manager(), name)
    batches = [brains(s, 32, seed=i) for i, s in zip(range(len(seeds)), sizes)]
    together = p.augment_many(batches, [rng(s) for s in seeds])
    one_by_one = [p.augment(b, rng(s)) for b, s in zip(batches, seeds)]
    assert len(together) == len(batches)
    assert all(torch.equal(a, b) for a, b in zip(together, one_by_one))
