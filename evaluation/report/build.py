"""The study report: every number the results page, the HTML report and the comparison
show, assembled once into a tree of dataclasses by :func:`build_report`.

The primary numbers are **prompt-level** (docs/statistics.md, issue 15): the table of
completed ratings (:mod:`evaluation.report.table`, the rows the export writes) goes
through :func:`palmsweb.lib.analysis.analyse_study`:

- cells: one number per prompt and arm (the mean of its outputs' mean ratings), the mean
  and SD over prompts and a cluster-bootstrap CI (no CI below 5 prompts); the per-output
  n, mean and SD ride along as descriptive columns;
- comparisons (values-targeted vs base, vs control, per size; an arm with a free label
  also vs the unlabelled arm of its role, e.g. SFT + DPO vs SFT): paired t on the prompt
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
from dataclasses import dataclass

from django.core.cache import cache
from django.db.models import Count, Max
from django.utils import timezone

from curation.models import Category
from evaluation.models import AutomaticScore, Rating, ScoringRun, Study, StudyArm, StudyOutput
from evaluation.report.cost import study_cost
from evaluation.report.replay import report_numbers
from evaluation.report.table import analysis_settings, run_analysis, study_seed
from evaluation.report.tree import (
    AgreementRow,
    ArmInfo,
    ArmRow,
    CategoryInfo,
    Cell,
    ComparisonFamily,
    ComparisonRow,
    JudgeArmRow,
    JudgeSection,
    LowOutput,
    Report,
    SizePoint,
)
from evaluation.studies.arm_keys import arm_title
from evaluation.studies.blinding import blind_letters
from evaluation.studies.rating_rows import study_rows
from palmsweb.lib import stats
from palmsweb.lib.analysis import StudyAnalysis
from palmsweb.lib.arm_names import arm_name, arm_role
from palmsweb.lib.clustered import CellSummary
from palmsweb.lib.intervals import alpha_by_prompt, judge_agreement_by_prompt
from palmsweb.lib.mixed import Contrast, MixedResult
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
FAMILY_TITLES = {BASE: ("vt-base", "Values-targeted vs base"),
                 CONTROL: ("vt-control", "Values-targeted vs control")}  # fmt: skip


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
        """The arm as the rating table names it: ``role`` or ``role:label``, and size."""
        return (arm_name(arm.arm, arm.label), arm.size_tag or "")

    def category(self, name) -> CategoryInfo:
        return next(c for c in self.categories if c.name == name)


# --------------------------------------------------------------------------- helpers


def _arm_info(arm: StudyArm, letter: str, *, blinded: bool, several_sizes: bool) -> ArmInfo:
    if blinded:
        return ArmInfo(arm.pk, f"Arm {letter}", letter, None, None, None, None, None)
    version = arm.model_version
    return ArmInfo(
        pk=arm.pk,
        label=arm_title(arm, size=several_sizes),
        letter=letter,
        kind=arm.arm,
        size_tag=arm.size_tag,
        model_version=version.name,
        snapshot_hash=(version.metadata or {}).get("snapshot_hash"),
        parameter_count=version.parameter_count,
        free_label=arm.label,
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
    # Not cached: a job's record lands when it finishes, whatever the ratings do. One total,
    # naming no arm.
    report.cost = study_cost(study)
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
    # letters show no comparison, so they need no model (their numbers are not replayed)
    run = {**settings, "mixed_model": False} if blinded else settings
    table, analysis = run_analysis(study_rows(study, include_arms=include_arms), run)
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
    if not (blinded and include_arms):  # letters name no arm, but the numbers would
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

    def row(scope: str, kind: str, table: RatingTable, ordinal=None) -> AgreementRow:
        levels = [
            alpha_by_prompt(table, level, n_resamples=ALPHA_RESAMPLES, seed=seed)
            for level in ("ordinal", "interval")
            if level == "interval" or ordinal is None
        ]
        return AgreementRow(scope, kind, len(table), *([ordinal] if ordinal else []), *levels)

    # the analysis already has the overall ordinal α, with the same seed and resamples
    overall = ctx.analysis.agreement
    same = overall is not None and overall.n_resamples in (0, ALPHA_RESAMPLES)
    rows = [row("All outputs", "overall", ctx.table, overall if same else None)]
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
        key, title = _family_title(vt, other)
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


def _family_title(a: StudyArm, b: StudyArm) -> tuple[str, str]:
    """The key and title of arm a's family against arm b. b is always unlabelled (see
    :func:`palmsweb.lib.analysis.comparisons`); a labelled a is named by its label, so
    "values-targeted + DPO vs values-targeted" and "values-targeted + DPO vs base"."""
    if not a.label:
        return FAMILY_TITLES[b.arm]
    key = "label-role" if b.arm == a.arm else f"label-{b.arm}"
    return key, f"{a.label} vs {b.get_arm_display().lower()}"


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
    """(arm kind, category pk) → one mean per prompt, averaged over sizes. A labelled arm
    keeps its table name (``role:label``), apart from its role's plain arm."""
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
    # the size trend is on the unlabelled arms: one per role and size
    overall = {
        (r.arm.kind, r.arm.size_tag or ""): r.overall.summary
        for r in report.rows
        if not r.arm.free_label
    }
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
        if arm_role(o.arm[0]) == VT and o.mean <= LOW_OUTPUT_SCORE
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


def fmt(value: float | None, digits: int = 2) -> str:
    """Numbers for text output: None (undefined) prints as an em dash, never 0."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def compare_studies(a: Study, b: Study):
    """See :func:`evaluation.report.compare.compare_studies` (kept here for callers)."""
    from evaluation.report.compare import compare_studies as compare

    return compare(a, b)


__all__ = [
    "Report",
    "build_report",
    "compare_studies",
]
