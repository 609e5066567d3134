"""Synthetic PALMS studies, to prove the tests' error rates by simulation.

A rating is drawn from the model in :mod:`palmsweb.lib.design`:

    latent = base_mean + effect[arm, category] + prompt + prompt×arm + output + rater + residual

each part normal with the variance of :class:`VarianceComponents`; with ``discrete=True``
(the default) the rating is the latent value rounded to the nearest integer and clipped
to 1–5, like a real rating. Everything is drawn at once as numpy arrays of shape
``(studies, categories, prompts, arms, samples, raters)``, so thousands of studies take
about a second.

:func:`rejection_rates` runs the primary per-category test (paired t on prompt means,
``scipy.stats.ttest_rel``) and the test the report used before (Welch on per-output
means, ``scipy.stats.ttest_ind(equal_var=False)``, what ``stats.compare`` computes) on
the same simulated studies. With no effect the rates are false-positive rates; with an
effect, power. ``bench/simulate_fpr.py`` prints them over several variance structures.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from palmsweb.lib.design import DEFAULT_COMPONENTS, PALMS_DESIGN, StudyDesign, VarianceComponents
from palmsweb.lib.ratings import RatingRow

BASE_MEAN = 3.0
CHUNK = 500  # studies drawn at once: bounds memory (~40 MB per array at PALMS size)

# Variance structures for the benchmark: (name, components). The first is the default
# prior; the others push the correlation to where the unpaired test fails each way.
STRUCTURES: tuple[tuple[str, VarianceComponents], ...] = (
    ("default prior", DEFAULT_COMPONENTS),
    ("prompt-dominated", VarianceComponents(0.45, 0.0, 0.20, 0.05, 0.60)),
    ("prompt×arm-dominated", VarianceComponents(0.0, 0.30, 0.35, 0.05, 0.60)),
    ("no prompt effect", VarianceComponents(0.0, 0.0, 0.50, 0.05, 0.60)),
    ("prompt + prompt×arm, noisy raters", VarianceComponents(0.30, 0.20, 0.20, 0.15, 1.20)),
)


@dataclass(frozen=True)
class SimulatedScores:
    """``scores[study, category, prompt, arm, sample, k]`` is the k-th rating of an output;
    ``raters`` holds the rater (index into the pool) who gave it."""

    design: StudyDesign
    scores: np.ndarray
    raters: np.ndarray

    def arm_index(self, arm: str) -> int:
        return self.design.arms.index(arm)

    def prompt_means(self, arm: str) -> np.ndarray:
        """(studies, categories, prompts): mean over samples of each output's mean rating."""
        return self.scores[:, :, :, self.arm_index(arm)].mean(axis=(-1, -2))

    def output_means(self, arm: str) -> np.ndarray:
        """(studies, categories, prompts × samples): each output's mean rating."""
        x = self.scores[:, :, :, self.arm_index(arm)].mean(axis=-1)
        return x.reshape(*x.shape[:2], -1)


def _effects(design: StudyDesign, effects: Mapping[str, float | Sequence[float]] | None):
    """(arms, categories) shift of the latent mean."""
    table = np.zeros((len(design.arms), design.categories))
    for arm, value in (effects or {}).items():
        table[design.arms.index(arm)] = np.broadcast_to(
            np.asarray(value, dtype=float), (design.categories,)
        )
    return table


def simulate_scores(
    design: StudyDesign = PALMS_DESIGN,
    components: VarianceComponents = DEFAULT_COMPONENTS,
    *,
    effects: Mapping[str, float | Sequence[float]] | None = None,
    n_studies: int = 1,
    seed: int | np.random.Generator = 0,
    discrete: bool = True,
    base_mean: float = BASE_MEAN,
) -> SimulatedScores:
    """Draw ``n_studies`` studies. ``effects`` maps an arm to a shift of its mean rating
    (one number, or one per category); arms not named have no effect."""
    rng = np.random.default_rng(seed)
    n, c, p, a = n_studies, design.categories, design.prompts_per_category, len(design.arms)
    s, k, pool = design.samples_per_prompt, design.raters_per_output, design.pool
    sd = {name: np.sqrt(v) for name, v in components.as_dict().items()}
    latent = (
        base_mean
        + _effects(design, effects).T[None, :, None, :, None, None]
        + rng.normal(0, sd["prompt"], (n, c, p, 1, 1, 1))
        + rng.normal(0, sd["prompt_arm"], (n, c, p, a, 1, 1))
        + rng.normal(0, sd["output"], (n, c, p, a, s, 1))
        + rng.normal(0, sd["residual"], (n, c, p, a, s, k))
    )
    offsets = rng.normal(0, sd["rater"], (n, pool))
    if pool == k:  # every rater rates every output
        raters = np.broadcast_to(np.arange(k), latent.shape)
    else:  # k distinct raters per output, drawn from the pool
        raters = np.argsort(rng.random((n, c, p, a, s, pool)), axis=-1)[..., :k]
    latent = latent + offsets[np.arange(n).reshape(n, 1, 1, 1, 1, 1), raters]
    scores = np.clip(np.rint(latent), 1, 5) if discrete else latent
    return SimulatedScores(design=design, scores=scores, raters=np.asarray(raters))


def simulate_study(
    design: StudyDesign = PALMS_DESIGN,
    components: VarianceComponents = DEFAULT_COMPONENTS,
    *,
    effects: Mapping[str, float | Sequence[float]] | None = None,
    seed: int = 0,
    discrete: bool = True,
    base_mean: float = BASE_MEAN,
) -> list[RatingRow]:
    """One synthetic study as tidy rating rows.

    An arm written ``"values_targeted@1B"`` becomes arm ``values_targeted`` with size tag
    ``1B``, so one design can hold several sizes (prompts shared across them). Ids:
    category ``c``, prompt ``"c{c}p{p}"``, output ``"o{c}-{p}-{arm}-{s}"``, rater ``"R{j}"``."""
    sim = simulate_scores(
        design, components, effects=effects, seed=seed, discrete=discrete, base_mean=base_mean
    )
    rows = []
    for (_, c, p, a, s, k), score in np.ndenumerate(sim.scores):
        arm, _, size = design.arms[a].partition("@")
        rows.append(
            RatingRow(
                output_id=f"o{c}-{p}-{a}-{s}",
                prompt_id=f"c{c}p{p}",
                arm=arm,
                category=c,
                size_tag=size,
                sample_index=s,
                rater=f"R{int(sim.raters[0, c, p, a, s, k])}",
                score=float(score),
            )
        )
    return rows


# --------------------------------------------------------------------------- error rates


@dataclass(frozen=True)
class RejectionRates:
    """Share of tests with p < alpha. Per category: over ``n_studies × categories`` tests
    (independent: categories share no prompt). ``*_familywise``: studies where Holm
    rejects at least one category (that happens iff the smallest p < alpha / categories).
    ``*_overall``: one test over all prompts (paired) or all outputs (Welch) per study.
    ``*_se`` is the Monte Carlo standard error of the per-category rate."""

    n_studies: int
    n_category_tests: int
    alpha: float
    paired: float
    paired_se: float
    paired_familywise: float
    paired_overall: float
    welch: float
    welch_se: float
    welch_familywise: float
    welch_overall: float


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


def study_pvalues(sim: SimulatedScores, a: str, b: str) -> dict[str, np.ndarray]:
    """Per study: the per-category and overall p-values of both tests, arm a vs arm b."""
    xa, xb = sim.prompt_means(a), sim.prompt_means(b)
    oa, ob = sim.output_means(a), sim.output_means(b)
    # A cell can be constant on the discrete scale: its p is NaN (counted as "not
    # rejected") and scipy warns about it, which is expected here.
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "paired": sps.ttest_rel(xa, xb, axis=-1).pvalue,
            "paired_overall": sps.ttest_rel(_flat(xa), _flat(xb), axis=-1).pvalue,
            "welch": sps.ttest_ind(oa, ob, axis=-1, equal_var=False).pvalue,
            "welch_overall": sps.ttest_ind(_flat(oa), _flat(ob), axis=-1, equal_var=False).pvalue,
        }


def _rate(p: np.ndarray, alpha: float) -> float:
    # An undefined p (a constant cell on the discrete scale) is "not rejected".
    return float(np.mean(np.nan_to_num(p, nan=1.0) < alpha))


def rejection_rates(
    design: StudyDesign = PALMS_DESIGN,
    components: VarianceComponents = DEFAULT_COMPONENTS,
    *,
    effect: float = 0.0,
    a: str = "values_targeted",
    b: str = "base",
    n_studies: int = 2_000,
    alpha: float = 0.05,
    seed: int = 0,
    discrete: bool = True,
) -> RejectionRates:
    """Simulate ``n_studies`` studies where arm a's mean is ``effect`` above arm b's and
    return how often each test rejects. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < n_studies:
        n = min(CHUNK, n_studies - done)
        sim = simulate_scores(
            design, components, effects={a: effect}, n_studies=n, seed=rng, discrete=discrete
        )
        for key, p in study_pvalues(sim, a, b).items():
            parts.setdefault(key, []).append(p)
        done += n
    p = {key: np.concatenate(v) for key, v in parts.items()}
    m = design.categories
    per_cat = {key: _rate(p[key], alpha) for key in ("paired", "welch")}
    tests = n_studies * m

    def se(rate: float) -> float:
        return float(np.sqrt(rate * (1 - rate) / tests))

    def familywise(key: str) -> float:
        return float(np.mean(np.nanmin(np.nan_to_num(p[key], nan=1.0), axis=-1) < alpha / m))

    return RejectionRates(
        n_studies=n_studies,
        n_category_tests=tests,
        alpha=alpha,
        paired=per_cat["paired"],
        paired_se=se(per_cat["paired"]),
        paired_familywise=familywise("paired"),
        paired_overall=_rate(p["paired_overall"], alpha),
        welch=per_cat["welch"],
        welch_se=se(per_cat["welch"]),
        welch_familywise=familywise("welch"),
        welch_overall=_rate(p["welch_overall"], alpha),
    )
