"""palmsweb.lib.analysis + palmsweb.lib.verdict: the whole analysis in one call, and a
summary that says only what the tests support."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from palmsweb.lib import analysis, verdict
from palmsweb.lib.design import StudyDesign
from palmsweb.lib.ratings import RatingRow, RatingTable
from palmsweb.lib.simulate import simulate_study

NAMES = {
    i: name for i, name in enumerate(["Abuse", "Health", "Injustice", "Politics", "Sex", "Terror"])
}
FAST = dict(n_resamples=300, alpha_resamples=50, mixed_model=False)


def separated(rows: list[RatingRow], category: int) -> list[RatingRow]:
    """In ``category`` every targeted rating is 5 and every base rating 3."""
    score = {"values_targeted": 5.0, "base": 3.0}
    return [
        dataclasses.replace(r, score=score[r.arm])
        if r.category == category and r.arm in score
        else r
        for r in rows
    ]


@pytest.fixture(scope="module")
def study():
    design = StudyDesign(categories=6)
    effects = {"values_targeted": [0.0, 2.0, 0.3, 0.0, 0.3, 0.0]}
    rows = separated(simulate_study(design, effects=effects, seed=12), category=0)
    return RatingTable(rows)


@pytest.fixture(scope="module")
def result(study):
    return analysis.analyse_study(study, seed=3, **FAST)


@pytest.fixture(scope="module")
def bullets(result):
    return verdict.summary_bullets(result, category_names=NAMES)


def test_analysis_holds_every_part_and_serialises_without_nan(result):
    assert (result.n_ratings, result.n_outputs, result.n_prompts, result.n_raters) == (
        810,
        270,
        30,
        3,
    )
    assert [(f.a, f.b) for f in result.families] == [
        (("values_targeted", ""), ("base", "")),
        (("values_targeted", ""), ("control", "")),
    ]
    assert len(result.cells) == 3 * 6 + 3
    assert len(result.achieved) == 2 and result.size_trends == () and result.mixed is None
    text = json.dumps(dataclasses.asdict(result), default=str)
    assert "NaN" not in text and "Infinity" not in text


def test_analysis_does_not_depend_on_row_order(study, result):
    rows = list(study.rows)
    random.Random(4).shuffle(rows)
    again = analysis.analyse_study(RatingTable(rows), seed=3, **FAST)
    assert dataclasses.asdict(again) == dataclasses.asdict(result)


def test_better_means_holm_significant_never_a_point_estimate(result, bullets):
    fam = result.family("base")
    line = next(b for b in bullets if b.startswith("Values-targeted vs base:"))
    better = fam.categories_with("better")
    assert f"better in {len(better)} (" in line or (not better and "better in 0 of 6" in line)
    for c in better:
        assert NAMES[c] in line.split(";")[0]
    # Point estimates above base that are not significant are not counted anywhere.
    above = [r for r in fam.rows if r.mean_diff > 0 and r.verdict() == "not_significant"]
    assert above and f"not significant in {fam.count('not_significant')}" in line
    assert "beats" not in " ".join(bullets)


def test_perfect_separation_is_reported_as_such_not_as_weak(result, bullets):
    fam = result.family("base")
    assert fam.rows[0].verdict() == "separated_higher"
    line = next(b for b in bullets if b.startswith("Values-targeted vs base:"))
    assert (
        "perfectly separated, higher, with no variance to test, in 1 (Abuse: every prompt +2.00)"
        in line
    )
    assert "weak" not in " ".join(bullets).lower()


def test_interval_method_and_wilcoxon_limit_are_named(result, bullets):
    # The targeted cell of the separated category is constant: BCa is undefined there.
    cell = next(c for c in result.cells if c.category == 0 and c.arm == "values_targeted")
    assert cell.ci_method == "percentile"
    line = next(b for b in bullets if b.startswith("Intervals:"))
    assert "BCa (percentile where BCa was undefined: Abuse)" in line
    assert "over all categories, percentile, resampling prompts within each category" in line
    assert any("smallest two-sided p is 0.0625" in b for b in bullets)


def test_power_and_overall_lines(result, bullets):
    assert any(b.startswith("Power to detect a 0.50-point difference") for b in bullets)
    overall = next(
        b for b in bullets if b.startswith("Over all categories (Values-targeted vs base)")
    )
    assert "by the paired t on 30 prompt means" in overall  # mixed model switched off here


def test_no_interval_below_five_prompts_and_n_is_shown():
    rows = simulate_study(StudyDesign(categories=2, prompts_per_category=3), seed=1)
    res = analysis.analyse_study(RatingTable(rows), **FAST)
    assert all(r.ci_low is None for f in res.families for r in f.rows)
    lines = verdict.summary_bullets(res, category_names={0: "Abuse", 1: "Health"})
    assert "No interval where fewer than 5 prompts: Abuse (n = 3), Health (n = 3)." in lines


def test_a_size_trend_is_claimed_only_with_its_test():
    design = StudyDesign(
        categories=4, arms=("base@1B", "values_targeted@1B", "base@7B", "values_targeted@7B")
    )
    # The point estimates grow with size, but far too little to be told from noise.
    rows = simulate_study(
        design, effects={"values_targeted@1B": 0.1, "values_targeted@7B": 0.15}, seed=3
    )
    res = analysis.analyse_study(RatingTable(rows), sizes=["1B", "7B"], **FAST)
    (trend,) = res.size_trends
    assert trend.verdict() == "no_evidence"
    lines = verdict.summary_bullets(res)
    line = next(b for b in lines if "size" in b and "difference" in b)
    assert line.startswith(
        "No evidence that the Values-targeted − base difference changes with size"
    )
    assert "grows" not in " ".join(lines)
    assert any(b.startswith("Values-targeted vs base at 7B:") for b in lines)


def test_the_mixed_model_line_names_its_method_or_its_fallback():
    rows = simulate_study(StudyDesign(categories=3), effects={"values_targeted": 0.5}, seed=5)
    res = analysis.analyse_study(
        RatingTable(rows), comparators=("base",), n_resamples=100, alpha_resamples=20
    )
    line = next(b for b in verdict.summary_bullets(res) if b.startswith("Over all categories"))
    assert (
        "by a mixed model with random prompt, prompt×arm and output effects and rater offsets"
        in line
    )
    # A category with no base outputs: the model cannot be fitted, the line says so.
    broken = [r for r in rows if not (r.category == 1 and r.arm == "base")]
    res = analysis.analyse_study(
        RatingTable(broken), comparators=("base",), n_resamples=100, alpha_resamples=20
    )
    line = next(b for b in verdict.summary_bullets(res) if b.startswith("Over all categories"))
    assert "by the paired t on 10 prompt means (the mixed model could not be fitted" in line


def test_no_ratings():
    empty = analysis.analyse_study(RatingTable([]), **FAST)
    assert verdict.summary_bullets(empty) == ["No completed ratings yet."]


def test_the_arm_free_summary_names_no_arm(result):
    lines = verdict.summary_bullets(result, category_names=NAMES, arm_free=True)
    assert lines[0].startswith("810 ratings") and lines[1].startswith("Rater agreement")
    text = " ".join(lines).lower()
    assert not any(word in text for word in ("targeted", "base", "control", "better", "power"))
