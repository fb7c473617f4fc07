"""The ``mri`` policy: torchio's MRI augmentations, one seeded draw per image, each op switchable.

The contract every policy passes (shape, dtype, empty batches, determinism) is in test_policies.py; these
tests add what the ``mri`` policy promises on top. Images are 32 px: torchio costs milliseconds per image.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from test_policies import brains, rng

from synthmed.config import Config
from synthmed.errors import SynthmedError
from synthmed.plugins import registry
from synthmed.policies.mri import MriAugmentation

OPS = ("affine", "elastic", "bias_field", "gamma", "motion", "ghosting", "noise")
OFF = {f"{op}_p": 0 for op in OPS}


def only(op: str, **options) -> MriAugmentation:
    """The policy with one op always on and the others off."""
    return MriAugmentation(**{**OFF, f"{op}_p": 1, **options})


def seeds_of(n: int, seed: int) -> list[int]:
    """The per-image seeds ``augment`` draws from ``rng(seed)`` for a batch of ``n``."""
    return torch.randint(2**63 - 1, (n,), generator=rng(seed)).tolist()


def test_mri_is_registered_and_built_from_the_config(pm):
    policy = registry("policies", pm).get("mri").from_config(Config(policy="mri", policy_options="noise_std=0.05"))
    assert isinstance(policy, MriAugmentation) and policy.options["noise_std"] == 0.05


def test_the_same_rng_state_gives_the_same_images_whatever_the_global_rngs():
    images, policy = brains(4, 32), MriAugmentation()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    first = policy.augment(images, rng(5))
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    assert torch.equal(first, policy.augment(images, rng(5)))
    assert not torch.equal(first, policy.augment(images, rng(6)))


def test_the_global_rngs_are_untouched():
    torch_state, numpy_state, python_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    only("noise").augment(brains(2, 32), rng(0))  # torchio's noise seeds the global RNG itself
    MriAugmentation().augment(brains(4, 32), rng(0))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state))
    assert random.getstate() == python_state


def test_each_image_depends_on_its_seed_not_on_its_batch_mates():
    policy, images = MriAugmentation(), brains(4, 32)
    out = policy.augment(images, rng(3))
    assert all(torch.equal(o, policy.augment_one(image, seed)) for o, image, seed in
               zip(out, images, seeds_of(4, 3)))
    other_mates = torch.cat([images[:1], brains(3, 32, seed=9)])
    assert torch.equal(policy.augment(other_mates, rng(3))[0], out[0])


def test_each_image_gets_its_own_draw():
    images = brains(1, 32).expand(8, -1, -1, -1).contiguous()  # eight copies of one scan
    out = MriAugmentation().augment(images, rng(0))
    assert len({bytes(o.flatten().tolist()) for o in out}) > 4


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_shape_dtype_and_device_are_kept(device):
    images = brains(3, 24).to(device)
    out = MriAugmentation().augment(images, torch.Generator(device=device).manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8 and out.device == images.device


def test_all_ops_off_is_the_identity():
    policy = MriAugmentation(**OFF)
    images = brains(4, 32)
    assert policy.ops == [] and torch.equal(policy.augment(images, rng(0)), images)


@pytest.mark.parametrize("op", OPS)
def test_each_op_changes_the_images_and_can_be_switched_off(op):
    images = brains(4, 32)
    assert not torch.equal(only(op).augment(images, rng(0)), images)
    assert len(MriAugmentation(**{f"{op}_p": 0}).ops) == len(OPS) - 1


def test_the_defaults_are_mild_and_keep_the_background_black():
    images = brains(16, 32)
    out = MriAugmentation().augment(images, rng(0))
    assert (out.float() - images.float()).abs().mean() < 30  # the same scans, not different pictures
    # the corners, far from the brain
    corners = torch.cat([out[..., :6, :6], out[..., :6, -6:], out[..., -6:, :6], out[..., -6:, -6:]])
    assert corners.float().mean() < 3  # near black: ghosts, ringing and noise are faint


def test_motion_is_a_k_space_artifact_not_just_a_shift():
    """torchio splits k-space along the last axis, of size one for a slice (torchio #81): its RandomMotion only
    shifts it. The policy's motion spreads ringing over the background, which a small shift does not."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    radius = ((yy - 15.5) ** 2 + (xx - 15.5) ** 2).sqrt()
    disk = ((radius <= 6) * 200).to(torch.uint8).expand(4, 1, 32, 32)  # (4, 1, 32, 32): a bright disk
    far = radius > 10
    moved = only("motion").augment(disk, rng(0))
    shifted = only("affine").augment(disk, rng(0))
    assert all((m[0][far] > 0).any() for m in moved)
    assert not (shifted[..., far] > 0).any()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("motion_p", "1.5", "motion_p='1.5' is out of range"),
    ("noise_std", "loud", "noise_std='loud' is not a valid float"),
    ("affine_degrees", "-5", "affine_degrees='-5' is out of range"),
    ("elastic_displacement", "40", "elastic_displacement='40' is out of range"),
])
def test_bad_option_values_are_refused_naming_the_option(option, value, message):
    with pytest.raises(SynthmedError, match=f"policy 'mri': option {message}"):
        MriAugmentation(**{option: value})


def test_an_unknown_option_lists_the_accepted_ones(pm):
    with pytest.raises(SynthmedError, match="does not take option.*'ghost_p'.*accepted: affine_p"):
        registry("policies", pm).get("mri").from_config(Config(policy="mri", policy_options="ghost_p=1"))


def test_a_tiny_training_run_with_the_mri_policy(mlflow_uri, tiny_splits):
    import mlflow

    from synthmed.training import train

    config = Config(image_size=32, epochs=1, batch_size=16, gradcam=False, quiet=True, register="none", log_model=False,
                    policy="mri", real_frac=0.5, policy_options="motion_p=0.5,ghosting_p=0.5")
    result = train(config, splits=tiny_splits)
    params = mlflow.get_run(result.run_id).data.params
    assert params["policy"] == "mri" and "motion_p=0.5" in params["policy_options"]
    assert np.isfinite(result.metrics["test_cross_entropy"])
