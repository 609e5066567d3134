"""palmsweb.lib.power: analytic power against the noncentral t and against simulation,
the planner's searches, and the variance components estimated from ratings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from palmsweb.lib import power
from palmsweb.lib.design import DEFAULT_COMPONENTS, StudyDesign, VarianceComponents
from palmsweb.lib.ratings import RatingTable
from palmsweb.lib.simulate import rejection_rates, simulate_study

VT, BASE = ("values_targeted", ""), ("base", "")


def noncentral_t_power(effect, sd, n, alpha):
    """Power of the two-sided one-sample t by hand from scipy's noncentral t."""
    df, nc = n - 1, effect / sd * math.sqrt(n)
    crit = sps.t.ppf(1 - alpha / 2, df)
    return sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc)


@pytest.mark.parametrize(
    ("effect", "sd", "n", "alpha"),
    [(0.5, 0.76, 5, 0.05), (0.3, 1.1, 40, 0.05), (1.0, 0.8, 12, 0.00625)],
)
def test_paired_power_is_the_noncentral_t(effect, sd, n, alpha):
    got = power.paired_power(effect, sd=sd, n_prompts=n, alpha=alpha)
    assert got == pytest.approx(noncentral_t_power(effect, sd, n, alpha), rel=1e-6)


def test_minimum_detectable_effect_inverts_power():
    mde = power.paired_mde(sd=0.7, n_prompts=8, alpha=0.05, power=0.8)
    assert power.paired_power(mde, sd=0.7, n_prompts=8) == pytest.approx(0.8, abs=1e-6)
    assert power.paired_power(0.5, sd=0.0, n_prompts=8) is None
    assert power.paired_mde(sd=0.7, n_prompts=1) is None


def test_palms_plan_with_the_default_prior():
    plan = power.plan_study()
    sd = math.sqrt(DEFAULT_COMPONENTS.paired_difference_variance(3, 3))
    assert plan.sd_difference == pytest.approx(sd)
    assert plan.per_category_power == pytest.approx(noncentral_t_power(0.5, sd, 5, 0.05 / 8))
    assert plan.per_category_power_unadjusted == pytest.approx(noncentral_t_power(0.5, sd, 5, 0.05))
    assert plan.overall_power == pytest.approx(noncentral_t_power(0.5, sd, 40, 0.05))
    # 5 prompts per category cannot show 0.5 points in one category; 40 prompts overall can.
    assert plan.per_category_power < 0.1 and plan.overall_power > 0.95
    n = plan.prompts_per_category_for_target
    assert (
        noncentral_t_power(0.5, sd, n, 0.05 / 8)
        >= 0.8
        > noncentral_t_power(0.5, sd, n - 1, 0.05 / 8)
    )
    # More samples or raters cannot remove the prompt×arm variance: no number reaches 80%.
    assert plan.samples_for_target is None and plan.raters_for_target is None
    assert plan.overall_prompts_per_category_for_target <= 5
    assert plan.per_category_mde > 1.0 and plan.overall_mde < 0.5


def test_plan_finds_samples_and_raters_when_they_can_reach_the_target():
    comps = VarianceComponents(prompt=0.2, prompt_arm=0.0, output=0.6, rater=0.0, residual=1.5)
    plan = power.plan_study(
        effect=1.0, components=comps, design=StudyDesign(prompts_per_category=10)
    )
    s, k = plan.samples_for_target, plan.raters_for_target
    assert s is not None and k is not None

    def cat(samples, raters):
        sd = math.sqrt(comps.paired_difference_variance(samples, raters))
        return noncentral_t_power(1.0, sd, 10, 0.05 / 8)

    assert cat(s, 3) >= 0.8 and (s == 1 or cat(s - 1, 3) < 0.8)
    assert cat(3, k) >= 0.8 and (k == 1 or cat(3, k - 1) < 0.8)


def test_plan_refuses_nonsense():
    with pytest.raises(ValueError, match="positive"):
        power.plan_study(effect=0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        power.plan_study(alpha=1.5)
    with pytest.raises(ValueError):
        VarianceComponents(prompt=-1)
    with pytest.raises(ValueError):
        StudyDesign(prompts_per_category=0)


def test_analytic_power_agrees_with_simulation_of_normal_ratings():
    comps = VarianceComponents(0.2, 0.1, 0.35, 0.05, 0.6)
    design = StudyDesign(prompts_per_category=8, arms=("base", "values_targeted"))
    sim = rejection_rates(design, comps, effect=0.6, n_studies=2000, seed=5, discrete=False)
    sd = math.sqrt(comps.paired_difference_variance(3, 3))
    # Rater offsets shared by both arms cancel in the simulation (3 raters rate all), so
    # the analytic SD, which counts them as noise, is slightly conservative.
    analytic = noncentral_t_power(0.6, sd, 8, 0.05)
    mc_se = math.sqrt(analytic * (1 - analytic) / sim.n_category_tests)
    assert sim.paired == pytest.approx(analytic, abs=max(6 * mc_se, 0.02))


def test_plan_with_simulation_reports_the_discrete_scale_power():
    plan = power.plan_study(simulations=400, seed=1)
    assert plan.simulations == 400 and "simulated" in plan.method
    assert plan.simulated_overall_power == pytest.approx(plan.overall_power, abs=0.05)
    assert plan.simulated_per_category_power == pytest.approx(plan.per_category_power, abs=0.05)


# --------------------------------------------------------------------------- estimates


@pytest.mark.parametrize("seed", [1, 2])
def test_components_are_recovered_from_a_large_simulated_study(seed):
    truth = VarianceComponents(0.25, 0.12, 0.3, 0.0, 0.6)
    # 800 prompts: the standard error of the prompt estimate is about 0.018, of the
    # prompt×arm one about 0.012, so ±0.06 is more than 3 standard errors.
    design = StudyDesign(prompts_per_category=100)
    rows = simulate_study(design, truth, seed=seed, discrete=False)
    est = power.estimate_components(RatingTable(rows, scale=(-99, 99)))
    got = est.components
    assert (est.n_prompts, est.samples_per_prompt, est.raters_per_output) == pytest.approx(
        (800, 3, 3)
    )
    for name in ("prompt", "prompt_arm", "output"):
        assert getattr(got, name) == pytest.approx(getattr(truth, name), abs=0.06), name
    assert got.rater + got.residual == pytest.approx(0.6, rel=0.06)
    assert got.paired_difference_variance(3, 3) == pytest.approx(
        truth.paired_difference_variance(3, 3), rel=0.15
    )


def test_estimates_are_never_negative_and_the_icc_is_reported():
    rows = simulate_study(StudyDesign(categories=2), VarianceComponents(0, 0, 0, 0, 1), seed=3)
    est = power.estimate_components(RatingTable(rows))
    assert all(v >= 0 for v in est.components.as_dict().values())
    assert est.intra_prompt_correlation is not None and 0 <= est.intra_prompt_correlation < 0.2


def test_achieved_power_uses_the_pooled_sd_of_prompt_differences():
    table = RatingTable(simulate_study(effects={"values_targeted": 0.5}, seed=6))
    ach = power.achieved_power(table, VT, BASE)
    diffs = []
    for c in table.categories:
        _, a, b, _ = table.paired(VT, BASE, c)
        diffs.append(np.subtract(a, b))
    pooled = math.sqrt(
        sum(((d - d.mean()) ** 2).sum() for d in diffs) / sum(d.size - 1 for d in diffs)
    )
    assert ach.sd_difference == pytest.approx(pooled) and ach.df == 32
    assert [c.n_prompts for c in ach.per_category] == [5] * 8
    assert ach.per_category[0].power == pytest.approx(noncentral_t_power(0.5, pooled, 5, 0.05 / 8))
    assert ach.overall_power == pytest.approx(noncentral_t_power(0.5, pooled, 40, 0.05))
    assert power.paired_power(ach.overall_mde, sd=pooled, n_prompts=40) == pytest.approx(
        0.8, abs=1e-6
    )
