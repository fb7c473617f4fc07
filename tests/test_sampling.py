"""The stratified sampler and the validation split: counts, rounding, seeds, nesting, bad fractions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synthmed.data.sampling import keep_count, split_validation, stratified_sample
from synthmed.errors import SynthmedError

labels_st = st.lists(st.integers(0, 5), min_size=1, max_size=120).map(lambda xs: torch.tensor(xs).long())
frac_st = st.floats(min_value=1e-6, max_value=1.0, allow_nan=False)
seed_st = st.integers(0, 2**32)
few = settings(max_examples=60, deadline=None)


def _counts(labels: torch.Tensor) -> dict[int, int]:
    return {int(c): int((labels == c).sum()) for c in torch.unique(labels)}


@few
@given(labels_st, frac_st, seed_st)
def test_stratified_sample_counts_follow_the_documented_rounding(labels, frac, seed):
    rows = stratified_sample(labels, frac, seed)
    assert rows.dtype == torch.long
    assert len(torch.unique(rows)) == len(rows)  # unique
    assert torch.equal(rows, torch.sort(rows).values)  # sorted
    assert len(rows) == 0 or (rows.min() >= 0 and rows.max() < len(labels))  # never outside the split
    got = _counts(labels[rows])
    for c, n_c in _counts(labels).items():
        expected = n_c if frac == 1 else min(n_c, max(1, math.floor(frac * n_c + 0.5)))
        assert got.get(c, 0) == expected >= 1


@few
@given(labels_st, frac_st, seed_st)
def test_stratified_sample_is_deterministic_by_seed(labels, frac, seed):
    assert torch.equal(stratified_sample(labels, frac, seed), stratified_sample(labels, frac, seed))


@few
@given(labels_st, frac_st, frac_st, seed_st)
def test_smaller_fraction_is_a_subset_of_larger(labels, a, b, seed):
    small, large = sorted((a, b))
    rows_small = set(stratified_sample(labels, small, seed).tolist())
    rows_large = set(stratified_sample(labels, large, seed).tolist())
    assert rows_small <= rows_large


def test_full_fraction_keeps_every_row_and_seeds_differ():
    labels = torch.arange(400) % 4
    assert torch.equal(stratified_sample(labels, 1.0, 3), torch.arange(400))
    assert not torch.equal(stratified_sample(labels, 0.3, 0), stratified_sample(labels, 0.3, 1))


def test_rounding_is_half_up_and_at_least_one():
    assert [keep_count(n, 0.5) for n in (1, 3, 5)] == [1, 2, 3]  # 0.5, 1.5, 2.5 round up
    labels = torch.tensor([0] * 10 + [1] * 3 + [2])
    kept = labels[stratified_sample(labels, 0.15, 0)]
    assert _counts(kept) == {0: 2, 1: 1, 2: 1}  # 1.5 -> 2, 0.45 -> 1 (min), 0.15 -> 1 (min)


@pytest.mark.parametrize("frac", [0, 0.0, 1.5, -0.1, float("nan"), float("inf"), "0.3", True])
def test_bad_real_frac_is_an_error_naming_the_value(frac):
    with pytest.raises(SynthmedError, match=r"real_frac=.*allowed: real_frac > 0 and real_frac <= 1"):
        stratified_sample(torch.tensor([0, 1, 1]), frac, 0)


@few
@given(labels_st, st.floats(min_value=0.0, max_value=0.99, allow_nan=False), seed_st)
def test_split_validation_is_a_stratified_partition(labels, val_frac, seed):
    train, val = split_validation(labels, val_frac, seed)
    assert torch.equal(torch.sort(torch.cat([train, val])).values, torch.arange(len(labels)))
    assert torch.equal(train, torch.sort(train).values) and torch.equal(val, torch.sort(val).values)
    got_val, got_train = _counts(labels[val]), _counts(labels[train])
    for c, n_c in _counts(labels).items():
        if val_frac == 0 or n_c == 1:
            expected = 0
        else:
            expected = min(n_c - 1, max(1, math.floor(val_frac * n_c + 0.5)))
        assert got_val.get(c, 0) == expected
        assert got_train[c] >= 1  # every class keeps training images
    again = split_validation(labels, val_frac, seed)
    assert torch.equal(again[0], train) and torch.equal(again[1], val)


def test_split_validation_zero_and_singletons():
    labels = torch.tensor([0, 0, 0, 0, 1])
    train, val = split_validation(labels, 0.0, 0)
    assert train.tolist() == [0, 1, 2, 3, 4] and val.tolist() == []
    train, val = split_validation(labels, 0.5, 0)
    assert 4 in train.tolist() and len(val) == 2  # the single class-1 image stays in training


@pytest.mark.parametrize("val_frac", [1.0, -0.5, float("nan")])
def test_bad_val_frac_is_an_error(val_frac):
    with pytest.raises(SynthmedError, match=r"val_frac=.*allowed: val_frac >= 0 and val_frac < 1"):
        split_validation(torch.tensor([0, 1]), val_frac, 0)


def test_labels_must_be_integer_vector():
    with pytest.raises(SynthmedError, match="1-D integer"):
        stratified_sample(torch.tensor([[0, 1]]), 0.5, 0)
