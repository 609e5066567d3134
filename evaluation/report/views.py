"""HTML views of the report: the results page, the self-contained HTML report, the
comparison of two studies and the exports page. The numbers come from
:mod:`evaluation.report.build`; the plots are inline SVG drawn here (no JavaScript library)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from django.contrib import messages
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template import TemplateDoesNotExist
from django.template.loader import get_template, render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.utils.text import slugify
from django.views.decorators.vary import vary_on_headers

from evaluation.access import (
    can_unblind_study,
    get_export_study_for_user,
    get_report_study_for_user,
)
from evaluation.models import Export, Study
from evaluation.report import exports
from evaluation.report.build import Report, build_report, compare_studies
from evaluation.studies.selectors import study_progress
from palmsweb.lib.http import require_get, require_get_post
from palmsweb.roles import Role, role_required

research_access = role_required(Role.RESEARCHER)  # admins pass too

SCORE_TEMPLATES = (
    "evaluation/_report_toxicity.html",
    "evaluation/_report_cooccurrence.html",
    "evaluation/_report_capability.html",
)
ARM_COLOURS = {"base": "#8a94a6", "control": "#d9822b", "values_targeted": "#2b6cb0"}
LETTER_COLOURS = ["#2b6cb0", "#d9822b", "#4a9d5b", "#9b4dca", "#c53030", "#718096"]


def _report_for(study: Study, mode: str) -> Report:
    return build_report(study, blinded=(mode != "arms"), include_arms=(mode != "arm-free"))


# --- plots --------------------------------------------------------------------------------


def _colour(report: Report, arm) -> str:
    if arm.kind:
        return ARM_COLOURS.get(arm.kind, "#555")
    return LETTER_COLOURS[(ord(arm.letter[0]) - 65) % len(LETTER_COLOURS)]


def _y(score: float, top: float, height: float) -> float:
    return top + height * (5 - score) / 4  # the 1–5 scale, upwards (the size chart)


# The per-category chart is drawn at a fixed size in pixels, whatever the number of
# categories: one row per category (horizontal labels, never rotated), one bar per arm, so
# its fonts never scale with the page. A study with more categories gets a taller chart.
CHART_LABEL_W, CHART_PLOT_W, CHART_VALUE_W = 190, 320, 44
CHART_BAR_H, CHART_BAR_GAP, CHART_GROUP_GAP, CHART_TOP = 12, 2, 12, 26
CHART_FONT, CHART_SMALL_FONT = 12, 11
CHART_LABEL_CHARS = 28


def _x(score: float) -> float:
    return CHART_LABEL_W + CHART_PLOT_W * (score - 1) / 4  # the 1–5 scale


def category_chart(report: Report) -> str:
    """Horizontal grouped bars: mean per arm in each category (and overall) with 95% CI
    whiskers, at a fixed width and constant font sizes."""
    if not report.rows:
        return ""
    groups = [(c.name, i) for i, c in enumerate(report.categories)] + [("All categories", -1)]
    n_arms = len(report.rows)
    group_h = n_arms * (CHART_BAR_H + CHART_BAR_GAP) + CHART_GROUP_GAP
    width = CHART_LABEL_W + CHART_PLOT_W + CHART_VALUE_W
    height = CHART_TOP + len(groups) * group_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" class="chart chart-fixed" role="img" '
        f'aria-label="Mean rating per category and arm with 95% confidence intervals">'
    ]
    for s in (1, 2, 3, 4, 5):
        x = _x(s)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{CHART_TOP - 4}" y2="{height}" '
            f'stroke="#e2e6ec"/><text x="{x:.1f}" y="{CHART_TOP - 10}" '
            f'font-size="{CHART_SMALL_FONT}" text-anchor="middle" fill="#555">{s}</text>'
        )
    for g, (name, idx) in enumerate(groups):
        y0 = CHART_TOP + g * group_h
        short = name if len(name) <= CHART_LABEL_CHARS else name[: CHART_LABEL_CHARS - 1] + "…"
        weight = ' font-weight="600"' if idx < 0 else ""
        parts.append(
            f'<text x="{CHART_LABEL_W - 8}" y="{y0 + (group_h - CHART_GROUP_GAP) / 2 + 4:.1f}" '
            f'font-size="{CHART_FONT}" text-anchor="end" fill="#333"{weight}>'
            f"<title>{escape(name)}</title>{escape(short)}</text>"
        )
        for a, row in enumerate(report.rows):
            cell = row.overall if idx < 0 else row.cells[idx]
            parts.append(_bar(report, row, cell, name, y0 + a * (CHART_BAR_H + CHART_BAR_GAP)))
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped


def _bar(report: Report, row, cell, name: str, y: float) -> str:
    """One arm's bar in one category, its CI whisker and its value."""
    mean = cell.summary.mean
    if mean is None:
        return ""
    x1, mid = _x(mean), y + CHART_BAR_H / 2
    parts = [
        f'<rect x="{CHART_LABEL_W}" y="{y:.1f}" width="{max(x1 - CHART_LABEL_W, 1):.1f}" '
        f'height="{CHART_BAR_H}" fill="{_colour(report, row.arm)}">'
        f"<title>{escape(row.arm.label)} · {escape(name)}: {mean:.2f} "
        f"(n={cell.n_outputs})</title></rect>"
    ]
    lo, hi = cell.summary.ci_low, cell.summary.ci_high
    end = x1
    if lo is not None and hi is not None:
        xl, xh = _x(lo), _x(hi)
        end = max(end, xh)
        parts.append(
            f'<path d="M{xl:.1f} {mid:.1f}H{xh:.1f}M{xl:.1f} {mid - 3:.1f}v6'
            f'M{xh:.1f} {mid - 3:.1f}v6" stroke="#1a202c" stroke-width="1.2"/>'
        )
    parts.append(
        f'<text x="{min(end + 4, CHART_LABEL_W + CHART_PLOT_W + 4):.1f}" y="{mid + 4:.1f}" '
        f'font-size="{CHART_SMALL_FONT}" fill="#333">{mean:.2f}</text>'
    )
    return "".join(parts)


def size_chart(report: Report) -> str:
    """Overall mean per arm kind against model size (sizes in parameter order)."""
    if not report.several_sizes:
        return ""
    left, top, height, step = 34, 12, 180, 120
    width = left + step * (len(report.sizes) - 1) + 60
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {top + height + 40}" '
        f'class="chart" role="img" aria-label="Mean rating against model size">'
    ]
    for s in (1, 2, 3, 4, 5):
        y = _y(s, top, height)
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e6ec"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{s}</text>'
        )
    xs = [left + 20 + i * step for i in range(len(report.sizes))]
    for x, point in zip(xs, report.sizes, strict=True):
        parts.append(
            f'<text x="{x}" y="{top + height + 18}" font-size="11" text-anchor="middle">'
            f"{escape(point.size_tag)}</text>"
        )
    for kind, colour in ARM_COLOURS.items():
        pts = [
            (x, p.means[kind], p.ci.get(kind))
            for x, p in zip(xs, report.sizes, strict=True)
            if p.means.get(kind) is not None
        ]
        if not pts:
            continue
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{x} {_y(m, top, height):.1f}"
            for i, (x, m, _ci) in enumerate(pts)
        )
        parts.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, m, ci in pts:
            parts.append(
                f'<circle cx="{x}" cy="{_y(m, top, height):.1f}" r="4" fill="{colour}">'
                f"<title>{kind}: {m:.2f}</title></circle>"
            )
            if ci and ci[0] is not None and ci[1] is not None:
                parts.append(
                    f'<path d="M{x} {_y(ci[0], top, height):.1f}V{_y(ci[1], top, height):.1f}" '
                    f'stroke="{colour}" stroke-width="1"/>'
                )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped


def judge_heatmap(report: Report) -> str:
    """5 × 5 counts of (rounded median human rating, rounded judge score): the diagonal
    is agreement. Rows: humans 5 (top) to 1; columns: judge 1 to 5."""
    if report.judge is None or not report.judge.agreement.n:
        return ""
    table = report.judge.agreement.table
    top = max(max(row) for row in table) or 1
    cell, left, head = 34, 58, 22
    size = 5 * cell
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {left + size + 8} '
        f'{head + size + 40}" class="chart heatmap" role="img" aria-label="Counts of outputs '
        f'by human rating and judge score">'
    ]
    for h in range(5, 0, -1):
        y = head + (5 - h) * cell
        parts.append(
            f'<text x="{left - 6}" y="{y + cell / 2 + 4:.1f}" font-size="11" '
            f'text-anchor="end">{h}</text>'
        )
        for j in range(1, 6):
            count = table[h - 1][j - 1]
            x = left + (j - 1) * cell
            shade = 0.08 + 0.85 * count / top if count else 0.0
            stroke = ' stroke="#1a202c" stroke-width="1.5"' if h == j else ' stroke="#fff"'
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" '
                f'fill="rgba(43,108,176,{shade:.2f})"{stroke}>'
                f"<title>human {h}, judge {j}: {count}</title></rect>"
                f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + 4:.1f}" font-size="11" '
                f'text-anchor="middle" fill="{"#fff" if shade > 0.55 else "#1a202c"}">'
                f"{count or ''}</text>"
            )
    for j in range(1, 6):
        parts.append(
            f'<text x="{left + (j - 0.5) * cell:.1f}" y="{head - 6}" font-size="11" '
            f'text-anchor="middle">{j}</text>'
        )
    parts.append(
        f'<text x="{left + size / 2:.1f}" y="{head + size + 18}" font-size="11" '
        f'text-anchor="middle" fill="#555">judge score (columns)</text>'
        f'<text x="{left + size / 2:.1f}" y="{head + size + 32}" font-size="11" '
        f'text-anchor="middle" fill="#555">median human rating (rows)</text>'
    )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - numbers only


# --- context ------------------------------------------------------------------------------


def _template_exists(name: str) -> bool:
    try:
        get_template(name)
    except TemplateDoesNotExist:
        return False
    return True


def score_sections(study: Study, *, blinded: bool) -> tuple[dict | None, list[str]]:
    """The automatic-score sections, when the scoring module is installed."""
    try:
        from evaluation.scoring.runs import report_sections
    except ImportError:
        return None, []
    scores = report_sections(study, blinded=blinded)
    return scores, [t for t in SCORE_TEMPLATES if _template_exists(t)]


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
            source.update(mean_diff=round(row.result.mean_diff, 3), p_holm=row.welch_p_holm)
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
    report = _report_for(study, mode)
    scores, score_templates = (None, [])
    if mode != "arm-free":
        scores, score_templates = score_sections(study, blinded=(mode != "arms"))
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
    }


def provenance(study: Study, report: Report) -> dict:
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


# --- views --------------------------------------------------------------------------------


@require_get
@research_access
def study_report(request, pk: int):
    """The results page. Unblinded: everything. Admins before unblinding: arms as letters.
    Researchers on a closed, blinded study: arm-free numbers and the Unblind button."""
    study, mode = get_report_study_for_user(request.user, pk)
    context = report_context(study, mode)
    if mode == "arms":
        context["gaps"] = gap_links(context["report"])
    context["can_unblind"] = can_unblind_study(request.user, study) and not study.is_unblinded
    return render(request, "evaluation/study_results.html", context)


def render_report_document(study: Study, mode: str) -> str:
    """The self-contained HTML report (CSS and SVG inline, no external assets)."""
    context = report_context(study, mode)
    context["provenance"] = provenance(study, context["report"])
    context["document"] = True
    return render_to_string("evaluation/report_document.html", context)


@require_get
@research_access
def report_download(request, pk: int):
    study, mode = get_report_study_for_user(request.user, pk)
    html = render_report_document(study, mode)
    response = HttpResponse(html, content_type="text/html; charset=utf-8")
    name = f"palms-report-{study.pk}-{slugify(study.name) or 'study'}.html"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _comparable_studies(user):
    # Unblinded studies only, admins included: a comparison names the arms.
    studies = Study.objects.filter(status=Study.Status.CLOSED, unblinded_at__isnull=False)
    return studies.order_by("-closed_at", "-pk")


@require_get
@research_access
def study_compare(request):
    """Pick two studies; see per-category deltas of the values-targeted mean."""
    studies = list(_comparable_studies(request.user))
    context = {"studies": studies, "comparison": None, "problem": ""}
    a_id, b_id = request.GET.get("a", ""), request.GET.get("b", "")
    status = 200
    if a_id and b_id:
        by_pk = {str(s.pk): s for s in studies}
        a, b = by_pk.get(a_id), by_pk.get(b_id)
        context.update(a=a, b=b)
        # The picker again with the reason, rather than a bare error page.
        if a is None or b is None:
            missing = a_id if a is None else b_id
            context["problem"] = (
                f"There is no closed, unblinded study #{missing}: only those can be compared."
            )
            status = 404
        elif a.pk == b.pk:
            context["problem"] = "Pick two different studies: A and B are the same study."
            status = 400
        else:
            context["comparison"] = compare_studies(a, b)
    return render(request, "evaluation/compare_studies.html", context, status=status)


@require_get_post
@research_access
@vary_on_headers("HX-Request")
def export_list(request, pk: int):
    """Exports of a study: start one (POST), watch them finish (htmx polling)."""
    study = get_export_study_for_user(request.user, pk)
    if request.method == "POST":
        fmt = request.POST.get("format", "")
        if fmt not in Export.Format.values:
            messages.error(request, "Pick a format: CSV, JSON Lines, Parquet or bundle.")
            return redirect("evaluation:study-exports", pk=study.pk)
        try:
            exports.export_create(study=study, fmt=fmt, user=request.user)
        except exports.ExportError as error:
            messages.error(request, str(error))
        else:
            messages.success(request, "Export queued: it appears below when it is ready.")
        return redirect("evaluation:study-exports", pk=study.pk)
    items = list(study.exports.select_related("created_by")[:50])
    context = {
        "study": study,
        "exports": items,
        "formats": Export.Format.choices,
        "exportable": study.status == Study.Status.CLOSED,
        "pending": any(e.status in (Export.Status.QUEUED, Export.Status.RUNNING) for e in items),
    }
    template = "evaluation/export_list.html"
    if request.htmx:
        template += "#exports"
    return render(request, template, context)


@require_get
@research_access
def export_download(request, pk: int):
    """Stream a finished export file with its SHA-256 in the headers."""
    export = get_object_or_404(Export.objects.select_related("study"), pk=pk)
    get_export_study_for_user(request.user, export.study_id)
    if export.status != Export.Status.SUCCEEDED:
        raise Http404("This export has not finished.")
    path = exports.export_path(export)
    if not path.exists():
        raise Http404("The export file is gone.")
    response = FileResponse(
        path.open("rb"),
        as_attachment=True,
        filename=path.name,
        content_type=exports.content_type(export),
    )
    response["X-Checksum-SHA256"] = export.sha256
    response["Repr-Digest"] = f"sha-256=:{exports.b64_digest(export.sha256)}:"
    return response
