"""The study report: every number the results page, the HTML report and the comparison
show, assembled once into a tree of dataclasses by :func:`build_report`.

The primary numbers are **prompt-level** (docs/statistics.md, issue 15): the table of
completed ratings (:mod:`evaluation.report.table`, the rows the export writes) goes
through :func:`palmsweb.lib.analysis.analyse_study`:

- cells: one number per prompt and arm (the mean of its outputs' mean ratings), the mean
  and SD over prompts and a cluster-bootstrap CI (no CI below 5 prompts); the per-output
  n, mean and SD ride along as descriptive columns;
- comparisons (values-targeted vs base, vs control, per size): paired t on the prompt
  means, Holm across the categories of one comparison at one size, Wilcoxon signed-rank as
  the robustness check, cluster-bootstrap CI of the difference (BCa or percentile, named);
- over all categories: a linear mixed model (or its paired-t fallback, with the reason);
- the arm × size test, rater quality (pseudonyms only), achieved power per category,
  Krippendorff's α with a prompt-cluster interval;
- the summary comes from :func:`palmsweb.lib.verdict.summary_bullets`.

An LLM judge's 1–5 scores (the latest succeeded judge scoring run) form their own section
beside the human numbers, never mixed into them.

Blinding: with ``blinded=True`` arms are letters (A, B, C…) in a per-study random but fixed
order, and nothing in the tree names an arm kind, a model version, a size or a snapshot;
the comparisons, the model and the numbers for replay are left out.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.core.cache import cache
from django.db.models import Count, Max
from django.utils import timezone

from curation.models import Category
from evaluation.models import AutomaticScore, Rating, ScoringRun, Study, StudyArm, StudyOutput
from evaluation.report.replay import report_numbers
from evaluation.report.table import analysis_settings, run_analysis, study_rows, study_seed
from evaluation.studies.blinding import blind_letters
from palmsweb.lib import stats
from palmsweb.lib.analysis import StudyAnalysis
from palmsweb.lib.clustered import ALPHA, CellSummary, PairedComparison, SizeTrend
from palmsweb.lib.intervals import ClusterAlpha, alpha_by_prompt, judge_agreement_by_prompt
from palmsweb.lib.mixed import Contrast, MixedResult
from palmsweb.lib.power import AchievedPower, CategoryPower, ComponentEstimate
from palmsweb.lib.raters import RaterQuality
from palmsweb.lib.ratings import RatingTable
from palmsweb.lib.verdict import summary_bullets
from training.models import ModelVersion

CI_RESAMPLES = 10_000
ALPHA_RESAMPLES = 1_000
LOW_OUTPUT_SCORE = 2.0  # outputs of the values-targeted arm at or below this are "low-rated"
WEAK_CATEGORY_MEAN = 3.5  # a values-targeted category mean below this is "weak"
CACHE_SECONDS = 600
JUDGE_RHO_RESAMPLES = 2_000

VT = ModelVersion.Arm.VALUES_TARGETED.value
BASE = ModelVersion.Arm.BASE.value
CONTROL = ModelVersion.Arm.CONTROL.value
VERDICT_LABELS = {
    "better": "better",
    "worse": "worse",
    "not_significant": "not significant",
    "separated_higher": "perfectly separated, higher",
    "separated_lower": "perfectly separated, lower",
    "identical": "identical",
    "too_few": "too few prompts",
}
FAMILY_TITLES = {BASE: ("vt-base", "Values-targeted vs base"),
                 CONTROL: ("vt-control", "Values-targeted vs control")}  # fmt: skip


# --------------------------------------------------------------------------- the tree


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
    """Values-targeted against one other arm, at one size: a Holm family."""

    key: str  # "vt-base" / "vt-control"
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


@dataclass
class _Study:
    """What the section builders share: the study's arms, categories and analysis."""

    study: Study
    arms: list[StudyArm]  # in display order (letters when blinded)
    infos: dict[int, ArmInfo]
    categories: list[CategoryInfo]
    table: RatingTable
    analysis: StudyAnalysis

    def arm_key(self, arm: StudyArm) -> tuple[str, str]:
        return (arm.arm, arm.size_tag or "")

    def category(self, name) -> CategoryInfo:
        return next(c for c in self.categories if c.name == name)


# --------------------------------------------------------------------------- helpers


def _arm_info(arm: StudyArm, letter: str, *, blinded: bool, several_sizes: bool) -> ArmInfo:
    if blinded:
        return ArmInfo(arm.pk, f"Arm {letter}", letter, None, None, None, None, None)
    version = arm.model_version
    label = arm.get_arm_display()
    if several_sizes and arm.size_tag:
        label = f"{label} · {arm.size_tag}"
    return ArmInfo(
        pk=arm.pk,
        label=label,
        letter=letter,
        kind=arm.arm,
        size_tag=arm.size_tag,
        model_version=version.name,
        snapshot_hash=(version.metadata or {}).get("snapshot_hash"),
        parameter_count=version.parameter_count,
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _cache_key(study: Study, *, blinded: bool, include_arms: bool) -> str:
    state = Rating.objects.filter(study=study, status=Rating.Status.COMPLETED).aggregate(
        n=Count("pk"), last=Max("completed_at")
    )
    excluded = study.outputs.filter(screening=StudyOutput.Screening.EXCLUDED).count()
    judge = _latest_judge_run(study)
    judged = (judge.pk, judge.finished_at) if judge else None
    raw = (
        f"{study.pk}:{blinded}:{include_arms}:{state['n']}:{state['last']}:{excluded}:"
        f"{study.unblinded_at}:{study.status}:{judged}"
    )
    return "palms-report:" + hashlib.sha256(raw.encode()).hexdigest()


def _size_order(arms: list[StudyArm]) -> list[str]:
    """Size tags from the smallest model to the largest (unknown sizes last)."""
    largest: dict[str, int | None] = {}
    for arm in arms:
        count = arm.model_version.parameter_count
        tag = arm.size_tag or ""
        largest[tag] = max(filter(None, (largest.get(tag), count)), default=None)
    return sorted(largest, key=lambda t: (largest[t] is None, largest[t] or 0))


# --------------------------------------------------------------------------- assembly


def build_report(study: Study, *, blinded: bool, include_arms: bool = True) -> Report:
    """Everything the report shows for ``study``. ``blinded``: arms as letters and no
    comparisons; ``include_arms=False``: nothing per arm at all (researchers before
    unblinding). Cached while the study's ratings do not change."""
    key = _cache_key(study, blinded=blinded, include_arms=include_arms)
    report = cache.get(key)
    if report is None:
        report = _build(study, blinded=blinded, include_arms=include_arms)
        cache.set(key, report, CACHE_SECONDS)
    report.study = study
    return report


def _load(study: Study, *, blinded: bool, include_arms: bool) -> tuple[_Study, dict]:
    """The study's arms and categories, and the prompt-level analysis of its ratings."""
    study_arms = list(study.arms.select_related("model_version").order_by("order", "pk"))
    letters = blind_letters(study, study_arms)
    sizes = _size_order(study_arms)
    several = len(sizes) > 1
    infos = {
        a.pk: _arm_info(a, letters[a.pk], blinded=blinded, several_sizes=several)
        for a in study_arms
    }
    categories = [
        CategoryInfo(pk, name)
        for pk, name in Category.objects.filter(eval_prompts__prompt_set=study.prompt_set_id)
        .order_by("order", "name")
        .values_list("pk", "name")
        .distinct()
    ]
    settings = analysis_settings(seed=study_seed(study), sizes=sizes, include_arms=include_arms)
    table, analysis = run_analysis(study_rows(study, include_arms=include_arms), settings)
    arm_order = sorted(study_arms, key=lambda a: letters[a.pk]) if blinded else study_arms
    return _Study(study, arm_order, infos, categories, table, analysis), settings


def _build(study: Study, *, blinded: bool, include_arms: bool) -> Report:
    ctx, settings = _load(study, blinded=blinded, include_arms=include_arms)
    analysis = ctx.analysis
    report = Report(
        study=study,
        blinded=blinded,
        include_arms=include_arms,
        generated_at=timezone.now(),
        categories=ctx.categories,
        arms=[ctx.infos[a.pk] for a in ctx.arms] if include_arms else [],
        n_outputs=analysis.n_outputs,
        n_ratings=analysis.n_ratings,
        n_raters=analysis.n_raters,
        n_prompts=analysis.n_prompts,
        seed=analysis.seed,
        raters=list(analysis.raters),
        agreement=_agreement_rows(ctx, per_arm=include_arms),
    )
    if include_arms:
        report.rows = _arm_rows(ctx)
    if include_arms and not blinded:
        _unblinded_sections(report, ctx)
    if not blinded:
        report.settings = settings
        report.numbers = report_numbers(analysis, include_arms=include_arms)
    judge_run = _latest_judge_run(study)
    if judge_run is not None:
        report.judge = _judge_section(report, ctx, judge_run)
    report.summary = _summary(report, analysis)
    return report


def _unblinded_sections(report: Report, ctx: _Study) -> None:
    report.components = ctx.analysis.components
    report.mixed = ctx.analysis.mixed
    report.trends = list(ctx.analysis.size_trends)
    report.pooled = _pooled(ctx)
    report.families = _families(ctx)
    report.sizes = _size_points(report, ctx)
    report.weak_categories = _weak_categories(report)
    report.low_outputs = _low_outputs(ctx)


# --------------------------------------------------------------------------- sections


def _arm_rows(ctx: _Study) -> list[ArmRow]:
    """Per arm: a prompt-level cell per category and over all categories."""
    cells = {(c.arm, c.size_tag, c.category): c for c in ctx.analysis.cells}
    empty = CellSummary("", "", None, 0, None, None, None, None, None, 0, 0, None, None)
    rows = []
    for arm in ctx.arms:
        kind, size = ctx.arm_key(arm)
        info = ctx.infos[arm.pk]
        row_cells = [
            Cell(info, cat, cells.get((kind, size, cat.name), empty)) for cat in ctx.categories
        ]
        overall = Cell(info, None, cells.get((kind, size, None), empty))
        rows.append(ArmRow(info, row_cells, overall))
    return rows


def _agreement_rows(ctx: _Study, *, per_arm: bool) -> list[AgreementRow]:
    """α overall, per category and (when arms are shown) per arm, each with an interval
    that resamples prompts."""
    seed = ctx.analysis.seed

    def row(scope: str, kind: str, table: RatingTable) -> AgreementRow:
        levels = [
            alpha_by_prompt(table, level, n_resamples=ALPHA_RESAMPLES, seed=seed)
            for level in ("ordinal", "interval")
        ]
        return AgreementRow(scope, kind, len(table), *levels)

    rows = [row("All outputs", "overall", ctx.table)]
    rows += [
        row(cat.name, "category", ctx.table.subset(category=cat.name)) for cat in ctx.categories
    ]
    if per_arm:
        for arm in ctx.arms:
            kind, size = ctx.arm_key(arm)
            subset = ctx.table.subset(arm=kind, size_tag=size)
            rows.append(row(ctx.infos[arm.pk].label, "arm", subset))
    return rows


def _families(ctx: _Study) -> list[ComparisonFamily]:
    """One Holm family per comparison and size, with its overall model contrast and the
    achieved power per category."""
    by_key = {ctx.arm_key(a): a for a in ctx.arms}
    several = len(ctx.analysis.sizes) > 1
    found = []
    for fam, achieved in zip(ctx.analysis.families, ctx.analysis.achieved, strict=True):
        vt, other = by_key[fam.a], by_key[fam.b]
        key, title = FAMILY_TITLES[fam.b[0]]
        power = {p.category: p for p in achieved.per_category}
        rows = [ComparisonRow(ctx.category(r.category), r, power.get(r.category)) for r in fam.rows]
        model, note = _model_contrast(ctx.analysis.mixed, fam.a, fam.b)
        found.append(
            ComparisonFamily(
                key=key,
                title=f"{title} · {fam.a[1]}" if several else title,
                size_tag=fam.a[1],
                a=ctx.infos[vt.pk],
                b=ctx.infos[other.pk],
                rows=_in_category_order(rows, ctx.categories),
                overall=ComparisonRow(None, fam.overall),
                model=model,
                model_note=note,
                achieved=achieved,
            )
        )
    return found


def _in_category_order(rows: list[ComparisonRow], categories: list[CategoryInfo]) -> list:
    order = {c.pk: i for i, c in enumerate(categories)}
    return sorted(rows, key=lambda r: order[r.category.pk])


def _model_contrast(mixed: MixedResult | None, a, b) -> tuple[Contrast | None, str]:
    """The overall contrast and a line on how it was obtained (or why it fell back)."""
    if mixed is None:
        return None, "no mixed model was fitted"
    contrast = mixed.contrast(a, b)
    if mixed.fell_back:
        reason = mixed.notes[0] if mixed.notes else "the model could not be used"
        return contrast, f"paired t on prompt means (fallback: {reason})"
    note = "linear mixed model (REML), Wald z"
    if mixed.singular:
        note += f"; singular fit, variance at zero: {', '.join(mixed.singular)}"
    return contrast, note


def _pooled(ctx: _Study) -> dict[tuple[str, int], list[float]]:
    """(arm kind, category pk) → one mean per prompt, averaged over sizes."""
    by_prompt: dict[tuple[str, int], dict] = defaultdict(lambda: defaultdict(list))
    for (prompt, (kind, _size)), mean in ctx.table.prompt_means.items():
        cat = ctx.category(ctx.table.prompt_category[prompt])
        by_prompt[(kind, cat.pk)][prompt].append(mean)
    return {
        key: [_mean(v) for _p, v in sorted(prompts.items())] for key, prompts in by_prompt.items()
    }


def _size_points(report: Report, ctx: _Study) -> list[SizePoint]:
    """Overall means per arm kind and the vt − base difference, per size."""
    if len(ctx.analysis.sizes) < 2:
        return []
    overall = {(r.arm.kind, r.arm.size_tag or ""): r.overall.summary for r in report.rows}
    points = []
    for size in ctx.analysis.sizes:
        kinds = {kind for kind, s in overall if s == size}
        fam = report.family("vt-base", size)
        counts = [
            a.model_version.parameter_count
            for a in ctx.arms
            if (a.size_tag or "") == size and a.model_version.parameter_count
        ]
        points.append(
            SizePoint(
                size,
                max(counts) if counts else None,
                {k: overall[(k, size)].mean for k in kinds},
                {k: (overall[(k, size)].ci_low, overall[(k, size)].ci_high) for k in kinds},
                fam.overall.result if fam else None,
            )
        )
    return points


def _weak_categories(report: Report) -> list[CategoryInfo]:
    """Categories for gap tickets: values-targeted below WEAK_CATEGORY_MEAN, or not
    better than base by the adjusted test (a perfectly separated lead is not weak)."""
    weak: list[CategoryInfo] = []
    for fam in (f for f in report.families if f.key == "vt-base"):
        vt_cells = next(r.cells for r in report.rows if r.arm.pk == fam.a.pk)
        mean_of = {c.category.pk: c.mean for c in vt_cells}
        for row in fam.rows:
            low = mean_of.get(row.category.pk) is not None and mean_of[row.category.pk] < (
                WEAK_CATEGORY_MEAN
            )
            untested_lead = row.verdict not in ("better", "separated_higher", "too_few")
            if (low or untested_lead) and row.category not in weak:
                weak.append(row.category)
    return weak


def _low_outputs(ctx: _Study) -> list[LowOutput]:
    low = sorted(
        (o.mean, o.output_id, o.n_ratings)
        for o in ctx.table.output_means
        if o.arm[0] == VT and o.mean <= LOW_OUTPUT_SCORE
    )[:20]
    if not low:
        return []
    outputs = StudyOutput.objects.filter(
        study=ctx.study, public_id__in=[o for _m, o, _n in low]
    ).select_related("prompt__category")
    found = {str(o.public_id): o for o in outputs}
    return [
        LowOutput(
            public_id=public_id,
            category=ctx.category(found[str(public_id)].prompt.category.name),
            prompt=found[str(public_id)].prompt.text,
            text=found[str(public_id)].text,
            mean=mean,
            n_ratings=n,
        )
        for mean, public_id, n in low
    ]


# --------------------------------------------------------------------------- LLM judge


def _latest_judge_run(study: Study) -> ScoringRun | None:
    return (
        ScoringRun.objects.filter(
            study=study, kind=ScoringRun.Kind.JUDGE, status=ScoringRun.Status.SUCCEEDED
        )
        .order_by("-finished_at", "-pk")
        .first()
    )


def _judge_scores(ctx: _Study, run: ScoringRun) -> tuple[dict, dict, set[str]]:
    """public id → judge score (None: missing), public id → arm pk, scorer versions."""
    from evaluation.scoring.judge import JUDGE_METRIC

    scores: dict[str, float | None] = {}
    arm_of: dict[str, int] = {}
    versions: set[str] = set()
    for public_id, arm_id, value, version in (
        AutomaticScore.objects.filter(
            output__study=ctx.study, metric=JUDGE_METRIC, scorer=run.scorer
        )
        .exclude(output__screening=StudyOutput.Screening.EXCLUDED)
        .values_list("output__public_id", "output__arm_id", "value", "scorer_version")
    ):
        scores[str(public_id)] = value
        arm_of[str(public_id)] = arm_id
        versions.add(version)
    return scores, arm_of, versions


def _judge_section(report: Report, ctx: _Study, run: ScoringRun) -> JudgeSection:
    """The judge's scores per arm (when the report shows arms) and their agreement with
    the human ratings over outputs that have both. Human numbers are only read here."""
    scores, arm_of, versions = _judge_scores(ctx, run)
    ratings: dict[str, list[float]] = defaultdict(list)
    prompt_of = {}
    for r in ctx.table.rows:
        ratings[str(r.output_id)].append(r.score)
        prompt_of[str(r.output_id)] = r.prompt_id
    paired = sorted(o for o in scores if scores[o] is not None and o in ratings)
    judge_values = [float(scores[o]) for o in paired]
    human_means = [_mean(ratings[o]) for o in paired]
    agreement = judge_agreement_by_prompt(
        judge_values,
        human_means,
        [statistics.median(ratings[o]) for o in paired],
        [prompt_of[o] for o in paired],
        n_resamples=JUDGE_RHO_RESAMPLES,
        seed=ctx.analysis.seed,
    )
    human_by_arm = {row.arm.pk: row.overall.summary for row in report.rows}
    rows = []
    for arm in ctx.arms if report.include_arms else []:
        mine = [v for o, v in scores.items() if arm_of[o] == arm.pk]
        present = [v for v in mine if v is not None]
        rows.append(
            JudgeArmRow(
                arm=ctx.infos[arm.pk],
                judge=stats.describe(present, n_resamples=CI_RESAMPLES, seed=ctx.analysis.seed),
                n_missing=len(mine) - len(present),
                human=human_by_arm[arm.pk],
            )
        )
    n_judged = sum(v is not None for v in scores.values())
    diffs = [j - h for j, h in zip(judge_values, human_means, strict=True)]
    judge_info = run.result.get("judge", {})
    return JudgeSection(
        model=judge_info.get("model") or run.scorer,
        endpoint=judge_info.get("url") or run.options.get("base_url", ""),
        scorer_versions=sorted(versions),
        logprobs=bool(run.result.get("logprobs_used", run.options.get("logprobs"))),
        finished_at=run.finished_at,
        n_judged=n_judged,
        n_missing=len(scores) - n_judged,
        rows=rows,
        agreement=agreement,
        mean_diff=_mean(diffs) if diffs else None,
    )


# --------------------------------------------------------------------------- summary


def _summary(report: Report, analysis: StudyAnalysis) -> list[str]:
    """The verdict's bullets (arm-free unless the report is unblinded), and the judge."""
    arm_free = report.blinded or not report.include_arms
    lines = summary_bullets(analysis, arm_free=arm_free)
    judged = report.judge.agreement if report.judge else None
    if judged is not None and judged.n and judged.spearman is not None:
        kappa = "n/a" if judged.kappa is None else f"{judged.kappa:.2f}"
        lines.append(
            f"The LLM judge ({report.judge.model}) agrees with the human ratings at Spearman ρ "
            f"{judged.spearman:.2f} and weighted κ {kappa} over {judged.n} outputs; its "
            "scores are reported separately, never mixed into the human numbers."
        )
    return lines


# --------------------------------------------------------------------------- two studies


@dataclass(frozen=True)
class CompareRow:
    category: CategoryInfo
    vt_a: float | None
    vt_b: float | None
    gap_a: float | None  # values-targeted − base in study A
    gap_b: float | None
    test: stats.Comparison | None  # values-targeted in B against values-targeted in A
    p_holm: float | None = None

    @property
    def delta(self) -> float | None:
        if self.vt_a is None or self.vt_b is None:
            return None
        return self.vt_b - self.vt_a

    @property
    def gap_delta(self) -> float | None:
        if self.gap_a is None or self.gap_b is None:
            return None
        return self.gap_b - self.gap_a


@dataclass
class StudyComparison:
    a: Study
    b: Study
    rows: list[CompareRow]
    summary: str


def _compare_row(pk, names, ra: Report, rb: Report, seed: int) -> CompareRow:
    """One category: values-targeted prompt means of B against those of A (Welch: the
    two studies' outputs and raters are independent), and each study's lead over base."""
    vta, vtb = ra.pooled.get((VT, pk), []), rb.pooled.get((VT, pk), [])
    basea, baseb = ra.pooled.get((BASE, pk), []), rb.pooled.get((BASE, pk), [])
    test = stats.compare(vtb, vta, n_resamples=CI_RESAMPLES, seed=seed) if vta and vtb else None
    gap_a = _mean(vta) - _mean(basea) if vta and basea else None
    gap_b = _mean(vtb) - _mean(baseb) if vtb and baseb else None
    mean_a = _mean(vta) if vta else None
    mean_b = _mean(vtb) if vtb else None
    return CompareRow(names[pk], mean_a, mean_b, gap_a, gap_b, test)


def compare_studies(a: Study, b: Study) -> StudyComparison:
    """Per-category change of the values-targeted mean (and of its lead over base) from
    study ``a`` to study ``b``, on prompt means pooled over sizes. Unblinded use only."""
    ra = build_report(a, blinded=False)
    rb = build_report(b, blinded=False)
    names = {c.pk: c for c in ra.categories + rb.categories}
    order = list(dict.fromkeys(c.pk for c in ra.categories + rb.categories))
    seed = study_seed(b)
    rows = [_compare_row(pk, names, ra, rb, seed) for pk in order]
    adjusted = stats.holm({r.category.pk: r.test.welch_p for r in rows if r.test is not None})
    rows = [
        CompareRow(
            r.category, r.vt_a, r.vt_b, r.gap_a, r.gap_b, r.test, adjusted.get(r.category.pk)
        )
        for r in rows
    ]
    deltas = [r for r in rows if r.delta is not None]
    up = sum(1 for r in deltas if r.delta > 0 and r.p_holm is not None and r.p_holm < ALPHA)
    down = sum(1 for r in deltas if r.delta < 0 and r.p_holm is not None and r.p_holm < ALPHA)
    if deltas:
        summary = (
            f"On prompt means, the values-targeted model of “{b.name}” scores significantly "
            f"higher than that of “{a.name}” in {up} of {len(deltas)} shared categories and "
            f"significantly lower in {down} (Welch's t on prompt means, Holm-adjusted "
            f"p < {ALPHA}); the other {len(deltas) - up - down} are not significant."
        )
    else:
        summary = "The two studies share no rated values-targeted category."
    return StudyComparison(a, b, rows, summary)


def fmt(value: float | None, digits: int = 2) -> str:
    """Numbers for text output: None (undefined) prints as an em dash, never 0."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


__all__ = [
    "Report",
    "build_report",
    "compare_studies",
]
