"""``check_policy``: the augmentation-policy contract, on tiny scans on the CPU."""

from __future__ import annotations

from typing import Any, Iterable

import torch

from synthmed.config import Config, format_options
from synthmed.policies.base import AugmentationPolicy
from synthmed.testing._contract import ContractReport, NotChecked, expect, plugin_name, rng, run_rules, scans, select

__all__ = ["POLICY_RULES", "check_policy"]

SIZES = (32, 64)
MANY = ((3, 0, 2, 1), (0, 1, 2, 3))  # augment_many's batch sizes (an empty one among them) and their seeds


def _changes_images(policy: AugmentationPolicy) -> bool:
    """Whether the policy changes four scans under any of four seeds (else it is the identity here)."""
    images, _ = scans(4)
    return any(not torch.equal(policy.augment(images, rng(seed)), images) for seed in range(4))


# --- the rules, in the order they are checked ------------------------------------------------------
def shape_and_dtype(policy: AugmentationPolicy) -> None:
    """``augment()`` returns a uint8 batch of the shape it was given."""
    for size in SIZES:
        images, _ = scans(4, size)  # (4, 1, S, S) uint8
        out = policy.augment(images, rng(0))
        expect(isinstance(out, torch.Tensor), f"augment() returned {type(out).__name__}, not a tensor")
        expect(out.shape == images.shape, f"augment() of a {tuple(images.shape)} batch returned shape {tuple(out.shape)}")
        expect(out.dtype == torch.uint8, f"augment() of a uint8 batch returned dtype {out.dtype}, not torch.uint8")


def depends_only_on_the_rng(policy: AugmentationPolicy) -> None:
    """``augment()`` draws from its ``rng`` only: alike seeds give alike images, torch's global RNG is untouched, and
    a policy that changes images changes them otherwise for another seed."""
    images, _ = scans(4)
    global_state = torch.get_rng_state()
    first, again = policy.augment(images, rng(1)), policy.augment(images, rng(1))
    expect(torch.equal(first, again), "two calls with generators seeded alike gave different images")
    expect(torch.equal(torch.get_rng_state(), global_state),
           "augment() changed torch's global RNG state: draw from the rng argument only")
    if not torch.equal(first, images):
        expect(not torch.equal(first, policy.augment(images, rng(2))),
               "it changes the images but the same way for another rng seed: its draws ignore the rng")


def empty_batch(policy: AugmentationPolicy) -> None:
    """``augment()`` takes an empty batch and returns one."""
    empty = torch.zeros(0, 1, 32, 32, dtype=torch.uint8)
    out = policy.augment(empty, rng(0))
    expect(isinstance(out, torch.Tensor) and out.shape == empty.shape and out.dtype == torch.uint8,
           f"augment() of an empty (0, 1, 32, 32) uint8 batch returned {tuple(getattr(out, 'shape', ()))} "
           f"{getattr(out, 'dtype', type(out).__name__)}")


def per_image_draws(policy: AugmentationPolicy) -> None:
    """A policy that changes images draws for each image: eight copies of one scan do not all come out alike."""
    if not _changes_images(policy):
        raise NotChecked("it leaves the scans unchanged (the identity here): nothing is drawn")
    copies = scans(1)[0].expand(8, -1, -1, -1).contiguous()  # (8, 1, 32, 32): one scan eight times
    out = policy.augment(copies, rng(0))
    expect(len({bytes(o.flatten().tolist()) for o in out}) > 1,
           "eight copies of one scan came out identical: draw once per image, not once per batch")


def augment_many_equals_augment(policy: AugmentationPolicy) -> None:
    """``augment_many()`` gives what ``augment()`` gives on each batch with its own rng."""
    sizes, seeds = MANY
    batches = [scans(n, seed=i)[0] for i, n in enumerate(sizes)]
    together = policy.augment_many(batches, [rng(s) for s in seeds])
    expect(len(together) == len(batches), f"augment_many() of {len(batches)} batches returned {len(together)}")
    for i, (images, seed) in enumerate(zip(batches, seeds)):
        alone = policy.augment(images, rng(seed))
        expect(torch.equal(together[i], alone),
               f"batch {i} ({len(images)} images, seed {seed}) differs from augment() of that batch alone")


#: The augmentation-policy contract: rule name → check, in order.
POLICY_RULES = {
    "shape-and-dtype": shape_and_dtype,
    "depends-only-on-the-rng": depends_only_on_the_rng,
    "empty-batch": empty_batch,
    "per-image-draws": per_image_draws,
    "augment-many-equals-augment": augment_many_equals_augment,
}


def check_policy(cls: type[AugmentationPolicy], /, *, rules: Iterable[str] | None = None,
                 **options: Any) -> ContractReport:
    """Check an augmentation-policy class against synthmed's policy contract (:data:`POLICY_RULES`).

    Builds the policy the way a run does — ``cls.from_config(config)``, with ``options`` as the
    config's ``policy_options`` (so they arrive as strings) — then checks each rule on tiny scans on
    the CPU, in seconds.

    Args:
        cls: the :class:`~synthmed.policies.base.AugmentationPolicy` subclass.
        rules: check only these rules (names in :data:`POLICY_RULES`); all by default.
        **options: the policy's options (``--policy-options``).

    Returns:
        What was checked, and which rules were not checked and why.

    Raises:
        ContractError: a rule is broken; the message names the policy and the rule.
    """
    __tracebackhide__ = True  # under pytest, a failure points at the caller's line
    if not (isinstance(cls, type) and issubclass(cls, AugmentationPolicy)):
        raise TypeError(f"check_policy takes a synthmed.policies.base.AugmentationPolicy subclass, got {cls!r}")
    selected = select(POLICY_RULES, rules, "policy")
    name = plugin_name(cls)
    policy = cls.from_config(Config(policy=name, policy_options=format_options(options)))
    return run_rules("policy", name, selected, policy)
