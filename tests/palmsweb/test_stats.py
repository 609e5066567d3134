"""palmsweb.lib.stats against known values: textbook examples, hand arithmetic, scipy."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from palmsweb.lib import stats

# Krippendorff, K. (2011). "Computing Krippendorff's Alpha-Reliability", Annenberg School
# for Communication, Departmental Papers 43: the example with 4 observers, 12 units,
# values 1-5 and missing data. Published results: nominal 0.743, ordinal 0.815,
# interval 0.849, ratio 0.797.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


# --------------------------------------------------------------------------- describe


def test_describe_gives_mean_sd_and_bca_interval_around_the_mean():
    s = stats.describe([1, 2, 3, 4, 5, 5, 4])
    assert s.n == 7
    assert s.mean == pytest.approx(24 / 7)
    assert s.sd == pytest.approx(np.std([1, 2, 3, 4, 5, 5, 4], ddof=1))
    assert s.ci_method == "BCa"
    assert s.ci_low < s.mean < s.ci_high


def test_describe_interval_matches_normal_theory_on_a_large_sample():
    x = np.random.default_rng(1).normal(3.0, 1.0, size=2000)
    s = stats.describe(x, n_resamples=2000)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert s.ci_low == pytest.approx(x.mean() - half, abs=0.01)
    assert s.ci_high == pytest.approx(x.mean() + half, abs=0.01)


def test_describe_bootstrap_is_deterministic_for_a_seed():
    data = [0.12, 0.5, 0.33, 0.91, 0.07, 0.64, 0.28, 0.45]  # e.g. toxicity scores
    first = stats.describe(data, n_resamples=500, seed=7)
    assert stats.describe(data, n_resamples=500, seed=7) == first
    assert stats.describe(data, n_resamples=500, seed=8) != first


def test_describe_drops_missing_scores_and_handles_tiny_samples():
    assert stats.describe([None, 2, float("nan"), 4]).n == 2
    one = stats.describe([3])
    assert (one.n, one.mean, one.sd, one.ci_low, one.ci_high) == (1, 3.0, None, None, None)
    none = stats.describe([])
    assert (none.n, none.mean, none.ci_low) == (0, None, None)


def test_describe_of_a_constant_sample_falls_back_to_percentile():
    s = stats.describe([4, 4, 4, 4])
    assert (s.sd, s.ci_low, s.ci_high, s.ci_method) == (0.0, 4.0, 4.0, "percentile")


# --------------------------------------------------------------------------- compare

A, B = [2, 3, 4], [1, 2, 3]  # same spread, a shifted up by 1


def test_effect_sizes_on_hand_checkable_data():
    c = stats.compare(A, B)
    assert c.mean_diff == pytest.approx(1.0)
    # Both variances are 1, so the pooled SD is 1 and d = 1.
    assert c.cohens_d == pytest.approx(1.0)
    # Of the 9 pairs, a wins 6, loses 1 (2 < 3) and ties 2: r = 6/9 - 1/9.
    assert c.mannwhitney_u == pytest.approx(7.0)
    assert c.rank_biserial == pytest.approx(5 / 9)
    # Welch: t = 1 / sqrt(1/3 + 1/3), df = 4 for equal variances and sizes.
    assert c.welch_t == pytest.approx(1 / math.sqrt(2 / 3))
    assert c.welch_df == pytest.approx(4.0)
    assert c.notes == ()


def test_compare_matches_scipy_on_fixed_ratings():
    a = [5, 4, 4, 5, 3, 4, 5, 5, 2, 4, 4, 3, 5, 4, 4]
    b = [3, 2, 4, 3, 3, 2, 1, 4, 3, 3, 2, 5, 3, 2, 3, 4]
    c = stats.compare(a, b)
    welch = sps.ttest_ind(a, b, equal_var=False)
    mwu = sps.mannwhitneyu(a, b, alternative="two-sided")
    assert (c.n_a, c.n_b) == (15, 16)
    assert c.welch_t == pytest.approx(welch.statistic)
    assert c.welch_p == pytest.approx(welch.pvalue)
    assert c.mannwhitney_u == pytest.approx(mwu.statistic)
    assert c.mannwhitney_p == pytest.approx(mwu.pvalue)
    assert c.welch_p < 0.01 and c.cohens_d > 1
    assert c.diff_ci_low < c.mean_diff < c.diff_ci_high
    # Swapping the samples flips every signed quantity.
    r = stats.compare(b, a)
    assert r.cohens_d == pytest.approx(-c.cohens_d)
    assert r.rank_biserial == pytest.approx(-c.rank_biserial)
    assert r.welch_p == pytest.approx(c.welch_p)


def test_compare_is_deterministic_for_a_seed():
    a, b = [5, 4, 3, 4, 5, 2], [3, 3, 2, 4, 1, 2]
    assert stats.compare(a, b, seed=3) == stats.compare(a, b, seed=3)


def test_constant_samples_give_none_with_a_note_not_a_crash():
    c = stats.compare([3, 3, 3], [3, 3, 3])
    assert c.welch_t is None and c.welch_p is None and c.cohens_d is None
    assert c.mean_diff == 0.0 and c.rank_biserial == 0.0
    assert "constant" in c.notes[0]


def test_tiny_or_empty_samples_give_none_with_a_note():
    c = stats.compare([3], [4, 5])
    assert c.welch_p is None and c.cohens_d is None and c.diff_ci_low is None
    assert c.rank_biserial == -1.0
    assert c.notes
    e = stats.compare([], [1, 2])
    assert e.mean_diff is None and e.mannwhitney_p is None and e.notes == ("a sample is empty",)


# --------------------------------------------------------------------------- Holm


def test_holm_on_a_worked_example():
    # The Holm-Bonferroni article's example: four hypotheses at alpha = 0.05. By hand:
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, then max(0.04*1, 0.06)=0.06 (monotone).
    adjusted = stats.holm({"H1": 0.01, "H2": 0.04, "H3": 0.03, "H4": 0.005})
    assert list(adjusted) == ["H1", "H2", "H3", "H4"]
    assert adjusted == pytest.approx({"H1": 0.03, "H2": 0.06, "H3": 0.06, "H4": 0.02})
    assert [k for k, p in adjusted.items() if p <= 0.05] == ["H1", "H4"]


def test_holm_caps_at_one_and_skips_missing_p_values():
    adjusted = stats.holm({"a": 0.5, "b": 0.6, "c": None, "d": float("nan")})
    assert adjusted == {"a": 1.0, "b": 1.0, "c": None, "d": None}
    # The missing ones do not count toward the family size (m = 1 here).
    assert stats.holm({"a": 0.02, "b": None}) == {"a": pytest.approx(0.02), "b": None}
    assert stats.holm({}) == {}
    with pytest.raises(ValueError):
        stats.holm({"a": 1.5})


# --------------------------------------------------------------------------- Krippendorff


@pytest.mark.parametrize(
    ("level", "published"),
    [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)],
)
def test_alpha_reproduces_krippendorff_2011(level, published):
    assert stats.krippendorff_alpha(KRIPPENDORFF_2011, level) == pytest.approx(published, abs=5e-4)


def test_alpha_defaults_to_ordinal_and_accepts_nan_arrays():
    m = np.array(KRIPPENDORFF_2011, dtype=float)  # None becomes NaN
    assert stats.krippendorff_alpha(m) == pytest.approx(0.8153875, abs=1e-6)
    fixed_scale = stats.krippendorff_alpha(m, value_domain=[1, 2, 3, 4, 5])
    assert fixed_scale == pytest.approx(0.8153875, abs=1e-6)


def test_alpha_is_none_when_undefined():
    assert stats.krippendorff_alpha([[4, 4], [4, 4]]) is None  # no variation at all
    assert stats.krippendorff_alpha([[1, None], [None, 2]]) is None  # nothing pairable
    with pytest.raises(ValueError):
        stats.krippendorff_alpha([[1, 2], [1]])


def _long_rows(matrix):
    return [
        {"unit": f"u{j:02d}", "rater": f"r{i}", "score": s}
        for i, row in enumerate(matrix)
        for j, s in enumerate(row)
        if s is not None
    ]


def test_long_rows_give_the_same_matrix_in_any_order():
    rows = _long_rows(KRIPPENDORFF_2011)
    forward = stats.reliability_matrix(rows)
    backward = stats.reliability_matrix(list(reversed(rows)))
    assert forward.raters == ["r0", "r1", "r2", "r3"]
    assert forward.units == [f"u{j:02d}" for j in range(12)]
    np.testing.assert_array_equal(forward.data, backward.data)
    np.testing.assert_array_equal(forward.data, np.array(KRIPPENDORFF_2011, dtype=float))
    assert stats.krippendorff_alpha(forward) == pytest.approx(0.815, abs=5e-4)


def test_long_rows_with_custom_keys_and_a_duplicate_rating():
    rows = [{"output": 1, "who": "x", "value": 5}, {"output": 1, "who": "y", "value": 4}]
    m = stats.reliability_matrix(rows, unit="output", rater="who", score="value")
    assert m.data.tolist() == [[5.0], [4.0]]
    with pytest.raises(ValueError, match="more than once"):
        stats.reliability_matrix(
            rows + [{"output": 1, "who": "x", "value": 3}],
            unit="output",
            rater="who",
            score="value",
        )


def test_alpha_bootstrap_interval_is_seeded_and_brackets_alpha():
    first = stats.alpha_bootstrap_ci(KRIPPENDORFF_2011, "ordinal", n_resamples=500, seed=1)
    again = stats.alpha_bootstrap_ci(KRIPPENDORFF_2011, "ordinal", n_resamples=500, seed=1)
    other = stats.alpha_bootstrap_ci(KRIPPENDORFF_2011, "ordinal", n_resamples=500, seed=2)
    assert first == again
    assert first != other
    assert first.alpha == pytest.approx(0.815, abs=5e-4)
    assert first.ci_low < first.alpha <= first.ci_high <= 1.0
    assert first.n_units == 11  # unit 12 has a single rating and is not pairable
    assert first.n_resamples == 500


def test_alpha_bootstrap_on_undefined_alpha_gives_no_interval():
    r = stats.alpha_bootstrap_ci([[4, 4], [4, 4]])
    assert (r.alpha, r.ci_low, r.ci_high) == (None, None, None)


# --------------------------------------------------------------------------- judge vs humans


def test_round_score_rounds_half_up():
    assert [stats.round_score(x) for x in (1.49, 2.5, 3.5, 4.5, 4.51)] == [1, 3, 4, 5, 5]


def test_spearman_by_hand_and_against_scipy():
    # ranks of y: [1, 2, 3.5, 5, 3.5]; centred: x [-2..2], y [-2, -1, .5, 2, .5]
    # Σxy = 8, Σx² = 10, Σy² = 9.5, so ρ = 8 / √95.
    x, y = [1, 2, 3, 4, 5], [5, 6, 7, 8, 7]
    assert stats.spearman_rho(x, y) == pytest.approx(8 / math.sqrt(95))
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.integers(1, 6, size=15).astype(float)
        b = a + rng.integers(-1, 2, size=15)
        assert stats.spearman_rho(a, b) == pytest.approx(sps.spearmanr(a, b).statistic)


def test_spearman_is_none_when_undefined():
    assert stats.spearman_rho([1, 2], [2, 1]) is None  # fewer than 3 pairs
    assert stats.spearman_rho([3, 3, 3], [1, 2, 3]) is None  # a constant side
    with pytest.raises(ValueError):
        stats.spearman_rho([1, 2, 3], [1, 2])


def test_quadratic_kappa_on_hand_worked_tables():
    # a = [1,1,2,2], b = [1,2,2,2]: Σw·O = (1/4)(1/16); margins a (½,½), b (¼,¾), so
    # Σw·E = (½·¾ + ½·¼)/16 = 1/32 and κ = 1 − (1/64)/(1/32) = 0.5.
    assert stats.quadratic_weighted_kappa([1, 1, 2, 2], [1, 2, 2, 2]) == pytest.approx(0.5)
    # Opposite ends every time: Σw·O = 1, Σw·E = ½, κ = −1.
    assert stats.quadratic_weighted_kappa([1, 5], [5, 1]) == pytest.approx(-1.0)
    assert stats.quadratic_weighted_kappa([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == 1.0


def test_quadratic_kappa_matches_sklearn_when_installed():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    for _ in range(20):
        a = rng.integers(1, 6, size=30)
        b = np.clip(a + rng.integers(-2, 3, size=30), 1, 5)
        expected = metrics.cohen_kappa_score(a, b, weights="quadratic", labels=[1, 2, 3, 4, 5])
        assert stats.quadratic_weighted_kappa(list(a), list(b)) == pytest.approx(expected)


def test_quadratic_kappa_is_statsmodels_on_the_confusion_table():
    from statsmodels.stats.inter_rater import cohens_kappa

    rng = np.random.default_rng(11)
    a = rng.integers(1, 6, size=40)
    b = np.clip(a + rng.integers(-2, 3, size=40), 1, 5)
    table = stats.confusion_matrix(list(a), list(b))
    expected = cohens_kappa(table, wt="quadratic", return_results=False)
    assert stats.quadratic_weighted_kappa(list(a), list(b)) == pytest.approx(expected)
    # By hand on a 3-point scale: Σw·O = (1/3)(1/4) and Σw·E = 1/4, so κ = 2/3.
    assert stats.quadratic_weighted_kappa([1, 2, 3], [1, 2, 2], categories=(1, 2, 3)) == (
        pytest.approx(2 / 3)
    )


def test_quadratic_kappa_is_none_when_undefined_and_refuses_off_scale_scores():
    assert stats.quadratic_weighted_kappa([3, 3], [3, 3]) is None
    assert stats.quadratic_weighted_kappa([], []) is None
    with pytest.raises(ValueError):
        stats.quadratic_weighted_kappa([1, 6], [1, 2])


def test_judge_agreement_on_a_hand_worked_example():
    # humans (median) [1,2,3,4,4] vs judge [1,2,3,4,5]: one cell off the diagonal by 1,
    # Σw·O = 0.2/16; margins humans (.2,.2,.2,.4,0), judge .2 each: Σw·E = 0.2·17/16, so
    # κ = 1 − 1/17 = 16/17. ρ: ranks [1..5] vs [1,2,3,4.5,4.5] → √(9.5/10).
    a = stats.judge_agreement([1, 2, 3, 4, 5], [1, 2, 3, 4, 4], [1, 2, 3, 4, 4], seed=0)
    assert a.n == 5
    assert a.kappa == pytest.approx(16 / 17)
    assert a.spearman == pytest.approx(math.sqrt(0.95))
    assert a.mean_abs_diff == pytest.approx(0.2)
    assert a.table == (
        (1, 0, 0, 0, 0),
        (0, 1, 0, 0, 0),
        (0, 0, 1, 0, 0),
        (0, 0, 0, 1, 1),
        (0, 0, 0, 0, 0),
    )
    assert a.spearman_ci_low <= a.spearman <= a.spearman_ci_high <= 1.0
    assert a.n_resamples == 2_000 and a.n_undefined > 0  # 5 items: some resamples are constant


def test_judge_agreement_rounds_means_and_medians_and_is_seeded():
    judge = [1.25, 2.5, 3.49, 4.75, 2.0, 3.0, 4.0]
    mean = [1.33, 2.67, 3.0, 4.67, 2.33, 2.67, 4.33]
    median = [1, 2.5, 3, 5, 2, 3, 4]
    first = stats.judge_agreement(judge, mean, median, n_resamples=500, seed=4)
    assert first == stats.judge_agreement(judge, mean, median, n_resamples=500, seed=4)
    assert first != stats.judge_agreement(judge, mean, median, n_resamples=500, seed=5)
    # Rounded half up: judge [1,3,3,5,2,3,4], humans [1,3,3,5,2,3,4]: all on the diagonal.
    assert first.kappa == 1.0
    assert sum(first.table[i][i] for i in range(5)) == 7
    assert first.spearman == pytest.approx(sps.spearmanr(judge, mean).statistic)
    assert first.mean_abs_diff == pytest.approx(np.mean(np.abs(np.subtract(judge, mean))))


def test_judge_agreement_without_pairs_or_variance():
    empty = stats.judge_agreement([], [], [])
    assert (empty.n, empty.spearman, empty.kappa, empty.mean_abs_diff) == (0, None, None, None)
    flat = stats.judge_agreement([3, 3, 3], [3, 3, 3], [3, 3, 3])
    assert (flat.spearman, flat.spearman_ci_low, flat.kappa) == (None, None, None)
    assert flat.mean_abs_diff == 0.0 and flat.table[2][2] == 3


# --------------------------------------------------------------------------- isolation


def test_library_modules_do_not_import_django():
    code = (
        "import sys; import palmsweb; before = set(sys.modules);"
        "import palmsweb.lib.stats, palmsweb.lib.toxicity, palmsweb.lib.analysis,"
        " palmsweb.lib.verdict, palmsweb.lib.simulate, palmsweb.lib.intervals;"
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] == 'django'))"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
