"""Study planning: power of the primary test, the design that reaches it, and the
minimum detectable effect of a finished study.

**Analytic (exact under the model).** The primary per-category test is a paired t on
the prompt means. A prompt's difference between two arms has variance
``2·(prompt×arm + output/S + (rater + residual)/(S·K))`` (S samples per prompt, K raters
per output; :meth:`VarianceComponents.paired_difference_variance`), so the test's power
is the noncentral t's, computed by ``statsmodels.stats.power.TTestPower`` with effect
size d_z = difference / SD and n = prompts. Per category it is given at α/m (m
categories: the first, strictest Holm step, so a lower bound for Holm) and at α. The
overall power is that of the paired t on all prompts (the mixed model's fallback; the
mixed model itself has about the same power when the design is balanced).

**By simulation (where no closed form is exact).** Ratings are integers 1–5, not normal
numbers; :func:`plan_study` with ``simulations > 0`` adds the power found by simulating
the rounded, clipped ratings (:mod:`palmsweb.lib.simulate`).

**Variance components.** A prior (:data:`~palmsweb.lib.design.DEFAULT_COMPONENTS`), or
estimated from a closed study's ratings by :func:`estimate_components`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from palmsweb.lib.design import DEFAULT_COMPONENTS, StudyDesign, VarianceComponents
from palmsweb.lib.ratings import ArmKey, RatingTable

ALPHA = 0.05
TARGET = 0.80
MAX_PROMPTS = 200
MAX_SAMPLES = 50
MAX_RATERS = 20
ANALYTIC = "analytic: noncentral t of the paired t on prompt means (statsmodels TTestPower)"


# --------------------------------------------------------------------------- analytic


def paired_power(effect: float, *, sd: float, n_prompts: int, alpha: float = ALPHA) -> float | None:
    """Power of the two-sided paired t with ``n_prompts`` pairs whose differences have
    SD ``sd``, at a true mean difference ``effect``. None when undefined (n < 2, sd 0)."""
    from statsmodels.stats.power import TTestPower

    if n_prompts < 2 or not sd > 0:
        return None
    value = TTestPower().power(
        effect_size=effect / sd, nobs=n_prompts, alpha=alpha, alternative="two-sided"
    )
    return float(value)


def paired_mde(
    *, sd: float, n_prompts: int, alpha: float = ALPHA, power: float = TARGET
) -> float | None:
    """The smallest true difference the paired t detects with ``power``."""
    from statsmodels.stats.power import TTestPower

    if n_prompts < 2 or not sd > 0:
        return None
    d = TTestPower().solve_power(
        effect_size=None, nobs=n_prompts, alpha=alpha, power=power, alternative="two-sided"
    )
    d = float(np.ravel(d)[0])
    return d * sd if math.isfinite(d) else None


def _smallest(values, reaches) -> int | None:
    """The first value for which ``reaches(value)`` holds (power grows with each)."""
    return next((v for v in values if reaches(v)), None)


@dataclass(frozen=True)
class PowerPlan:
    """Power of a planned design and the smallest designs that reach ``target``.

    ``per_category_power``: one category's paired t at α/m (lower bound under Holm);
    ``per_category_power_unadjusted``: at α. ``*_for_target``: the smallest number of
    prompts per category (other settings as planned), samples per prompt or raters per
    output that gets the per-category power to ``target``; None when no number up to
    the search limit does (more samples or raters cannot remove the prompt×arm
    variance). ``simulated_*``: the same on the discrete 1–5 scale, when simulated."""

    effect: float
    alpha: float
    target: float
    design: dict
    components: dict
    sd_difference: float
    per_category_power: float | None
    per_category_power_unadjusted: float | None
    overall_power: float | None
    per_category_mde: float | None
    overall_mde: float | None
    prompts_per_category_for_target: int | None
    samples_for_target: int | None
    raters_for_target: int | None
    overall_prompts_per_category_for_target: int | None
    method: str = ANALYTIC
    simulated_per_category_power: float | None = None
    simulated_overall_power: float | None = None
    simulations: int = 0
    notes: tuple[str, ...] = ()


def plan_study(
    *,
    effect: float = 0.5,
    components: VarianceComponents = DEFAULT_COMPONENTS,
    design: StudyDesign | None = None,
    alpha: float = ALPHA,
    target: float = TARGET,
    simulations: int = 0,
    seed: int = 0,
) -> PowerPlan:
    """Power of the planned design (default: PALMS, 8 × 5 prompts, 3 samples, 3 raters)
    for a true difference ``effect`` on the 1–5 scale, and what would reach ``target``."""
    design = design or StudyDesign()
    if not effect > 0:
        raise ValueError("the expected difference must be a positive number")
    if not 0 < alpha < 1 or not 0 < target < 1:
        raise ValueError("alpha and target must lie strictly between 0 and 1")
    m, p = design.categories, design.prompts_per_category
    s, k = design.samples_per_prompt, design.raters_per_output
    per_test = alpha / m

    def sd(samples: int, raters: int) -> float:
        return math.sqrt(components.paired_difference_variance(samples, raters))

    def cat_power(prompts: int, samples: int = s, raters: int = k) -> float:
        return paired_power(effect, sd=sd(samples, raters), n_prompts=prompts, alpha=per_test) or 0

    def all_power(prompts: int) -> float:
        return paired_power(effect, sd=sd(s, k), n_prompts=prompts * m, alpha=alpha) or 0

    notes = []
    if sd(s, k) == 0:
        notes.append("the variance components are all zero: power is undefined")
    plan = PowerPlan(
        effect=effect,
        alpha=alpha,
        target=target,
        design=asdict(design),
        components=components.as_dict(),
        sd_difference=sd(s, k),
        per_category_power=paired_power(effect, sd=sd(s, k), n_prompts=p, alpha=per_test),
        per_category_power_unadjusted=paired_power(effect, sd=sd(s, k), n_prompts=p, alpha=alpha),
        overall_power=paired_power(effect, sd=sd(s, k), n_prompts=p * m, alpha=alpha),
        per_category_mde=paired_mde(sd=sd(s, k), n_prompts=p, alpha=per_test, power=target),
        overall_mde=paired_mde(sd=sd(s, k), n_prompts=p * m, alpha=alpha, power=target),
        prompts_per_category_for_target=_smallest(
            range(2, MAX_PROMPTS + 1), lambda n: cat_power(n) >= target
        ),
        samples_for_target=_smallest(
            range(1, MAX_SAMPLES + 1), lambda n: cat_power(p, samples=n) >= target
        ),
        raters_for_target=_smallest(
            range(1, MAX_RATERS + 1), lambda n: cat_power(p, raters=n) >= target
        ),
        overall_prompts_per_category_for_target=_smallest(
            range(1, MAX_PROMPTS + 1), lambda n: n * m >= 2 and all_power(n) >= target
        ),
        notes=tuple(notes),
    )
    if simulations <= 0:
        return plan
    return _with_simulation(plan, design, components, effect, alpha, simulations, seed)


def _with_simulation(plan, design, components, effect, alpha, simulations, seed) -> PowerPlan:
    from dataclasses import replace

    from palmsweb.lib import simulate

    arms = ("base", "values_targeted")
    two_arm = StudyDesign(
        categories=design.categories,
        prompts_per_category=design.prompts_per_category,
        samples_per_prompt=design.samples_per_prompt,
        raters_per_output=design.raters_per_output,
        rater_pool=design.rater_pool,
        arms=arms,
    )
    # Per-category power at α/m: run the simulation at that level for the per-category
    # rate, and at α for the overall test.
    strict = simulate.rejection_rates(
        two_arm,
        components,
        effect=effect,
        n_studies=simulations,
        seed=seed,
        alpha=alpha / design.categories,
    )
    loose = simulate.rejection_rates(
        two_arm, components, effect=effect, n_studies=simulations, seed=seed, alpha=alpha
    )
    return replace(
        plan,
        simulated_per_category_power=strict.paired,
        simulated_overall_power=loose.paired_overall,
        simulations=simulations,
        method=plan.method + "; simulated on the 1–5 scale (rounded, clipped ratings)",
    )


# --------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class ComponentEstimate:
    """Variance components estimated from a study's ratings, with the design they came
    from (averages when the study is unbalanced)."""

    components: VarianceComponents
    n_prompts: int
    samples_per_prompt: float
    raters_per_output: float
    intra_prompt_correlation: float | None
    method: str = "moments (one-way and two-way ANOVA mean squares, truncated at 0)"


def _pooled_within(groups: list[list[float]]) -> tuple[float, int]:
    """Pooled within-group variance (ddof 1 per group) and its degrees of freedom."""
    ss = sum(float(np.sum((np.asarray(g) - np.mean(g)) ** 2)) for g in groups if len(g) > 1)
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    return (ss / df if df else 0.0), df


def estimate_components(table: RatingTable) -> ComponentEstimate:
    """Method-of-moments estimates of the five components of a closed study.

    Hand-written because MixedLM can fail to converge on a small study, and a planner
    must always answer; the fit is checked against known components by simulation in
    the tests. Within-output spread gives rater + residual; spread of output means within
    a prompt and arm gives the output component; the prompt × arm interaction mean square
    within each category gives prompt×arm; the spread of prompt means gives prompt; the
    spread of raters' mean deviations splits rater from residual (rough with few raters).
    """
    by_output: dict = {}
    for r in table.rows:
        by_output.setdefault(r.output_id, []).append(r.score)
    within, _ = _pooled_within(list(by_output.values()))
    counts = [len(v) for v in by_output.values()]
    k = len(counts) / sum(1 / c for c in counts) if counts else 1.0  # harmonic mean
    cells: dict = {}
    for o in table.output_means:
        cells.setdefault((o.prompt_id, o.arm), []).append(o.mean)
    between_outputs, _ = _pooled_within(list(cells.values()))
    sizes = [len(v) for v in cells.values()]
    s = len(sizes) / sum(1 / c for c in sizes) if sizes else 1.0
    output = max(0.0, between_outputs - within / k)
    interaction, prompt_spread = _prompt_arm_mean_squares(table)
    prompt_arm = max(0.0, interaction - between_outputs / s)
    n_arms = max(1, len(table.arms))
    prompt = max(0.0, prompt_spread - interaction / n_arms)
    rater = _rater_variance(table, by_output, within)
    comps = VarianceComponents(
        prompt=prompt,
        prompt_arm=prompt_arm,
        output=output,
        rater=rater,
        residual=max(0.0, within - rater),
    )
    return ComponentEstimate(
        components=comps,
        n_prompts=len(table.prompts()),
        samples_per_prompt=float(s),
        raters_per_output=float(k),
        intra_prompt_correlation=comps.intra_prompt_correlation(max(1, round(k))),
    )


def _prompt_arm_mean_squares(table: RatingTable) -> tuple[float, float]:
    """Pooled over categories: the prompt × arm interaction mean square of the cell
    means, and the variance of prompt means (averaged over arms) within a category."""
    means = table.prompt_means
    ss_int = df_int = ss_prompt = df_prompt = 0.0
    for category in table.categories:
        arms = sorted({a for (p, a) in means if table.prompt_category[p] == category})
        prompts = [p for p in table.prompts(category) if all((p, a) in means for a in arms)]
        if len(prompts) < 2 or not arms:
            continue
        m = np.array([[means[(p, a)] for a in arms] for p in prompts])
        row = m.mean(axis=1, keepdims=True)
        resid = m - row - m.mean(axis=0, keepdims=True) + m.mean()
        ss_int += float((resid**2).sum())
        df_int += (len(prompts) - 1) * (len(arms) - 1)
        ss_prompt += float(((row - row.mean()) ** 2).sum())
        df_prompt += len(prompts) - 1
    return (ss_int / df_int if df_int else 0.0), (ss_prompt / df_prompt if df_prompt else 0.0)


def _rater_variance(table: RatingTable, by_output: dict, within: float) -> float:
    mean_of = {o: sum(v) / len(v) for o, v in by_output.items()}
    devs: dict = {}
    for r in table.rows:
        if len(by_output[r.output_id]) > 1:
            devs.setdefault(r.rater, []).append(r.score - mean_of[r.output_id])
    if len(devs) < 2:
        return 0.0
    offsets = np.array([np.mean(v) for v in devs.values()])
    noise = float(np.mean([within / len(v) for v in devs.values()]))
    return max(0.0, float(np.var(offsets, ddof=1)) - noise)


# --------------------------------------------------------------------------- achieved


@dataclass(frozen=True)
class CategoryPower:
    category: object
    n_prompts: int
    power: float | None
    mde: float | None


@dataclass(frozen=True)
class AchievedPower:
    """For a finished comparison: power at the planned ``effect`` and the minimum
    detectable effect (80%), per category (α/m) and overall (α). The SD of prompt
    differences is pooled over categories (a single category's 5 prompts give too noisy
    an SD); the planned effect, never the observed one, is used, since power computed
    from the observed effect only restates the p-value."""

    a: ArmKey
    b: ArmKey
    effect: float
    alpha: float
    sd_difference: float | None
    df: int
    per_category: tuple[CategoryPower, ...]
    overall_n_prompts: int
    overall_power: float | None
    overall_mde: float | None


def achieved_power(
    table: RatingTable,
    a: ArmKey,
    b: ArmKey,
    *,
    effect: float = 0.5,
    alpha: float = ALPHA,
    target: float = TARGET,
) -> AchievedPower:
    """Achieved power and MDE of the a − b comparison of a finished study."""
    diffs = []
    for category in table.categories:
        _, xa, xb, _ = table.paired(a, b, category)
        diffs.append(np.subtract(xa, xb))
    sd_value, df = _pooled_within([list(d) for d in diffs])
    sd = math.sqrt(sd_value) if df else None
    m = sum(1 for d in diffs if d.size >= 2) or 1
    per_category = []
    for category, d in zip(table.categories, diffs, strict=True):
        n = int(d.size)
        per_category.append(
            CategoryPower(
                category=category,
                n_prompts=n,
                power=paired_power(effect, sd=sd, n_prompts=n, alpha=alpha / m) if sd else None,
                mde=paired_mde(sd=sd, n_prompts=n, alpha=alpha / m, power=target) if sd else None,
            )
        )
    total = int(sum(d.size for d in diffs))
    return AchievedPower(
        a=a,
        b=b,
        effect=effect,
        alpha=alpha,
        sd_difference=sd,
        df=df,
        per_category=tuple(per_category),
        overall_n_prompts=total,
        overall_power=paired_power(effect, sd=sd, n_prompts=total, alpha=alpha) if sd else None,
        overall_mde=paired_mde(sd=sd, n_prompts=total, alpha=alpha, power=target) if sd else None,
    )
