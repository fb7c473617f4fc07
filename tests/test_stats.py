"""The statistics helpers behind sweep summaries (property tests with hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthmed.stats import (
    bootstrap_ci,
    pair_name,
    paired_difference,
    pairs_table,
    summarize,
    summary_table,
)
from synthmed.tracking.names import SWEEP_METRICS as METRICS

losses = st.lists(st.floats(min_value=0.0, max_value=50.0, allow_nan=False), min_size=1, max_size=40)
FAST = settings(max_examples=60, deadline=None)


@FAST
@given(losses, st.integers(0, 2**31 - 1))
def test_ci_contains_sample_median(values, seed):
    low, high = bootstrap_ci(values, np.median, n_boot=300, seed=seed)
    med = float(np.median(values))
    assert low <= med + 1e-9 and med <= high + 1e-9


@FAST
@given(losses)
def test_bootstrap_is_reproducible(values):
    assert bootstrap_ci(values, seed=3, n_boot=200) == bootstrap_ci(values, seed=3, n_boot=200)


def test_bootstrap_edge_cases():
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([0.7]) == (0.7, 0.7)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=1.5)


@FAST
@given(losses)
def test_summarize(values):
    s = summarize(values)
    assert s["n"] == len(values)
    assert s["q1"] <= s["median"] + 1e-9 <= s["q3"] + 2e-9
    assert s["iqr"] >= 0
    assert s["ci_low"] <= s["median"] + 1e-9 <= s["ci_high"] + 2e-9
    assert math.isnan(s["std"]) == (len(values) < 2)


def test_summarize_empty():
    s = summarize([])
    assert s["n"] == 0 and math.isnan(s["median"])


@FAST
@given(losses)
def test_identical_samples_differ_by_zero(values):
    d = paired_difference(values, values)
    assert d["median_diff"] == 0.0 and d["ci_low"] == 0.0 and d["ci_high"] == 0.0
    assert d["n"] == len(values)
    if len(values) < 2:
        assert math.isnan(d["p_value"])  # documented: no test with fewer than two pairs
    else:
        assert d["p_value"] == 1.0


@FAST
@given(st.lists(st.tuples(st.floats(0, 50), st.floats(0, 50)), min_size=2, max_size=40))
def test_p_value_in_unit_interval(pairs):
    a, b = zip(*pairs)
    d = paired_difference(a, b, n_boot=200)
    assert 0.0 <= d["p_value"] <= 1.0
    assert d["ci_low"] <= d["median_diff"] + 1e-9 <= d["ci_high"] + 2e-9


def test_paired_difference_detects_a_shift():
    rng = np.random.default_rng(0)
    base = rng.normal(1.0, 0.1, 30)
    d = paired_difference(base - 0.2 + rng.normal(0, 0.01, 30), base)
    assert d["median_diff"] == pytest.approx(-0.2, abs=0.02)
    assert d["ci_high"] < 0 and d["p_value"] < 1e-4


def test_paired_difference_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="equal length"):
        paired_difference([1.0, 2.0], [1.0])


def _results() -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(1)
    for sim in range(5):
        for policy, shift in (("none", 0.0), ("synthetic", -0.1)):
            for frac in (0.3, 1.0):
                loss = 1.0 - 0.3 * frac + shift + rng.normal(0, 0.01)
                rows.append(dict(model="cnn", policy=policy, real_frac=frac, simulation=sim,
                                 test_cross_entropy=loss, test_accuracy=0.5, test_macro_f1=0.4))
    return pd.DataFrame(rows).drop(index=[0])  # simulation 0 of (none, 0.3) missing


def test_summary_table_counts_per_cell():
    table = summary_table(_results(), METRICS)
    assert len(table) == 4
    n = {(r.policy, r.real_frac): r.n for r in table.itertuples()}
    assert n[("none", 0.3)] == 4 and n[("synthetic", 1.0)] == 5
    assert {"test_cross_entropy.median", "test_accuracy.ci_high", "test_macro_f1.iqr"} <= set(table)


def test_pairs_table_pairs_by_simulation():
    pairs = pairs_table(_results(), METRICS).set_index("name")
    assert set(pairs.index) == {
        "cnn.synthetic_vs_none.0.3", "cnn.synthetic_vs_none.1",
        "cnn.none.0.3_vs_1", "cnn.synthetic.0.3_vs_1",
    }
    row = pairs.loc["cnn.synthetic_vs_none.0.3"]
    assert row["test_cross_entropy.n"] == 4  # the missing simulation drops out of the pair
    assert row["test_cross_entropy.median_diff"] == pytest.approx(-0.1, abs=0.03)
    assert row["test_accuracy.p_value"] == 1.0  # identical accuracies


def test_a_cell_that_shares_another_cells_runs_is_not_compared_with_it():
    results = _results()
    results["run_id"] = [f"{r.policy}-{r.real_frac}-{r.simulation}" for r in results.itertuples()]
    shared = results[results.real_frac == 1.0].policy == "synthetic"
    shared_rows = results[results.real_frac == 1.0][shared]
    none_at_1 = results[(results.real_frac == 1.0) & (results.policy == "none")]
    results.loc[shared_rows.index, [c for c in results if c not in ("policy",)]] = none_at_1[
        [c for c in results if c not in ("policy",)]].to_numpy()  # synthetic@1 = none@1's runs
    names = set(pairs_table(results, METRICS)["name"])
    assert "cnn.synthetic_vs_none.1" not in names  # would be all-zero differences, p = 1
    assert {"cnn.synthetic_vs_none.0.3", "cnn.none.0.3_vs_1", "cnn.synthetic.0.3_vs_1"} <= names
    pairs = pairs_table(results, METRICS).set_index("name")
    without_run_ids = pairs_table(results.drop(columns="run_id"), METRICS).set_index("name")  # runs unknown: compared
    assert len(without_run_ids) == len(pairs) + 1


def test_pair_names():
    assert pair_name("cnn", "basic", 0.3, "none", 0.3) == "cnn.basic_vs_none.0.3"
    assert pair_name("cnn", "none", 0.5, "none", 1.0) == "cnn.none.0.5_vs_1"


@FAST
@given(st.lists(st.floats(0.0, 50.0, allow_nan=False), min_size=2, max_size=40), st.integers(0, 2**31 - 1),
       st.sampled_from([0.8, 0.9, 0.95]))
def test_bootstrap_is_scipys_percentile_bootstrap(values, seed, level):
    """The same resamples from the same generator: the same interval as scipy.stats.bootstrap."""
    from scipy.stats import bootstrap

    ours = bootstrap_ci(values, np.median, level=level, n_boot=300, seed=seed)
    theirs = bootstrap((np.asarray(values),), np.median, confidence_level=level, n_resamples=300,
                       method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    assert ours == pytest.approx((theirs.low, theirs.high))
