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


# --------------------------------------------------------------------------- isolation


def test_library_modules_do_not_import_django():
    code = (
        "import sys; import palmsweb; before = set(sys.modules);"
        "import palmsweb.lib.stats, palmsweb.lib.toxicity;"
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] == 'django'))"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
