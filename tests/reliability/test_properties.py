"""Property tests (hypothesis): the stratified sampler, the synthetic plan, the cache keys and the
config parser hold their promises for any input, not only the examples in the unit tests."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from synthmed import Config
from synthmed.data.sampling import split_validation, stratified_sample
from synthmed.errors import SynthmedError
from synthmed.generators.cache import cache_key, generation_seed
from synthmed.policies._mixing import plan_synthetic, synthetic_counts, synthetic_total

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
labels_st = st.lists(st.integers(0, 4), min_size=1, max_size=80).map(lambda xs: torch.tensor(xs, dtype=torch.long))
fracs = st.floats(min_value=1e-6, max_value=1.0, allow_nan=False)
seeds = st.integers(0, 2**31 - 1)


# --- the stratified sampler ------------------------------------------------------------------------
@SETTINGS
@given(labels=labels_st, frac=fracs, seed=seeds)
def test_sampler_counts_unique_subset_deterministic(labels, frac, seed):
    rows = stratified_sample(labels, frac, seed)
    assert rows.tolist() == sorted(set(rows.tolist())), "sorted, no duplicates"
    assert all(0 <= r < len(labels) for r in rows.tolist()), "a subset of the rows"
    for c in torch.unique(labels).tolist():
        n_c = int((labels == c).sum())
        k_c = int((labels[rows] == c).sum())
        expected = n_c if frac == 1 else min(n_c, max(1, math.floor(frac * n_c + 0.5)))
        assert k_c == expected, (c, n_c, frac)
    assert torch.equal(rows, stratified_sample(labels, frac, seed)), "same seed, same sample"


@SETTINGS
@given(labels=labels_st, small=fracs, large=fracs, seed=seeds)
def test_sampler_nests(labels, small, large, seed):
    small, large = sorted((small, large))
    assert set(stratified_sample(labels, small, seed).tolist()) <= set(stratified_sample(labels, large, seed).tolist())


@SETTINGS
@given(labels=labels_st, frac=st.one_of(st.floats(allow_nan=True).filter(lambda f: not 0 < f <= 1), st.just(float("nan"))))
def test_sampler_refuses_bad_fractions(labels, frac):
    with pytest.raises(SynthmedError, match="real_frac"):
        stratified_sample(labels, frac, 0)


@SETTINGS
@given(labels=labels_st, frac=st.floats(0.0, 0.99), seed=seeds)
def test_validation_split_partitions(labels, frac, seed):
    train, val = split_validation(labels, frac, seed)
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))


# --- the synthetic plan ----------------------------------------------------------------------------
@SETTINGS
@given(labels=labels_st, frac=fracs, seed=seeds, k=st.integers(1, 4), balance=st.booleans(),
       synth_frac=st.one_of(st.none(), st.floats(0.0, 3.0)))
def test_plan_counts_sum_and_sources_come_from_the_sample(labels, frac, seed, k, balance, synth_frac):
    num_classes = 5
    rows = stratified_sample(labels, frac, seed)
    real = labels[rows]
    full_counts = torch.bincount(labels, minlength=num_classes).tolist()
    real_counts = torch.bincount(real, minlength=num_classes).tolist()
    total = synthetic_total(len(labels), len(real), synth_frac)
    counts = synthetic_counts(full_counts, real_counts, total, balance=balance)
    assert sum(counts) == total and all(c >= 0 for c in counts)
    assert all(c == 0 for c, r in zip(counts, real_counts) if r == 0), "no class without a source gets any"
    plan = plan_synthetic(real, counts, variations_per_image=k, seed=seed)
    assert len(plan.requests) == total
    assert len(set(plan.requests)) == total, "no variation used twice"
    for row, variation in plan.requests:
        assert 0 <= row < len(real), "sources only from the real sample"
        assert 0 <= variation < plan.pool[int(real[row])]
    per_class = torch.bincount(real[[r for r, _ in plan.requests]], minlength=num_classes).tolist() if plan.requests else [0] * num_classes
    assert per_class == counts
    assert plan == plan_synthetic(real, counts, variations_per_image=k, seed=seed), "deterministic"


# --- the cache keys ------------------------------------------------------------------------------------
key_inputs = st.tuples(
    st.text("0123456789abcdef", min_size=64, max_size=64),  # a source hash (sha256 hex)
    st.sampled_from(["elastic", "openai", "folder", "ddpm"]),
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=8), st.floats(allow_nan=False)),
                    max_size=4),
    st.integers(0, 1000),
)


@SETTINGS
@given(a=key_inputs, b=key_inputs)
def test_cache_keys_never_collide_and_always_hit(a, b):
    assert cache_key(*a) == cache_key(*a), "identical inputs always hit"
    canonical = lambda t: (t[0], t[1], {k: v for k, v in sorted(t[2].items())}, t[3])  # noqa: E731
    if canonical(a) != canonical(b):
        assert cache_key(*a) != cache_key(*b), (a, b)
    assert generation_seed(a[0], a[3]) == generation_seed(a[0], a[3])


@SETTINGS
@given(params=st.dictionaries(st.text(max_size=6), st.integers(), min_size=2, max_size=5))
def test_cache_key_ignores_option_order(params):
    reordered = dict(reversed(list(params.items())))
    assert cache_key("s", "g", params, 0) == cache_key("s", "g", reordered, 0)


# --- the config parser ------------------------------------------------------------------------------------
NAMES = set(Config.field_names())


@SETTINGS
@given(key=st.text(min_size=1, max_size=20), value=st.text(max_size=10))
def test_any_unknown_key_is_refused(key, value):
    assume(key.replace("-", "_") not in NAMES)
    with pytest.raises(SynthmedError, match="unknown config key"):
        Config.from_mapping({key: value})


def _value(f):
    """A valid value for one field, from its type and metadata."""
    meta = f.metadata
    if "choices" in meta:
        return st.sampled_from(meta["choices"])
    tp = {"int": int, "float": float, "bool": bool}.get(str(f.type).replace(" | None", ""), str)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(meta.get("min", 0), meta.get("max", 10_000))
    if tp is float:
        lo = meta.get("gt", meta.get("ge", 0.0))
        hi = meta.get("lt", meta.get("le", 1e6))
        return st.floats(lo, hi, exclude_min="gt" in meta, exclude_max="lt" in meta, allow_nan=False)
    if f.name in ("generator_options",):
        return st.just("alpha=2,sigma=3")
    if f.name == "policy_options":
        return st.sampled_from(["degrees=5", "degrees=5,flip_p=0", "brightness=0.2\\,x"])
    if f.name == "register":
        return st.sampled_from(["default", "my-model"])
    return st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(
        lambda s: s.strip() == s and s.lower() not in ("none", "null", "") and "=" not in s)


def _consistent(changes: dict) -> dict:
    """groups and twin_threshold only mean something with split=grouped (Config refuses them otherwise)."""
    if "groups" in changes or "twin_threshold" in changes:
        changes = {**changes, "split": "grouped"}
    return changes


CHANGES = st.fixed_dictionaries({}, optional={f.name: _value(f) for f in fields(Config)
                                              if f.name not in ("patience", "val_frac", "generator_options")}
                                ).map(_consistent)


@SETTINGS
@given(changes=CHANGES)
def test_any_valid_config_round_trips_through_yaml(tmp_path_factory, changes):
    config = Config(**changes)
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(config.to_yaml())
    assert Config.from_yaml(path) == config
