"""Statistics of the report: Hodges–Lehmann with its Wilcoxon interval, Holm, effect sizes, the real-scan equivalent."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from synthmed.stats import (
    cohen_dz, exact_signed_rank_p, hodges_lehmann, hodges_lehmann_ci, holm, rank_biserial, signed_rank_cdf, wilcoxon_p)
from synthmed.stats.equivalence import describe, invert_curve, isotonic_decreasing, real_scan_equivalent, \
    real_scan_equivalents
from synthmed.tracking.names import HEADLINE

finite = st.floats(-5, 5, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=40))
def test_holm_matches_statsmodels(p):
    from statsmodels.stats.multitest import multipletests

    assert np.allclose(holm(p), multipletests(p, method="holm")[1])


def test_holm_keeps_nan_out_of_the_family():
    out = holm([0.01, math.nan, 0.04])
    assert math.isnan(out[1]) and np.allclose(out[[0, 2]], [0.02, 0.04])


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=1, max_size=25))
def test_hodges_lehmann_is_the_median_of_walsh_averages(d):
    direct = np.median([(a + b) / 2 for i, a in enumerate(d) for b in d[i:]])
    assert hodges_lehmann(d) == pytest.approx(direct)


def test_signed_rank_null_distribution_by_enumeration():
    for n in (1, 4, 7):
        sums = [sum(r for r, s in zip(range(1, n + 1), signs) if s) for signs in itertools.product((0, 1), repeat=n)]
        brute = np.cumsum(np.bincount(sums, minlength=n * (n + 1) // 2 + 1)) / 2**n
        assert np.allclose(signed_rank_cdf(n), brute)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False).map(lambda v: round(v, 3)), min_size=6, max_size=14, unique=True))
def test_hl_interval_is_where_the_wilcoxon_test_does_not_reject(d):
    """Brute force: theta is inside the 95% interval iff the exact test of d - theta keeps H0 (no ties)."""
    from scipy.stats import wilcoxon

    low, high = hodges_lehmann_ci(d)
    assert low <= hodges_lehmann(d) <= high
    x = np.asarray(d)
    for theta in np.linspace(min(d) - 1, max(d) + 1, 41):
        shifted = x - theta
        if np.any(np.isclose(shifted, 0)) or len(set(np.round(np.abs(shifted), 9))) < len(shifted):
            continue  # the exact test needs no zeros and no ties
        keeps = wilcoxon(shifted, method="exact").pvalue > 0.05
        inside = low <= theta < high
        if not np.isclose(theta, [low, high]).any():
            assert keeps == inside, (theta, low, high)


def test_too_few_pairs_have_no_interval_and_the_p_value_matches_scipy():
    from scipy.stats import wilcoxon

    assert all(math.isnan(v) for v in hodges_lehmann_ci([0.1, 0.2, 0.3, 0.4, 0.5]))  # n = 5 cannot reach 95%
    d = [0.3, -0.1, 0.25, 0.4, 0.05, 0.2, -0.02]
    assert wilcoxon_p(d) == pytest.approx(wilcoxon(d).pvalue)
    assert wilcoxon_p([0.0, 0.0]) == 1.0 and math.isnan(wilcoxon_p([0.1]))


def test_effect_sizes_on_constructed_cases():
    assert rank_biserial([0.1, 0.2, 0.3]) == 1.0 and rank_biserial([-1, -2]) == -1.0
    assert rank_biserial([1, -1, 2, -2]) == 0.0 and math.isnan(rank_biserial([0, 0]))
    assert cohen_dz([1.0, 2.0, 3.0]) == pytest.approx(2.0)


# --- the real-scan equivalent ---------------------------------------------------------------------
def table(curve: dict[float, float], policy_medians: dict[float, float], n: int = 5, noise: float = 0.0,
          seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for policy, cells in (("none", curve), ("synthetic", policy_medians)):
        for frac, value in cells.items():
            for i in range(n):
                jitter = (i - (n - 1) / 2) * 0.001 + noise * rng.standard_normal()
                rows.append(dict(model="cnn", policy=policy, real_frac=frac, simulation=i, test_cross_entropy=value + jitter))
    return pd.DataFrame(rows)


def test_a_power_law_curve_gives_the_exact_fraction():
    # the example: 0.2·x^-0.5 fitted at 0.3/0.6/1.0; linear interpolation read a true 45% as 49%
    curve = {x: 0.2 * x ** -0.5 for x in (0.3, 0.6, 1.0)}
    results = table(curve, {0.3: 0.2 * 0.45 ** -0.5}, n=1)
    row = real_scan_equivalent(results, "cnn", "synthetic", 0.3, metric=HEADLINE, n_boot=50)
    assert row["status"] == "ok" and row["equivalent"] == pytest.approx(0.45, abs=1e-9)
    assert row["ci_low"] <= row["equivalent"] <= row["ci_high"]
    assert describe(row).startswith("30% real + synthetic ≈ 45% real [")


@settings(max_examples=40, deadline=None)
@given(st.floats(0.25, 0.6), st.floats(-0.9, -0.1), st.floats(0.05, 2.0))
def test_exact_for_every_power_law(true_x, b, a):
    curve = {x: a * x**b for x in (0.2, 0.4, 0.7, 1.0)}
    row = real_scan_equivalent(table(curve, {0.2: a * true_x**b}, n=1), "cnn", "synthetic", 0.2, metric=HEADLINE,
                               n_boot=10)
    assert row["equivalent"] == pytest.approx(true_x, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.05, 2.0), min_size=2, max_size=5), st.floats(0.0, 2.5), st.floats(0.0, 2.5))
def test_monotone_in_the_policys_median(baseline, m1, m2):
    """A lower median of the policy never reads as fewer real scans, whatever the baseline's curve."""
    fracs = [0.2, 0.4, 0.6, 0.8, 1.0][: len(baseline)]
    curve = dict(zip(fracs, baseline))

    def x_star(m: float) -> float:
        return real_scan_equivalent(table(curve, {0.2: m}, n=1), "cnn", "synthetic", 0.2, metric=HEADLINE,
                                    n_boot=1)["equivalent"]

    low, high = sorted((m1, m2))
    assert x_star(low) >= x_star(high)


def test_the_bootstrap_keeps_the_pairing():
    """Simulation i of every cell shares a sample: a shift common to all cells of a simulation moves the
    curve and the policy together, so X* hardly moves — an unpaired bootstrap would scatter it."""
    rows = []
    rng = np.random.default_rng(0)
    shifts = rng.normal(0, 0.3, 20)  # large between simulations, shared by the cells of one
    for i, shift in enumerate(shifts):
        for frac, value in ((0.3, 1.0), (0.6, 0.8), (1.0, 0.6)):
            rows.append(dict(model="cnn", policy="none", real_frac=frac, simulation=i, test_cross_entropy=value + shift))
        rows.append(dict(model="cnn", policy="synthetic", real_frac=0.3, simulation=i, test_cross_entropy=0.8 + shift))
    results = pd.DataFrame(rows)
    row = real_scan_equivalent(results, "cnn", "synthetic", 0.3, metric=HEADLINE, n_boot=300)
    assert row["ci_low"] == pytest.approx(0.6, abs=1e-9) and row["ci_high"] == pytest.approx(0.6, abs=1e-9)
    shuffled = results.copy()  # the same values with the pairing broken: the interval widens
    mine = shuffled["policy"] == "synthetic"
    shuffled.loc[mine, "simulation"] = np.roll(shuffled.loc[mine, "simulation"].to_numpy(), 7)
    loose = real_scan_equivalent(shuffled, "cnn", "synthetic", 0.3, metric=HEADLINE, n_boot=300)
    assert loose["ci_high"] - loose["ci_low"] > 0.2


def test_refused_under_budget_epochs():
    from synthmed.stats.tables import build_tables

    results = table({0.3: 0.9, 1.0: 0.5}, {0.3: 0.7})
    refused = build_tables(results, [HEADLINE], headline=HEADLINE, budget="epochs")
    assert refused.equivalents.empty and "budget=epochs" in refused.equivalence_refused
    assert "--budget steps" in refused.equivalence_refused
    kept = build_tables(results, [HEADLINE], headline=HEADLINE, budget="steps")
    assert len(kept.equivalents) == 1 and kept.equivalence_refused is None


def test_beyond_and_at_most_are_never_extrapolated():
    beyond = real_scan_equivalent(table({0.3: 0.9, 1.0: 0.5}, {0.3: 0.4}), "cnn", "synthetic", 0.3,
                                  metric=HEADLINE, n_boot=50)
    assert beyond["status"] == "beyond" and beyond["equivalent"] == math.inf
    assert "beyond the largest fraction" in describe(beyond)
    worse = real_scan_equivalent(table({0.3: 0.9, 1.0: 0.5}, {0.3: 1.2}), "cnn", "synthetic", 0.3,
                                 metric=HEADLINE, n_boot=50)
    assert worse["status"] == "at_most" and worse["equivalent"] == 0.3


def test_non_monotone_noise_still_gives_a_monotone_fit_and_a_sensible_answer():
    fit = isotonic_decreasing([1.0, 0.7, 0.8, 0.5])
    assert np.all(np.diff(fit) <= 0) and fit.tolist() == pytest.approx([1.0, 0.75, 0.75, 0.5])
    x, status = invert_curve([0.2, 0.4, 0.6, 0.8], fit, 0.75)
    assert (x, status) == (0.4, "ok")  # the smallest fraction reaching the target on a flat stretch
    results = table({0.2: 1.0, 0.4: 0.7, 0.6: 0.8, 0.8: 0.5}, {0.2: 0.6}, noise=0.01, seed=3)
    row = real_scan_equivalent(results, "cnn", "synthetic", 0.2, metric=HEADLINE, n_boot=200)
    assert 0.6 <= row["equivalent"] <= 0.8 and row["ci_low"] <= row["equivalent"] <= row["ci_high"]


def test_seeded_and_only_with_two_baseline_fractions():
    results = table({0.2: 1.0, 1.0: 0.2}, {0.2: 0.6}, noise=0.02)
    a = real_scan_equivalents(results, metric=HEADLINE, n_boot=100, seed=1)
    assert a.equals(real_scan_equivalents(results, metric=HEADLINE, n_boot=100, seed=1)) and len(a) == 1
    one = table({1.0: 0.2}, {0.2: 0.6})
    assert real_scan_equivalents(one, metric=HEADLINE).empty


def test_a_cell_that_is_the_baselines_own_runs_gets_no_equivalent():
    results = table({0.3: 0.9, 1.0: 0.3}, {0.3: 0.6, 1.0: 0.3})
    results["run_id"] = [f"r{i}" for i in range(len(results))]
    shared = (results["policy"] == "synthetic") & (results["real_frac"] == 1.0)
    results.loc[shared, "run_id"] = results.loc[(results["policy"] == "none") & (results["real_frac"] == 1.0),
                                                "run_id"].to_numpy()  # the sweep trained it once, as none
    table_ = real_scan_equivalents(results, metric=HEADLINE, n_boot=50)
    assert table_["real_frac"].tolist() == [0.3]  # 100% real + synthetic ≈ 100% would be true and empty
    results["run_id"] = [f"r{i}" for i in range(len(results))]  # trained apart: it has its own answer
    assert sorted(real_scan_equivalents(results, metric=HEADLINE, n_boot=50)["real_frac"]) == [0.3, 1.0]


# --- the hand-written statistics against scipy and statsmodels ----------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=30), st.data())
def test_holm_leaves_nan_out_of_the_family_as_statsmodels_would_without_them(p, data):
    from statsmodels.stats.multitest import multipletests

    holes = data.draw(st.lists(st.booleans(), min_size=len(p), max_size=len(p)))
    with_nan = np.where(holes, math.nan, p)
    kept = ~np.asarray(holes)
    out = holm(with_nan)
    assert np.isnan(out[~kept]).all()
    if kept.any():
        assert np.allclose(out[kept], multipletests(with_nan[kept], method="holm")[1])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=2, max_size=40, unique=True), st.data())
def test_wilcoxon_p_without_ties_is_scipys_exact_test(magnitudes, data):
    """Distinct non-zero magnitudes (in thousandths, as before) with drawn signs: drawn directly, not
    filtered out of random floats — the filter failed Hypothesis's health check on a loaded machine."""
    from scipy.stats import wilcoxon

    signs = data.draw(st.lists(st.sampled_from([-1, 1]), min_size=len(magnitudes), max_size=len(magnitudes)))
    d = [s * m / 1000 for s, m in zip(signs, magnitudes)]
    assert wilcoxon_p(d) == pytest.approx(wilcoxon(d, method="exact").pvalue)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False).map(lambda v: round(v, 1)), min_size=1, max_size=30))
def test_rank_biserial_is_scipys_signed_rank_sum_rescaled(d):
    """r = 2 W+ / (W+ + W-) - 1, with W+ scipy's one-sided statistic (ties at mid-ranks, zeros dropped)."""
    from scipy.stats import wilcoxon

    nonzero = np.asarray([v for v in d if v != 0])
    if nonzero.size == 0:
        assert math.isnan(rank_biserial(d))
        return
    w_plus = wilcoxon(nonzero, alternative="greater", method="approx").statistic
    total = nonzero.size * (nonzero.size + 1) / 2
    assert rank_biserial(d) == pytest.approx(2 * w_plus / total - 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=2, max_size=30))
def test_cohen_dz_is_the_one_sample_t_over_root_n(d):
    from scipy.stats import ttest_1samp

    assume(np.std(d, ddof=1) > 1e-6)  # no spread: NaN here, a division by zero there
    assert cohen_dz(d) == pytest.approx(ttest_1samp(d, 0.0).statistic / math.sqrt(len(d)), rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, st.floats(0.5, 10)), min_size=1, max_size=25))
def test_isotonic_fit_is_scipys(points):
    from scipy.optimize import isotonic_regression

    y, w = (list(t) for t in zip(*points))
    expected = isotonic_regression(y, weights=w, increasing=False).x
    assert np.allclose(isotonic_decreasing(y, w), expected)


def _t_plus(x, axis=-1):
    from scipy.stats import rankdata

    ranks = rankdata(np.abs(x), axis=axis)
    return np.sum(np.where(x > 0, ranks, 0.0), axis=axis)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(-4, 4).map(lambda v: v / 10), min_size=1, max_size=12))
def test_wilcoxon_p_is_the_exact_permutation_p_tied_or_not(d):
    """Ties (and zeros) are common for accuracy and macro-F1 differences: the p is still exact."""
    from scipy.stats import permutation_test

    x = np.asarray([v for v in d if v != 0])
    if len(d) < 2:
        assert math.isnan(wilcoxon_p(d))
        return
    if x.size == 0:
        assert wilcoxon_p(d) == 1.0
        return
    if x.size == 1:  # both signs equally likely: p = 2 · 1/2 (scipy's permutation_test wants two values)
        assert wilcoxon_p(d) == 1.0
        return
    expected = permutation_test((x,), _t_plus, permutation_type="samples", n_resamples=np.inf, vectorized=True,
                                alternative="two-sided").pvalue
    assert wilcoxon_p(d) == pytest.approx(min(1.0, expected), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=2, max_size=20, unique=True), st.data())
def test_exact_signed_rank_p_without_ties_is_scipys_exact_wilcoxon(magnitudes, data):
    from scipy.stats import wilcoxon

    signs = data.draw(st.lists(st.sampled_from([-1, 1]), min_size=len(magnitudes), max_size=len(magnitudes)))
    d = [s * m / 1000 for s, m in zip(signs, magnitudes)]  # no zeros, no ties in |d|: where scipy's exact is defined
    assert exact_signed_rank_p(d) == pytest.approx(wilcoxon(d, method="exact").pvalue)


def test_five_tied_negative_differences_are_not_significant():
    # scipy's normal approximation without continuity correction said p ≈ 0.025; all 2^5 sign flips say 2/32
    assert wilcoxon_p([-0.01] * 5) == pytest.approx(0.0625)
    assert wilcoxon_p([-0.01, -0.01, -0.02, -0.02, -0.03]) == pytest.approx(0.0625)


def test_a_constant_difference_has_no_standardized_effect():
    assert math.isnan(cohen_dz([0.1, 0.1, 0.1])) and math.isnan(cohen_dz([-0.3] * 7))
