"""The report as a document: the context the results page and the self-contained HTML
report share, and :func:`render_report_document` (used by the download view, the study
bundle export and ``palms_loop``). Not a view module: nothing here reads a request."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from django.template import TemplateDoesNotExist
from django.template.loader import get_template, render_to_string
from django.urls import NoReverseMatch, reverse

from evaluation.models import Study
from evaluation.report.build import build_report
from evaluation.report.charts import category_chart, judge_heatmap, size_chart
from evaluation.report.cost import study_cost
from evaluation.report.tree import Report
from evaluation.studies.positions import position_records
from evaluation.studies.selectors import study_progress

SCORE_TEMPLATES = (
    "evaluation/_report_adherence.html",
    "evaluation/_report_toxicity.html",
    "evaluation/_report_cooccurrence.html",
    "evaluation/_report_capability.html",
)


def report_for(study: Study, mode: str) -> Report:
    return build_report(study, blinded=(mode != "arms"), include_arms=(mode != "arm-free"))


def _template_exists(name: str) -> bool:
    try:
        get_template(name)
    except TemplateDoesNotExist:
        return False
    return True


def score_sections(study: Study, *, blinded: bool) -> tuple[dict | None, list[str]]:
    """The automatic-score sections, when the scoring module is installed."""
    try:
        from evaluation.scoring import report_sections
    except ImportError:
        return None, []
    scores = report_sections(study, blinded=blinded)
    return scores, [t for t in SCORE_TEMPLATES if _template_exists(t)]


def attach_human_differences(scores: dict | None, report: Report) -> None:
    """Set the human ratings' values-targeted − base mean difference per category beside
    the values-targeted rows' held-out adherence cells (only where arms may be seen)."""
    section = (scores or {}).get("adherence", {})
    if report.blinded or not section.get("available") or section.get("blinded"):
        return
    for fam in report.families:
        if fam.key != "vt-base":
            continue
        by_name = {r.category.name: r.result.mean_diff for r in fam.rows if r.category}
        by_name["All categories"] = fam.overall.result.mean_diff
        for row in section["rows"]:
            same_size = (row.get("size") or "") == (fam.size_tag or "")
            # the family's own arm: same role, same free label ("vt-base" is unlabelled)
            same_arm = row.get("arm_kind") == fam.a.kind and not row.get("arm_label")
            if row.get("available") and same_arm and same_size:
                for cell in row["cells"]:
                    cell["human_diff"] = by_name.get(cell["category"])


def gap_links(report: Report) -> dict:
    """Links to file gap tickets for weak categories and low-rated outputs, when the
    curation app offers the form (``curation:gap-create``)."""
    if report.blinded or not report.include_arms:
        return {}
    try:
        base = reverse("curation:gap-create")
    except NoReverseMatch:
        return {}
    study = report.study

    def link(category, title, source):
        query = {"category": category.pk, "title": title, "source": json.dumps(source)}
        return f"{base}?{urlencode(query)}"

    fam = report.family("vt-base")
    by_cat = {r.category.pk: r for r in fam.rows} if fam else {}
    weak = []
    for cat in report.weak_categories:
        row = by_cat.get(cat.pk)
        source = {"kind": "category", "study": study.pk, "study_name": study.name}
        if row and row.result.mean_diff is not None:
            source.update(mean_diff=round(row.result.mean_diff, 3), p_holm=row.result.p_holm)
        weak.append((cat, link(cat, f"Weak in study “{study.name}”: {cat.name}", source)))
    low = [
        (
            out,
            link(
                out.category,
                f"Low-rated output in “{study.name}” ({out.mean:.1f}/5)",
                {
                    "kind": "output",
                    "study": study.pk,
                    "output": out.public_id,
                    "mean": round(out.mean, 3),
                },
            ),
        )
        for out in report.low_outputs
    ]
    return {"weak": weak, "low": low}


def report_context(study: Study, mode: str) -> dict:
    report = report_for(study, mode)
    scores, score_templates = (None, [])
    if mode != "arm-free":
        scores, score_templates = score_sections(study, blinded=(mode != "arms"))
        attach_human_differences(scores, report)
    return {
        "study": study,
        "mode": mode,
        "report": report,
        "progress": study_progress(study),
        "category_chart": category_chart(report),
        "size_chart": size_chart(report),
        "judge_heatmap": judge_heatmap(report),
        "scores": scores,
        "score_templates": score_templates,
        # Methods: the position versions raters judged against (frozen at opening), and
        # the value profile (application context) they belong to.
        "positions": position_records(study),
        "profile": study.prompt_set.profile,
    }


def provenance(study: Study, report: Report | None) -> dict:
    from training.services import code_version

    job = study.sampling_job
    return {
        "code_version": code_version(),
        "sampling": {
            "temperature": study.temperature,
            "top_p": study.top_p,
            "max_new_tokens": study.max_new_tokens,
            "seed": study.seed,
            "samples_per_prompt": study.samples_per_prompt,
            "system_prompt": getattr(job, "system_prompt", "") if job else "",
        },
        "prompt_count": study.prompt_set.prompts.count(),
    }


def render_report_document(study: Study, mode: str) -> str:
    """The self-contained HTML report (CSS and SVG inline, no external assets)."""
    if study.mode == Study.Mode.PAIRWISE:
        return _render_pairwise_document(study, mode)
    context = report_context(study, mode)
    context["provenance"] = provenance(study, context["report"])
    context["document"] = True
    return render_to_string("evaluation/report_document.html", context)


def pairwise_context(study: Study, mode: str) -> dict:
    """What the pairwise results page and its document both show: the report in ``mode``,
    what the study cost, the positions raters judged against and their profile."""
    from evaluation.report.pairwise import pairwise_report

    return {
        "study": study,
        "mode": mode,
        "report": pairwise_report(study, mode),
        "cost": study_cost(study),
        "positions": position_records(study),
        "profile": study.prompt_set.profile,
    }


def _render_pairwise_document(study: Study, mode: str) -> str:
    """A pairwise study's report as a document: the pairwise results page's sections (same
    report modes), its provenance and the positions raters judged against."""
    from django.utils import timezone

    from evaluation.studies.arm_pairs import compared_numbers

    context = pairwise_context(study, mode) | {
        "generated_at": timezone.now(),
        "provenance": provenance(study, None),
        "arms": study.arms.select_related("model_version") if mode == "arms" else [],
        "compared_pairs": [f"{a}-{b}" for a, b in compared_numbers(study)],
        "document": True,
    }
    return render_to_string("evaluation/pairwise_report_document.html", context)
