"""The study planner: before rating starts, how likely is the chosen design to find a
given difference, and what design would reach 80% power (issue 15, item 3). A pairwise
study counts judgments per arm pair instead (:func:`win_rate_half_width`; the estimate
in :mod:`evaluation.studies.selectors` counts its judgments per pair).

The variance components come from the last closed study with ratings
(:func:`palmsweb.lib.power.estimate_components` on its rating table), or, when there is
none, from the prior :data:`palmsweb.lib.design.DEFAULT_COMPONENTS`. The power itself is
:func:`palmsweb.lib.power.plan_study` (analytic, the paired t on prompt means).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from django.db.models import Count, Q

from evaluation.models import PromptSet, Rating, Study
from evaluation.studies.rating_rows import study_rows
from palmsweb.lib.design import DEFAULT_COMPONENTS, StudyDesign, VarianceComponents
from palmsweb.lib.power import PowerPlan, estimate_components, plan_study
from palmsweb.lib.ratings import RatingTable

DEFAULT_EFFECT = 0.5  # points on the 1–5 scale
Z95 = 1.959963984540054
PRIOR = "prior"


@dataclass(frozen=True)
class StudyPlan:
    """A plan and where its variance components came from."""

    plan: PowerPlan
    source: str  # "prior" or "study"
    source_study: Study | None
    categories: int
    prompts_per_category: int

    def as_dict(self) -> dict:
        data = asdict(self.plan)
        data["components_source"] = self.source
        data["components_study"] = self.source_study.pk if self.source_study else None
        return data


def last_closed_components() -> tuple[VarianceComponents, Study | None]:
    """Components estimated from the most recently closed study with ratings, else the
    prior (also when the estimate is all zeros: one rating per output says little)."""
    study = (
        Study.objects.filter(status=Study.Status.CLOSED)
        .annotate(n=Count("ratings", filter=Q(ratings__status=Rating.Status.COMPLETED)))
        .filter(n__gt=0)
        .order_by("-closed_at", "-pk")
        .first()
    )
    if study is None:
        return DEFAULT_COMPONENTS, None
    estimate = estimate_components(RatingTable(study_rows(study, include_arms=True)))
    if estimate.components.total == 0:
        return DEFAULT_COMPONENTS, None
    return estimate.components, study


def prompt_set_shape(prompt_set: PromptSet) -> tuple[int, int]:
    """(categories, prompts per category: the smallest category's count, the one the
    per-category tests are weakest in)."""
    counts = list(
        prompt_set.prompts.values("category").annotate(n=Count("pk")).values_list("n", flat=True)
    )
    if not counts:
        return 1, 1
    return len(counts), max(1, min(counts))


def study_plan(
    *,
    categories: int,
    prompts_per_category: int,
    samples_per_prompt: int,
    raters_per_output: int,
    effect: float = DEFAULT_EFFECT,
) -> StudyPlan:
    """Power of this design for ``effect`` and the design that would reach 80%."""
    components, source_study = last_closed_components()
    design = StudyDesign(
        categories=categories,
        prompts_per_category=prompts_per_category,
        samples_per_prompt=samples_per_prompt,
        raters_per_output=raters_per_output,
    )
    plan = plan_study(effect=effect, components=components, design=design)
    return StudyPlan(
        plan=plan,
        source="study" if source_study else PRIOR,
        source_study=source_study,
        categories=categories,
        prompts_per_category=prompts_per_category,
    )


def plan_for_prompt_set(
    prompt_set: PromptSet, *, samples_per_prompt: int, raters_per_output: int, effect=None
) -> StudyPlan:
    categories, per_category = prompt_set_shape(prompt_set)
    effect = DEFAULT_EFFECT if effect is None or not math.isfinite(effect) else effect
    return study_plan(
        categories=categories,
        prompts_per_category=per_category,
        samples_per_prompt=samples_per_prompt,
        raters_per_output=raters_per_output,
        effect=effect,
    )


def win_rate_half_width(n_prompts: int) -> float:
    """The widest 95% half-width of a pairwise win rate over ``n_prompts`` prompts (the unit
    of analysis of the pairwise report): a prompt's share of wins varies at most 0.25, so
    the interval of the mean over prompts is at most ±1.96·√(0.25/n) whatever the number of
    samples and raters; more raters narrow it only when prompts split their verdicts."""
    return Z95 * math.sqrt(0.25 / n_prompts) if n_prompts else float("inf")
