"""palmsweb.lib.mixed: the overall mixed model, its contrasts and its fallback."""

from __future__ import annotations

import numpy as np
import pytest

from palmsweb.lib import clustered, mixed
from palmsweb.lib.design import StudyDesign, VarianceComponents
from palmsweb.lib.ratings import RatingTable
from palmsweb.lib.simulate import simulate_study

VT, BASE, CONTROL = ("values_targeted", ""), ("base", ""), ("control", "")


@pytest.fixture(scope="module")
def study():
    rows = simulate_study(effects={"values_targeted": 0.5, "control": 0.1}, seed=3)
    return RatingTable(rows)


@pytest.fixture(scope="module")
def fit(study):
    return mixed.fit_mixed(study, [(VT, BASE), (VT, CONTROL)])


def test_balanced_contrast_equals_the_mean_prompt_difference(study, fit):
    assert fit.method == mixed.MIXEDLM and not fit.fell_back and fit.converged
    assert fit.rater_effects == "fixed" and "C(rater, Sum)" in fit.formula
    for a, b in [(VT, BASE), (VT, CONTROL)]:
        _, xa, xb, _ = study.paired(a, b)
        c = fit.contrast(a, b)
        # Balanced data: the GLS estimate of the category-averaged arm effect is the
        # plain mean of the prompt differences.
        assert c.estimate == pytest.approx(np.mean(np.subtract(xa, xb)), abs=1e-8)
        assert c.ci_low < c.estimate < c.ci_high
        assert c.estimate / c.se == pytest.approx(c.statistic)


def test_its_standard_error_is_the_prompt_level_one_not_the_rating_level_one(study, fit):
    paired = clustered.compare_paired(study, VT, BASE, None, n_resamples=0)
    paired_se = paired.sd_diff / np.sqrt(paired.n_prompts)
    assert fit.contrast(VT, BASE).se == pytest.approx(paired_se, rel=0.2)
    # Treating the 1,080 ratings as independent (and unpaired) gives a smaller SE.
    scores = {
        arm: [r.score for r in study.rows if (r.arm, r.size_tag) == arm] for arm in (VT, BASE)
    }
    naive = np.sqrt(np.var(scores[VT], ddof=1) / 360 + np.var(scores[BASE], ddof=1) / 360)
    assert fit.contrast(VT, BASE).se > 1.15 * naive


def test_variance_components_and_rater_offsets_are_reported(study, fit):
    assert set(fit.variance) == {"prompt", "prompt_arm", "output", "residual"}
    assert all(v >= 0 for v in fit.variance.values())
    assert set(fit.rater_offsets) == set(study.raters)
    assert sum(fit.rater_offsets.values()) == pytest.approx(0.0, abs=1e-9)
    # Sum-coded fixed offsets are the raters' mean deviations in a fully crossed design.
    overall = np.mean([r.score for r in study.rows])
    for rater, offset in fit.rater_offsets.items():
        mine = np.mean([r.score for r in study.rows if r.rater == rater])
        assert offset == pytest.approx(mine - overall, abs=1e-6)
    assert fit.rater_offset_kind == "fixed effect"


def test_random_rater_intercepts_give_about_the_same_contrast_and_blups():
    # 6 raters, 3 per output: fixed offsets and shrunken random ones adjust a little
    # differently, so the contrasts agree closely but not exactly.
    design = StudyDesign(categories=2, prompts_per_category=4, samples_per_prompt=2, rater_pool=6)
    table = RatingTable(simulate_study(design, effects={"values_targeted": 0.5}, seed=0))
    fixed = mixed.fit_mixed(table, [(VT, BASE)])
    random_ = mixed.fit_mixed(table, [(VT, BASE)], rater_effects="random")
    assert random_.rater_effects == "random" and not random_.fell_back
    assert "rater" in random_.variance and "C(rater" not in random_.formula
    assert random_.contrast(VT, BASE).estimate == pytest.approx(
        fixed.contrast(VT, BASE).estimate, abs=0.05
    )
    assert random_.contrast(VT, BASE).se == pytest.approx(fixed.contrast(VT, BASE).se, rel=0.05)
    assert random_.rater_offset_kind == "BLUP" and set(random_.rater_offsets) == set(table.raters)
    # BLUPs shrink towards 0 compared with the fixed offsets.
    spread = np.ptp(list(random_.rater_offsets.values()))
    assert spread <= np.ptp(list(fixed.rater_offsets.values())) + 1e-9


def test_a_variance_at_zero_is_reported_as_a_singular_fit_and_kept():
    # No prompt×arm or output variance at all: REML puts them on the boundary.
    comps = VarianceComponents(0.2, 0.0, 0.0, 0.05, 0.6)
    rows = simulate_study(StudyDesign(categories=2), comps, seed=4, discrete=False)
    fit = mixed.fit_mixed(RatingTable(rows, scale=(-99, 99)), [(VT, BASE)])
    assert not fit.fell_back
    assert "prompt_arm" in fit.singular
    assert any("singular fit" in n for n in fit.notes)


def test_a_model_that_cannot_be_fitted_falls_back_to_the_paired_t():
    # A category without base outputs makes arm × category rank-deficient.
    rows = simulate_study(StudyDesign(categories=3), effects={"values_targeted": 0.5}, seed=5)
    rows = [r for r in rows if not (r.category == 1 and r.arm == "base")]
    table = RatingTable(rows)
    fit = mixed.fit_mixed(table, [(VT, BASE)])
    assert fit.fell_back and fit.method == mixed.FALLBACK
    paired = clustered.compare_paired(table, VT, BASE, None, n_resamples=0)
    c = fit.contrast(VT, BASE)
    assert (c.estimate, c.p, c.ci_low, c.ci_high) == (
        paired.mean_diff,
        paired.p,
        paired.t_ci_low,
        paired.t_ci_high,
    )
    assert c.method == mixed.FALLBACK and "paired t on all prompts" in fit.notes[0]


def test_non_convergence_falls_back_and_says_so(monkeypatch):
    real = mixed._fit

    def stalls(frame, formula, effects, method):
        result, messages = real(frame, formula, effects, method)
        result.converged = False
        return result, messages

    monkeypatch.setattr(mixed, "_fit", stalls)
    table = RatingTable(simulate_study(StudyDesign(categories=2), seed=1))
    fit = mixed.fit_mixed(table, [(VT, BASE)])
    assert fit.fell_back and fit.converged is False
    assert "did not converge" in fit.notes[0]


def test_unknown_arms_and_options_are_refused(study):
    with pytest.raises(ValueError, match="no ratings for arm"):
        mixed.fit_mixed(study, [(VT, ("base", "7B"))])
    with pytest.raises(ValueError, match="rater_effects"):
        mixed.fit_mixed(study, [(VT, BASE)], rater_effects="crossed")
