"""One call that runs the whole prompt-level analysis of a study's ratings.

:func:`analyse_study` takes the tidy :class:`~palmsweb.lib.ratings.RatingTable` and
returns a :class:`StudyAnalysis`: cells (arm × category, prompt-level, cluster CIs),
one :class:`~palmsweb.lib.clustered.ComparisonFamily` per comparison and size, the
overall mixed model, the arm × size trend, rater quality, α with a prompt-cluster
interval, the variance components and the achieved power. Its fields are frozen
dataclasses, tuples, dicts, strings, numbers and None, so ``dataclasses.asdict`` turns
it into JSON (ids permitting). :func:`palmsweb.lib.verdict.summary_bullets` writes the
plain-language summary from it.

Deterministic: the table is sorted on construction, and every bootstrap takes ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from palmsweb.lib.arm_names import arm_role, is_labelled
from palmsweb.lib.clustered import (
    ALPHA,
    CI_RESAMPLES,
    CellSummary,
    ComparisonFamily,
    SizeTrend,
    compare_family,
    describe_cell,
    size_trend,
)
from palmsweb.lib.intervals import ALPHA_RESAMPLES, ClusterAlpha, alpha_by_prompt
from palmsweb.lib.mixed import MixedResult, fit_mixed
from palmsweb.lib.power import (
    AchievedPower,
    ComponentEstimate,
    achieved_power,
    estimate_components,
)
from palmsweb.lib.raters import RaterQuality, rater_quality
from palmsweb.lib.ratings import ArmKey, RatingTable

TARGETED = "values_targeted"
COMPARATORS = ("base", "control")


@dataclass(frozen=True)
class StudyAnalysis:
    seed: int
    alpha: float
    effect: float  # the planned difference behind the achieved power
    n_ratings: int
    n_outputs: int
    n_prompts: int
    n_raters: int
    sizes: tuple[str, ...]
    cells: tuple[CellSummary, ...]  # arm × category, then arm × all categories
    families: tuple[ComparisonFamily, ...]  # per comparator × size
    mixed: MixedResult | None
    size_trends: tuple[SizeTrend, ...]  # per comparator, when there are several sizes
    raters: tuple[RaterQuality, ...]
    agreement: ClusterAlpha | None  # ordinal α, prompt-cluster interval
    components: ComponentEstimate
    achieved: tuple[AchievedPower, ...]  # per family, same order

    def family(
        self, comparator: str, size_tag: str = "", *, targeted: str = TARGETED
    ) -> ComparisonFamily | None:
        """The family of arm ``targeted`` against arm ``comparator`` at one size, both
        given by their table names (``values_targeted:values-targeted + DPO``): with
        labelled arms several families share a comparator, so both sides are matched."""
        a, b = (targeted, size_tag), (comparator, size_tag)
        return next((f for f in self.families if f.a == a and f.b == b), None)


def comparisons(
    table: RatingTable,
    *,
    targeted: str = TARGETED,
    comparators: Sequence[str] = COMPARATORS,
    sizes: Sequence[str] | None = None,
) -> list[tuple[ArmKey, ArmKey]]:
    """(targeted, comparator) arm pairs present in the table, size by size.

    At each size: every arm of the targeted role (the unlabelled one first, then the
    labelled ones, see :mod:`palmsweb.lib.arm_names`) against each unlabelled comparator;
    then each labelled arm against the unlabelled arm of its own role ("values-targeted +
    DPO" vs values-targeted), a family of its own. Without labels: exactly the pairs of
    the targeted arm against each comparator."""
    present = set(table.arms)
    pairs = []
    for size in sizes if sizes is not None else table.size_tags:
        here = sorted(name for name, s in present if s == size)
        labelled = [name for name in here if is_labelled(name)]
        targeted_arms = [targeted] + [n for n in labelled if arm_role(n) == targeted]
        for name in targeted_arms:
            for other in comparators:
                a, b = (name, size), (other, size)
                if a in present and b in present:
                    pairs.append((a, b))
        for name in labelled:
            b = (arm_role(name), size)
            if b in present:
                pairs.append(((name, size), b))
    return pairs


def analyse_study(
    table: RatingTable,
    *,
    targeted: str = TARGETED,
    comparators: Sequence[str] = COMPARATORS,
    sizes: Sequence[str] | None = None,
    size_x: Sequence[float] | None = None,
    seed: int = 0,
    alpha: float = ALPHA,
    effect: float = 0.5,
    n_resamples: int = CI_RESAMPLES,
    alpha_resamples: int = ALPHA_RESAMPLES,
    mixed_model: bool = True,
    rater_effects: str = "fixed",
) -> StudyAnalysis:
    """Everything the report's prompt-level numbers need (see the module docstring).

    ``sizes``: size tags in increasing order (default: sorted tags); ``size_x``: their
    positions for the trend test (e.g. log10 parameter counts; default 0, 1, 2, …).
    ``mixed_model=False`` skips the MixedLM fit (1–3 s for a PALMS study)."""
    sizes = list(table.size_tags if sizes is None else sizes)
    opts = dict(n_resamples=n_resamples, seed=seed)
    cells = [
        describe_cell(table, arm, cat, **opts) for arm in table.arms for cat in table.categories
    ]
    cells += [describe_cell(table, arm, None, **opts) for arm in table.arms]
    pairs = comparisons(table, targeted=targeted, comparators=comparators, sizes=sizes)
    families = tuple(compare_family(table, a, b, alpha=alpha, **opts) for a, b in pairs)
    mixed = fit_mixed(table, pairs, rater_effects=rater_effects) if mixed_model and pairs else None
    trends = ()
    if len(sizes) > 1:
        trends = tuple(
            size_trend(table, targeted=targeted, comparator=other, sizes=sizes, x=size_x)
            for other in comparators
            if any(b == (other, s) for _, b in pairs for s in sizes)
        )
    offsets = mixed.rater_offsets if mixed is not None else None
    return StudyAnalysis(
        seed=seed,
        alpha=alpha,
        effect=effect,
        n_ratings=len(table),
        n_outputs=len(table.output_means),
        n_prompts=len(table.prompts()),
        n_raters=len(table.raters),
        sizes=tuple(sizes),
        cells=tuple(cells),
        families=families,
        mixed=mixed,
        size_trends=trends,
        raters=rater_quality(table, model_offsets=offsets),
        agreement=alpha_by_prompt(table, n_resamples=alpha_resamples, seed=seed)
        if len(table)
        else None,
        components=estimate_components(table),
        achieved=tuple(achieved_power(table, a, b, effect=effect, alpha=alpha) for a, b in pairs),
    )
