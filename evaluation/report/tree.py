"""The report as a tree of dataclasses: what :func:`evaluation.report.build.build_report`
returns and the templates, charts and ``compare_studies`` read. No queries here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from evaluation.models import Study
from palmsweb.lib import stats
from palmsweb.lib.clustered import ALPHA, CellSummary, PairedComparison, SizeTrend
from palmsweb.lib.intervals import ClusterAlpha
from palmsweb.lib.mixed import Contrast, MixedResult
from palmsweb.lib.power import AchievedPower, CategoryPower, ComponentEstimate
from palmsweb.lib.raters import RaterQuality

VERDICT_LABELS = {
    "better": "better",
    "worse": "worse",
    "not_significant": "not significant",
    "separated_higher": "perfectly separated, higher",
    "separated_lower": "perfectly separated, lower",
    "identical": "identical",
    "too_few": "too few prompts",
}


@dataclass(frozen=True)
class ArmInfo:
    pk: int
    label: str  # "Values-targeted · 77M", or "Arm A" when blinded
    letter: str  # the blinded letter, fixed per study
    kind: str | None  # base / control / values_targeted; None when blinded
    size_tag: str | None
    model_version: str | None
    snapshot_hash: str | None
    parameter_count: int | None
    # the study arm's free label ("values-targeted + DPO"), "" when it has none; None
    # when blinded. A labelled arm is compared with the unlabelled arm of its role.
    free_label: str | None = None


@dataclass(frozen=True)
class CategoryInfo:
    pk: int
    name: str


@dataclass(frozen=True)
class Cell:
    """One arm × category (category None: all categories), prompt-level; ``summary``
    also carries the per-output numbers (``output_mean``, ``output_sd``)."""

    arm: ArmInfo
    category: CategoryInfo | None
    summary: CellSummary

    @property
    def mean(self) -> float | None:
        return self.summary.mean

    @property
    def n_outputs(self) -> int:
        return self.summary.n_outputs

    @property
    def n_ratings(self) -> int:
        return self.summary.n_ratings


@dataclass(frozen=True)
class ArmRow:
    arm: ArmInfo
    cells: list[Cell]  # in category order
    overall: Cell


@dataclass(frozen=True)
class ComparisonRow:
    category: CategoryInfo | None  # None: all categories
    result: PairedComparison
    power: CategoryPower | None = None

    @property
    def verdict(self) -> str:
        return self.result.verdict(ALPHA)

    @property
    def verdict_label(self) -> str:
        return VERDICT_LABELS.get(self.verdict, self.verdict)

    @property
    def significant(self) -> bool:
        return self.verdict in ("better", "worse")

    @property
    def better(self) -> bool:
        return self.verdict == "better"


@dataclass(frozen=True)
class ComparisonFamily:
    """Values-targeted against one other arm, at one size: a Holm family. With free arm
    labels also a labelled arm against base, control or the unlabelled arm of its role."""

    key: str  # "vt-base" / "vt-control"; labelled: "label-base" / "label-control" / "label-role"
    title: str
    size_tag: str
    a: ArmInfo
    b: ArmInfo
    rows: list[ComparisonRow]
    overall: ComparisonRow  # paired t on all prompts (outside the family)
    model: Contrast | None  # the overall primary: mixed model, or its paired-t fallback
    model_note: str
    achieved: AchievedPower | None

    @property
    def wins(self) -> int:
        """Categories where the Holm-adjusted paired t says values-targeted is better."""
        return sum(1 for r in self.rows if r.better)

    significant_wins = wins

    @property
    def tested(self) -> int:
        return sum(1 for r in self.rows if r.result.p is not None)


@dataclass(frozen=True)
class AgreementRow:
    scope: str  # "All outputs", a category name or an arm label
    kind: str  # "overall" / "category" / "arm"
    n_ratings: int
    ordinal: ClusterAlpha
    interval: ClusterAlpha


@dataclass(frozen=True)
class SizePoint:
    size_tag: str
    parameter_count: int | None
    means: dict[str, float | None]  # arm kind -> overall prompt-level mean
    ci: dict[str, tuple[float | None, float | None]]
    effect: PairedComparison | None  # values-targeted − base at this size, all prompts


@dataclass(frozen=True)
class LowOutput:
    public_id: str
    category: CategoryInfo
    prompt: str
    text: str
    mean: float
    n_ratings: int


@dataclass(frozen=True)
class JudgeArmRow:
    """One arm: the judge's mean over its judged outputs beside the human mean."""

    arm: ArmInfo
    judge: stats.Summary
    n_missing: int  # outputs of the arm the judge gave no score
    human: CellSummary  # the arm's human overall cell, repeated for reading side by side


@dataclass(frozen=True)
class JudgeSection:
    """The latest succeeded judge run, beside (never inside) the human numbers."""

    model: str
    endpoint: str
    scorer_versions: list[str]
    logprobs: bool
    finished_at: datetime | None
    n_judged: int  # counted outputs with a judge score
    n_missing: int  # counted outputs the judge gave no score
    rows: list[JudgeArmRow]  # empty when the report shows nothing per arm
    agreement: stats.JudgeAgreement  # over outputs with both; ρ interval over prompts
    mean_diff: float | None  # mean(judge − human mean) over those outputs


@dataclass
class Report:
    study: Study
    blinded: bool
    include_arms: bool
    generated_at: datetime
    categories: list[CategoryInfo]
    arms: list[ArmInfo]
    n_outputs: int
    n_ratings: int
    n_raters: int
    n_prompts: int = 0
    seed: int = 0
    rows: list[ArmRow] = field(default_factory=list)
    families: list[ComparisonFamily] = field(default_factory=list)
    mixed: MixedResult | None = None
    trends: list[SizeTrend] = field(default_factory=list)
    agreement: list[AgreementRow] = field(default_factory=list)
    raters: list[RaterQuality] = field(default_factory=list)
    components: ComponentEstimate | None = None
    sizes: list[SizePoint] = field(default_factory=list)
    low_outputs: list[LowOutput] = field(default_factory=list)
    weak_categories: list[CategoryInfo] = field(default_factory=list)
    # (arm kind, category pk) -> prompt means pooled over sizes; for comparing studies
    pooled: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    judge: JudgeSection | None = None
    summary: list[str] = field(default_factory=list)
    # What the study cost (evaluation.report.cost.study_cost)
    cost: dict = field(default_factory=dict)
    # for the bundle and replay_report (empty for a letters-only report)
    settings: dict = field(default_factory=dict)
    numbers: dict = field(default_factory=dict)

    @property
    def several_sizes(self) -> bool:
        return len(self.sizes) > 1

    @property
    def matrix(self) -> list[tuple[str, bool, list[Cell]]]:
        """Category rows × arm columns (then "All categories"), for compact tables."""
        lines = [
            (cat.name, False, [row.cells[i] for row in self.rows])
            for i, cat in enumerate(self.categories)
        ]
        if self.rows:
            lines.append(("All categories", True, [row.overall for row in self.rows]))
        return lines

    @property
    def flagged_raters(self) -> list[RaterQuality]:
        return [q for q in self.raters if q.flagged]

    def family(self, key: str, size_tag: str | None = None) -> ComparisonFamily | None:
        for fam in self.families:
            if fam.key == key and (size_tag is None or fam.size_tag == size_tag):
                return fam
        return None
