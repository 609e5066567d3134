"""palmsweb.lib.intervals: α, judge agreement and misalignment rates with intervals that
resample the right cluster."""

from __future__ import annotations

import random

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from palmsweb.lib import intervals, stats
from palmsweb.lib.design import StudyDesign, VarianceComponents
from palmsweb.lib.ratings import RatingTable
from palmsweb.lib.simulate import simulate_study


@pytest.fixture(scope="module")
def study():
    return RatingTable(simulate_study(StudyDesign(categories=4), seed=7))


# --------------------------------------------------------------------------- α


def test_alpha_point_is_krippendorff_over_the_outputs(study):
    a = intervals.alpha_by_prompt(study, n_resamples=200, seed=1)
    matrix = stats.reliability_matrix(
        {"unit": r.output_id, "rater": r.rater, "score": r.score} for r in study.rows
    )
    assert a.alpha == pytest.approx(stats.krippendorff_alpha(matrix))
    assert (a.n_units, a.n_clusters, a.n_resamples) == (180, 20, 200)
    assert a.ci_low < a.alpha < a.ci_high
    assert a.method == intervals.PROMPT_BOOTSTRAP


def test_alpha_interval_is_seeded_and_independent_of_row_order(study):
    rows = list(study.rows)
    random.Random(1).shuffle(rows)
    first = intervals.alpha_by_prompt(study, n_resamples=200, seed=3)
    assert intervals.alpha_by_prompt(RatingTable(rows), n_resamples=200, seed=3) == first
    assert intervals.alpha_by_prompt(study, n_resamples=200, seed=4) != first


def test_resampling_prompts_widens_the_interval_when_outputs_of_a_prompt_agree():
    # Strong prompt effects: the outputs of a prompt are alike, so 180 outputs carry
    # much less information than 180 independent ones.
    comps = VarianceComponents(prompt=1.2, prompt_arm=0.3, output=0.1, rater=0.0, residual=0.4)
    table = RatingTable(simulate_study(StudyDesign(categories=4), comps, seed=2))
    by_prompt = intervals.alpha_by_prompt(table, n_resamples=400, seed=0)
    matrix = stats.reliability_matrix(
        {"unit": r.output_id, "rater": r.rater, "score": r.score} for r in table.rows
    )
    by_output = stats.alpha_bootstrap_ci(matrix, n_resamples=400, seed=0)
    assert by_prompt.alpha == pytest.approx(by_output.alpha)
    width = by_prompt.ci_high - by_prompt.ci_low
    assert width > 1.5 * (by_output.ci_high - by_output.ci_low)


def test_alpha_without_variation_or_with_one_prompt():
    flat = [
        dict(
            output_id=o,
            prompt_id="p1",
            arm="base",
            category=1,
            size_tag="",
            sample_index=o,
            rater=r,
            score=3,
        )
        for o in range(3)
        for r in ("A", "B")
    ]
    a = intervals.alpha_by_prompt(RatingTable(flat))
    assert (a.alpha, a.ci_low, a.n_resamples) == (None, None, 0)


# --------------------------------------------------------------------------- judge


def _judged(study):
    rng = np.random.default_rng(0)
    outputs = study.output_means
    human = [o.mean for o in outputs]
    judge = [float(np.clip(round(h + rng.normal(0, 0.7)), 1, 5)) for h in human]
    return judge, human, [o.prompt_id for o in outputs]


def test_judge_agreement_keeps_the_point_values_and_resamples_prompts(study):
    judge, human, prompts = _judged(study)
    plain = stats.judge_agreement(judge, human, human, n_resamples=500, seed=2)
    clustered = intervals.judge_agreement_by_prompt(
        judge, human, human, prompts, n_resamples=500, seed=2
    )
    for field in ("n", "spearman", "kappa", "mean_abs_diff", "table"):
        assert getattr(clustered, field) == getattr(plain, field)
    assert clustered.spearman_ci_low < clustered.spearman < clustered.spearman_ci_high
    assert clustered.n_resamples == 500


def test_judge_interval_by_prompt_matches_an_explicit_cluster_bootstrap(study):
    judge, human, prompts = _judged(study)
    got = intervals.judge_agreement_by_prompt(judge, human, human, prompts, n_resamples=300, seed=5)
    # The same resampling written out plainly, on the items sorted by prompt.
    order = sorted(range(len(judge)), key=lambda i: (prompts[i], judge[i], human[i]))
    x, y = np.array(judge)[order], np.array(human)[order]
    cl = [prompts[i] for i in order]
    keys = list(dict.fromkeys(cl))
    members = [np.flatnonzero([c == k for c in cl]) for k in keys]
    picks = np.random.default_rng(5).integers(0, len(keys), size=(300, len(keys)))
    draws = [
        stats.spearman_rho(*(v[np.concatenate([members[i] for i in p])] for v in (x, y)))
        for p in picks
    ]
    low, high = np.quantile(draws, [0.025, 0.975])
    assert (got.spearman_ci_low, got.spearman_ci_high) == pytest.approx((low, high))


def test_judge_agreement_is_order_independent_and_checks_lengths(study):
    judge, human, prompts = _judged(study)
    perm = list(range(len(judge)))
    random.Random(2).shuffle(perm)
    shuffled = [[v[i] for i in perm] for v in (judge, human, prompts)]
    a = intervals.judge_agreement_by_prompt(judge, human, human, prompts, n_resamples=200)
    b = intervals.judge_agreement_by_prompt(
        shuffled[0], shuffled[1], shuffled[1], shuffled[2], n_resamples=200
    )
    assert a == b
    with pytest.raises(ValueError, match="same length"):
        intervals.judge_agreement_by_prompt([1], [1], [1], [])


def test_unbalanced_prompts_take_the_loop():
    judge = [1, 2, 3, 4, 5, 4, 2]
    human = [1.3, 2.0, 3.3, 3.7, 4.7, 4.0, 2.3]
    prompts = ["a", "a", "a", "b", "b", "c", "c"]
    got = intervals.judge_agreement_by_prompt(judge, human, human, prompts, n_resamples=200)
    assert got.n_resamples == 200 and got.spearman_ci_low is not None


# --------------------------------------------------------------------------- misalignment


def test_without_clustering_the_interval_is_plain_wilson():
    # Every probe has the same share of misaligned answers: ICC 0 (truncated), deff 1.
    flags = {p: [True, False, False, False, False] for p in range(12)}
    r = intervals.misalignment_rate(flags)
    low, high = proportion_confint(12, 60, method="wilson")
    assert (r.n, r.count, r.rate, r.n_clusters) == (60, 12, 0.2, 12)
    assert r.icc == 0.0 and r.design_effect == 1.0
    assert (r.ci_low, r.ci_high) == pytest.approx((low, high))


def test_answers_that_agree_within_a_probe_count_as_one():
    # Probes are all-or-nothing: ICC 1, so the 60 answers are worth 12.
    flags = {p: [p < 3] * 5 for p in range(12)}
    r = intervals.misalignment_rate(flags)
    assert r.icc == pytest.approx(1.0) and r.design_effect == pytest.approx(5.0)
    assert r.n_effective == pytest.approx(12.0)
    low, high = proportion_confint(3, 12, method="wilson")
    assert (r.ci_low, r.ci_high) == pytest.approx((low, high))


def test_icc_is_the_one_way_anova_estimator():
    flags = {0: [1, 1, 0, 1, 0], 1: [0, 0, 0, 1, 0], 2: [1, 1, 1, 1, 0], 3: [0, 0, 0, 0, 0]}
    groups = [np.array(v, dtype=float) for v in flags.values()]
    grand = np.concatenate(groups).mean()
    msb = sum(5 * (g.mean() - grand) ** 2 for g in groups) / 3
    msw = sum(((g - g.mean()) ** 2).sum() for g in groups) / 16
    expected = (msb - msw) / (msb + 4 * msw)
    r = intervals.misalignment_rate({k: [bool(x) for x in v] for k, v in flags.items()})
    assert r.icc == pytest.approx(expected)
    assert r.design_effect == pytest.approx(1 + 4 * expected)


def test_no_misaligned_answer_still_gets_an_upper_bound():
    r = intervals.misalignment_rate({p: [False] * 5 for p in range(12)})
    assert r.rate == 0.0 and r.ci_low == 0.0 and 0.05 < r.ci_high < 0.07
    assert r.icc is None and "could not be estimated" in r.notes[0]
    empty = intervals.misalignment_rate({})
    assert (empty.n, empty.rate, empty.ci_low) == (0, None, None)


def test_vectorised_alpha_draws_equal_the_package_on_each_resample(study):
    """The report computes 12 α intervals: the resamples are vectorised, and must give
    what ``krippendorff`` gives on each resampled matrix."""
    matrix = stats.reliability_matrix(
        {"unit": r.output_id, "rater": r.rater, "score": r.score} for r in study.rows
    )
    m = matrix.data
    prompt_of = {o.output_id: o.prompt_id for o in study.output_means}
    prompts = sorted({prompt_of[u] for u in matrix.units})
    columns = [np.flatnonzero([prompt_of[u] == p for u in matrix.units]) for p in prompts]
    picks = np.random.default_rng(5).integers(0, len(prompts), size=(40, len(prompts)))
    for level in ("ordinal", "interval"):
        fast = intervals._alpha_draws(m, columns, picks, level)
        slow = [
            stats.krippendorff_alpha(m[:, np.concatenate([columns[i] for i in p])], level)
            for p in picks
        ]
        assert fast == pytest.approx(np.array(slow, dtype=float), abs=1e-12)
