"""The simulation proof (issue 15): the primary prompt-level test keeps its false-positive
rate at 5% under realistic clustering, finds a real effect, and the old per-output Welch
test does not keep its rate.

Monte Carlo error: each rate below is over N_STUDIES = 2,000 simulated studies × 8
categories = 16,000 category tests (categories share no prompt, so the tests are
independent), so the standard error of a rate near 0.05 is √(0.05·0.95/16,000) ≈ 0.0017;
the [0.03, 0.07] band is ±12 standard errors. The overall and family-wise rates are per
study (2,000): standard error ≈ 0.0049, band ±4 standard errors. Each run takes well
under a second.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from palmsweb.lib import clustered, stats
from palmsweb.lib.design import DEFAULT_COMPONENTS, StudyDesign, VarianceComponents
from palmsweb.lib.ratings import RatingTable
from palmsweb.lib.simulate import (
    STRUCTURES,
    rejection_rates,
    simulate_scores,
    simulate_study,
    study_pvalues,
)

N_STUDIES = 2_000
LOW, HIGH = 0.03, 0.07


def test_default_prior_has_the_measured_intra_prompt_correlation():
    assert 0.30 <= DEFAULT_COMPONENTS.intra_prompt_correlation(3) <= 0.39


@pytest.mark.parametrize(("name", "components"), STRUCTURES, ids=[s[0] for s in STRUCTURES])
def test_primary_test_keeps_its_false_positive_rate_under_the_null(name, components):
    r = rejection_rates(components=components, n_studies=N_STUDIES, seed=1)
    assert r.n_category_tests == 16_000
    assert r.paired_se == pytest.approx(math.sqrt(r.paired * (1 - r.paired) / 16_000))
    assert LOW <= r.paired <= HIGH, name
    assert LOW <= r.paired_overall <= HIGH, name
    assert r.paired_familywise <= HIGH, name  # Holm keeps the family at ≤ 5%


def test_the_old_unpaired_per_output_welch_test_does_not_keep_its_rate():
    structures = dict(STRUCTURES)
    # Prompt×arm variance makes the 3 samples of a prompt one cluster: Welch counts them
    # as 3 independent outputs and rejects far too often.
    anti = rejection_rates(components=structures["prompt×arm-dominated"], n_studies=N_STUDIES)
    assert anti.welch > 0.10 and anti.welch_familywise > 0.15
    # Prompt variance shared by both arms: unpaired, Welch ignores the pairing and
    # rejects too rarely (and loses power).
    conservative = rejection_rates(components=structures["prompt-dominated"], n_studies=N_STUDIES)
    assert conservative.welch < 0.025
    assert LOW <= anti.paired <= HIGH and LOW <= conservative.paired <= HIGH


def test_a_real_effect_is_found():
    r = rejection_rates(effect=0.5, n_studies=N_STUDIES, seed=2)
    assert r.paired_overall >= 0.95  # over 40 prompts
    assert r.paired > 0.15  # per category, 5 prompts: low, which the planner says


def test_vectorised_tests_are_the_ones_the_analysis_and_the_old_report_run():
    design = StudyDesign(categories=3)
    sim = simulate_scores(design, n_studies=4, seed=8, effects={"values_targeted": 0.3})
    p = study_pvalues(sim, "values_targeted", "base")
    for study in range(4):
        for c in range(3):
            vt = sim.output_means("values_targeted")[study, c]
            base = sim.output_means("base")[study, c]
            old = stats.compare(list(vt), list(base), n_resamples=100)
            assert p["welch"][study, c] == pytest.approx(old.welch_p)
    # And the paired p-values equal compare_paired on the same study as tidy rows.
    table = RatingTable(simulate_study(design, seed=8, effects={"values_targeted": 0.3}))
    single = study_pvalues(
        simulate_scores(design, seed=8, effects={"values_targeted": 0.3}),
        "values_targeted",
        "base",
    )
    for c in range(3):
        row = clustered.compare_paired(
            table, ("values_targeted", ""), ("base", ""), c, n_resamples=0
        )
        assert row.p == pytest.approx(single["paired"][0, c])


def test_simulation_is_seeded_and_shaped_like_the_design():
    design = StudyDesign(categories=2, prompts_per_category=4, rater_pool=5)
    a = simulate_scores(design, n_studies=3, seed=4)
    b = simulate_scores(design, n_studies=3, seed=4)
    assert a.scores.shape == (3, 2, 4, 3, 3, 3)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert set(np.unique(a.scores)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    # Each output gets 3 distinct raters from the pool of 5.
    assert (np.sort(a.raters, axis=-1)[..., 1:] != np.sort(a.raters, axis=-1)[..., :-1]).all()
    assert a.raters.max() == 4
    rows = simulate_study(design, seed=4)
    assert len(rows) == 2 * 4 * 3 * 3 * 3
    assert len(RatingTable(rows).raters) == 5


def test_continuous_simulation_recovers_the_effect_and_variance():
    comps = VarianceComponents(0.2, 0.1, 0.3, 0.0, 0.6)
    sim = simulate_scores(
        StudyDesign(), comps, effects={"values_targeted": 0.5}, n_studies=400, discrete=False
    )
    d = sim.prompt_means("values_targeted") - sim.prompt_means("base")
    assert d.mean() == pytest.approx(0.5, abs=0.02)
    assert d.var() == pytest.approx(comps.paired_difference_variance(3, 3), rel=0.05)
