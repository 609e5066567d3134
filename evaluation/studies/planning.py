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
DEFAULT_HALF_WIDTH = 0.15  # a pairwise win rate known to ±0.15 (95%): 0.65 is then above 0.5
Z95 = 1.959963984540054
PRIOR = "prior"
MAX_PLANNED_PROMPTS = 100_000


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
        data["mode"] = Study.Mode.SCALE
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


def prompts_for_half_width(half_width: float) -> int:
    """The fewest prompts whose worst-case win-rate interval is ±``half_width`` (95%)."""
    return min(MAX_PLANNED_PROMPTS, math.ceil((Z95 * 0.5 / half_width) ** 2))


@dataclass(frozen=True)
class PairwisePlan:
    """What a pairwise design can tell apart. The unit of analysis is the prompt (as in the
    pairwise report, :mod:`palmsweb.lib.pairwise`): a win rate is the mean over prompts of
    each prompt's share of wins, so its precision is set by the number of prompts, and the
    worst case (a share's variance is at most 0.25) needs no variance estimate. Samples and
    raters add judgments per prompt, which narrow the interval only where a prompt's
    judgments split, so the plan credits them nothing."""

    categories: int
    prompts: int
    prompts_per_category: int
    samples_per_prompt: int
    raters_per_output: int
    target_half_width: float
    pairwise = True  # templates tell the two plans apart by it

    @property
    def win_rate_half_width(self) -> float:
        return win_rate_half_width(self.prompts)

    @property
    def per_category_half_width(self) -> float:
        return win_rate_half_width(self.prompts_per_category)

    @property
    def prompts_for_target(self) -> int:
        return prompts_for_half_width(self.target_half_width)

    @property
    def judgments_per_arm_pair(self) -> int:
        return self.prompts * self.samples_per_prompt * self.raters_per_output

    def as_dict(self) -> dict:
        return {
            "mode": Study.Mode.PAIRWISE,
            "design": {
                "categories": self.categories,
                "prompts": self.prompts,
                "prompts_per_category": self.prompts_per_category,
                "samples_per_prompt": self.samples_per_prompt,
                "raters_per_output": self.raters_per_output,
            },
            "judgments_per_arm_pair": self.judgments_per_arm_pair,
            "win_rate_half_width": self.win_rate_half_width,
            "per_category_win_rate_half_width": self.per_category_half_width,
            "target_half_width": self.target_half_width,
            "prompts_for_target": self.prompts_for_target,
            "method": "Worst-case 95% half-width of a win rate over prompts: "
            "1.96·√(0.25/prompts); per category over the smallest category's prompts.",
        }


def pairwise_plan_for_prompt_set(
    prompt_set: PromptSet,
    *,
    samples_per_prompt: int,
    raters_per_output: int,
    target_half_width: float | None = None,
) -> PairwisePlan:
    categories, per_category = prompt_set_shape(prompt_set)
    return PairwisePlan(
        categories=categories,
        prompts=prompt_set.prompts.count(),
        prompts_per_category=per_category,
        samples_per_prompt=samples_per_prompt,
        raters_per_output=raters_per_output,
        target_half_width=target_half_width or DEFAULT_HALF_WIDTH,
    )
