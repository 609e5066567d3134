"""palmsweb.lib.clustered: prompt-level paired comparisons, checked against scipy."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from scipy import stats as sps

from palmsweb.lib import clustered, stats
from palmsweb.lib.design import StudyDesign
from palmsweb.lib.ratings import RatingTable
from palmsweb.lib.simulate import simulate_study

VT, BASE, CONTROL = ("values_targeted", ""), ("base", ""), ("control", "")


def table_from_prompt_means(means: dict[str, dict[str, list[float]]], category="Health"):
    """{prompt: {arm: [rating of each output]}}: one rater per output, so an output's
    mean is its single rating."""
    rows = []
    for prompt, arms in means.items():
        for arm, scores in arms.items():
            for s, score in enumerate(scores):
                rows.append(
                    dict(
                        output_id=f"{prompt}-{arm}-{s}",
                        prompt_id=prompt,
                        arm=arm,
                        category=category,
                        size_tag="",
                        sample_index=s,
                        rater="R1",
                        score=score,
                    )
                )
    return rows


SIX = {
    "p1": {"values_targeted": [5, 4, 4], "base": [3, 3, 2]},
    "p2": {"values_targeted": [4, 4, 3], "base": [4, 3, 3]},
    "p3": {"values_targeted": [3, 2, 3], "base": [2, 2, 1]},
    "p4": {"values_targeted": [5, 5, 4], "base": [4, 5, 4]},
    "p5": {"values_targeted": [2, 3, 2], "base": [3, 2, 2]},
    "p6": {"values_targeted": [4, 5, 5], "base": [2, 3, 3]},
}


@pytest.fixture(scope="module")
def study():
    """A simulated PALMS-sized study with a real effect in some categories."""
    effects = {"values_targeted": [0.0, 0.5, 1.5, 0.5, 0.0, 0.5, 1.0, 0.5]}
    return RatingTable(simulate_study(effects=effects, seed=11))


def test_paired_comparison_matches_scipy_on_prompt_means():
    table = RatingTable(table_from_prompt_means(SIX))
    c = clustered.compare_paired(table, VT, BASE, "Health", n_resamples=2000, seed=1)
    x = np.array([np.mean(SIX[p]["values_targeted"]) for p in sorted(SIX)])
    y = np.array([np.mean(SIX[p]["base"]) for p in sorted(SIX)])
    t = sps.ttest_rel(x, y)
    w = sps.wilcoxon(x - y)
    assert c.status == "tested" and c.n_prompts == 6 and c.n_unpaired == 0
    assert c.mean_diff == pytest.approx(np.mean(x - y))
    assert (c.t, c.df, c.p) == pytest.approx((t.statistic, 5, t.pvalue))
    assert (c.t_ci_low, c.t_ci_high) == pytest.approx(tuple(t.confidence_interval(0.95)))
    assert (c.wilcoxon_w, c.wilcoxon_p) == pytest.approx((w.statistic, w.pvalue))
    assert c.dz == pytest.approx(np.mean(x - y) / np.std(x - y, ddof=1))
    # The per-output numbers ride along as description.
    assert (c.n_outputs_a, c.n_outputs_b) == (18, 18)
    assert c.output_mean_a == pytest.approx(
        np.mean([v for p in SIX.values() for v in p["values_targeted"]])
    )


def test_cluster_bootstrap_resamples_prompts_with_scipy_bca():
    table = RatingTable(table_from_prompt_means(SIX))
    c = clustered.compare_paired(table, VT, BASE, "Health", n_resamples=2000, seed=4)
    d = np.array(
        [np.mean(SIX[p]["values_targeted"]) - np.mean(SIX[p]["base"]) for p in sorted(SIX)]
    )
    expected = sps.bootstrap(
        (d,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(4)
    ).confidence_interval
    assert c.ci_method == "BCa"
    assert (c.ci_low, c.ci_high) == pytest.approx((expected.low, expected.high))


def test_samples_of_a_prompt_are_not_counted_as_independent():
    # Same outputs, but the per-output Welch test sees 18 vs 18 values and the paired
    # test 6 prompts: the paired test's n is the number of prompts.
    table = RatingTable(table_from_prompt_means(SIX))
    c = clustered.compare_paired(table, VT, BASE, "Health", n_resamples=0)
    assert c.df == 5
    old = stats.compare(
        [v for p in SIX.values() for v in p["values_targeted"]],
        [v for p in SIX.values() for v in p["base"]],
        n_resamples=200,
    )
    assert old.welch_df > 30


def test_fewer_than_five_prompts_get_a_test_but_no_interval():
    four = {p: SIX[p] for p in ["p1", "p2", "p3", "p4"]}
    c = clustered.compare_paired(RatingTable(table_from_prompt_means(four)), VT, BASE, "Health")
    assert c.status == "tested" and c.p is not None
    assert (c.ci_low, c.ci_high, c.ci_method) == (None, None, None)
    assert any("n = 4" in note for note in c.notes)


def test_zero_variance_separation_is_its_own_status_not_a_weak_or_failed_test():
    separated = {f"p{i}": {"values_targeted": [5, 5], "base": [3, 3]} for i in range(5)}
    c = clustered.compare_paired(
        RatingTable(table_from_prompt_means(separated)), VT, BASE, "Health"
    )
    assert c.status == "separated" and c.mean_diff == 2.0 and c.sd_diff == 0.0
    assert c.p is None and c.ci_low is None
    assert c.verdict() == "separated_higher"
    assert c.wilcoxon_p == pytest.approx(0.0625)  # 5 pairs, all positive: exact 2/32
    assert "+2.00" in c.notes[-1]


def test_identical_and_too_few_prompts():
    same = {f"p{i}": {"values_targeted": [3], "base": [3]} for i in range(5)}
    c = clustered.compare_paired(RatingTable(table_from_prompt_means(same)), VT, BASE, "Health")
    assert (c.status, c.verdict(), c.wilcoxon_p) == ("identical", "identical", None)
    one = {"p1": {"values_targeted": [4], "base": [2]}, "p2": {"base": [3]}}
    c = clustered.compare_paired(RatingTable(table_from_prompt_means(one)), VT, BASE, "Health")
    assert (c.status, c.n_prompts, c.n_unpaired, c.mean_diff) == ("too_few", 1, 1, 2.0)
    assert c.verdict() == "too_few"


def test_family_is_holm_adjusted_and_verdicts_follow_the_adjusted_p(study):
    fam = clustered.compare_family(study, VT, BASE, n_resamples=500, seed=2)
    assert [r.category for r in fam.rows] == list(range(8))
    expected = stats.holm({i: r.p for i, r in enumerate(fam.rows)})
    assert [r.p_holm for r in fam.rows] == [expected[i] for i in range(8)]
    expected_w = stats.holm({i: r.wilcoxon_p for i, r in enumerate(fam.rows)})
    assert [r.wilcoxon_p_holm for r in fam.rows] == [expected_w[i] for i in range(8)]
    for r in fam.rows:
        significant = r.p_holm < 0.05
        assert r.verdict() == (
            "better"
            if significant and r.mean_diff > 0
            else "worse"
            if significant
            else "not_significant"
        )
    assert fam.count("better") + fam.count("not_significant") + fam.count("worse") == 8
    # The overall row pools the 40 prompts and is not adjusted.
    assert fam.overall.n_prompts == 40 and fam.overall.p_holm is None
    assert fam.overall.ci_method == clustered.STRATIFIED


def test_overall_interval_resamples_prompts_within_categories(study):
    c = clustered.compare_paired(study, VT, BASE, None, n_resamples=4000, seed=3)
    prompts, xa, xb, _ = study.paired(VT, BASE)
    d = np.subtract(xa, xb)
    # Stratified by category the bootstrap SE is the within-category SE of the mean.
    cats = np.array([study.prompt_category[p] for p in prompts])
    within = np.sqrt(sum(np.var(d[cats == k]) * (cats == k).sum() for k in range(8))) / d.size
    half = (c.ci_high - c.ci_low) / 2
    assert half == pytest.approx(1.96 * within, rel=0.1)
    assert c.ci_low < c.mean_diff < c.ci_high


def test_results_do_not_depend_on_row_order(study):
    rows = list(study.rows)
    random.Random(5).shuffle(rows)
    shuffled = RatingTable(rows)
    a = clustered.compare_family(study, VT, CONTROL, n_resamples=300, seed=9)
    b = clustered.compare_family(shuffled, VT, CONTROL, n_resamples=300, seed=9)
    assert dataclasses.asdict(a) == dataclasses.asdict(b)


def test_cell_summary_is_prompt_level_with_per_output_description(study):
    cell = clustered.describe_cell(study, VT, 2, n_resamples=500, seed=1)
    prompts = study.prompts(2)
    values = [study.prompt_means[(p, VT)] for p in prompts]
    assert (cell.n_prompts, cell.n_outputs, cell.n_ratings) == (5, 15, 45)
    assert cell.mean == pytest.approx(np.mean(values))
    assert cell.sd == pytest.approx(np.std(values, ddof=1))
    assert cell.ci_method in ("BCa", "percentile") and cell.ci_low <= cell.mean <= cell.ci_high
    assert cell.output_mean == pytest.approx(cell.mean)  # balanced: same mean, other n
    overall = clustered.describe_cell(study, VT, None, n_resamples=500, seed=1)
    assert overall.n_prompts == 40 and overall.ci_method == clustered.STRATIFIED


def test_cell_with_too_few_prompts_shows_n_and_no_interval():
    four = {p: SIX[p] for p in ["p1", "p2", "p3"]}
    cell = clustered.describe_cell(RatingTable(table_from_prompt_means(four)), VT, "Health")
    assert cell.n_prompts == 3 and cell.ci_low is None and "n = 3" in cell.notes[0]


# --------------------------------------------------------------------------- size trend


@pytest.fixture(scope="module")
def sized():
    design = StudyDesign(
        categories=6,
        arms=("base@S", "values_targeted@S", "base@L", "values_targeted@L"),
    )
    effects = {"values_targeted@S": 0.0, "values_targeted@L": 1.0}
    return RatingTable(simulate_study(design, effects=effects, seed=2))


def test_two_size_trend_is_the_paired_t_of_the_difference_of_differences(sized):
    trend = clustered.size_trend(sized, sizes=["S", "L"])
    small, large = {}, {}
    for p in sized.prompts():
        m = sized.prompt_means
        small[p] = m[(p, ("values_targeted", "S"))] - m[(p, ("base", "S"))]
        large[p] = m[(p, ("values_targeted", "L"))] - m[(p, ("base", "L"))]
    prompts = sorted(small)
    expected = sps.ttest_rel([large[p] for p in prompts], [small[p] for p in prompts])
    assert trend.status == "tested" and trend.n_prompts == 30
    assert (trend.t, trend.p) == pytest.approx((expected.statistic, expected.pvalue))
    assert trend.slope == pytest.approx(np.mean([large[p] - small[p] for p in prompts]))
    assert trend.mean_diffs == pytest.approx(
        (np.mean(list(small.values())), np.mean(list(large.values())))
    )
    assert trend.verdict() == "grows"


def test_three_sizes_use_per_prompt_slopes_on_the_given_positions():
    design = StudyDesign(
        categories=2,
        arms=tuple(f"{a}@{s}" for s in ("1", "2", "3") for a in ("base", "values_targeted")),
    )
    table = RatingTable(simulate_study(design, seed=4))  # no effect anywhere
    x = [0.0, 1.0, 3.0]
    trend = clustered.size_trend(table, sizes=["1", "2", "3"], x=x)
    slopes = []
    for p in table.prompts():
        m = table.prompt_means
        d = [m[(p, ("values_targeted", s))] - m[(p, ("base", s))] for s in "123"]
        slopes.append(np.polyfit(x, d, 1)[0])
    expected = sps.ttest_1samp(slopes, 0.0)
    assert trend.slope == pytest.approx(np.mean(slopes))
    assert trend.p == pytest.approx(expected.pvalue)
    assert trend.x == (0.0, 1.0, 3.0)


def test_a_single_size_has_no_trend_test(study):
    trend = clustered.size_trend(study)
    assert trend.status == "too_few" and trend.p is None and trend.verdict() == "too_few"
    with pytest.raises(ValueError, match="one position per size"):
        clustered.size_trend(study, sizes=["", "x"], x=[1.0])
