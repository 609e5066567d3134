"""The report as a tree of dataclasses: what :func:`evaluation.report.build.build_report`
fills in and the pages, the HTML document and the comparison read. No queries here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from evaluation.models import Study
from palmsweb.lib import stats

ALPHA = 0.05  # significance level of every test in the report


@dataclass(frozen=True)
class ArmInfo:
    pk: int
    label: str  # "Values-targeted · 77M", or "A" when blinded
    letter: str  # the blinded letter, fixed per study
    kind: str | None  # base / control / values_targeted; None when blinded
    size_tag: str | None
    model_version: str | None
    snapshot_hash: str | None
    parameter_count: int | None


@dataclass(frozen=True)
class CategoryInfo:
    pk: int
    name: str


@dataclass(frozen=True)
class Cell:
    """One arm × category (category None: all categories) summary over output means."""

    arm: ArmInfo
    category: CategoryInfo | None
    n_outputs: int
    n_ratings: int
    summary: stats.Summary

    @property
    def mean(self) -> float | None:
        return self.summary.mean


@dataclass(frozen=True)
class ArmRow:
    arm: ArmInfo
    cells: list[Cell]  # in category order
    overall: Cell


@dataclass(frozen=True)
class ComparisonRow:
    category: CategoryInfo | None  # None: all categories
    result: stats.Comparison
    welch_p_holm: float | None = None
    mannwhitney_p_holm: float | None = None

    @property
    def significant(self) -> bool:
        p = self.welch_p_holm if self.category is not None else self.result.welch_p
        return p is not None and p < ALPHA

    @property
    def better(self) -> bool:
        return self.result.mean_diff is not None and self.result.mean_diff > 0


@dataclass(frozen=True)
class ComparisonFamily:
    """Values-targeted against one other arm, at one size: a Holm family."""

    key: str  # "vt-base" / "vt-control"
    title: str
    size_tag: str
    a: ArmInfo
    b: ArmInfo
    rows: list[ComparisonRow]
    overall: ComparisonRow

    @property
    def wins(self) -> int:
        return sum(1 for r in self.rows if r.better)

    @property
    def significant_wins(self) -> int:
        return sum(1 for r in self.rows if r.better and r.significant)

    @property
    def tested(self) -> int:
        return sum(1 for r in self.rows if r.result.mean_diff is not None)


@dataclass(frozen=True)
class AgreementRow:
    scope: str  # "All outputs", a category name or an arm label
    kind: str  # "overall" / "category" / "arm"
    n_ratings: int
    ordinal: stats.AlphaInterval
    interval: stats.AlphaInterval


@dataclass(frozen=True)
class SizePoint:
    size_tag: str
    parameter_count: int | None
    means: dict[str, float | None]  # arm kind -> overall mean
    ci: dict[str, tuple[float | None, float | None]]
    effect: stats.Comparison | None  # values-targeted − base at this size


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
    human: stats.Summary  # the arm's human overall cell, repeated for reading side by side


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
    agreement: stats.JudgeAgreement  # over outputs with a judge score and a human rating
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
    rows: list[ArmRow] = field(default_factory=list)
    families: list[ComparisonFamily] = field(default_factory=list)
    agreement: list[AgreementRow] = field(default_factory=list)
    sizes: list[SizePoint] = field(default_factory=list)
    low_outputs: list[LowOutput] = field(default_factory=list)
    weak_categories: list[CategoryInfo] = field(default_factory=list)
    # (arm kind, category pk) -> output means pooled over sizes; for comparisons of studies
    pooled: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    judge: JudgeSection | None = None
    summary: list[str] = field(default_factory=list)

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

    def family(self, key: str, size_tag: str | None = None) -> ComparisonFamily | None:
        for fam in self.families:
            if fam.key == key and (size_tag is None or fam.size_tag == size_tag):
                return fam
        return None
