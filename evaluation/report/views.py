"""HTML views of the report: the results page, the self-contained HTML report, the
comparison of two studies and the exports page. The numbers come from
:mod:`evaluation.report.build` and :mod:`evaluation.report.compare`, the page context and
the document from :mod:`evaluation.report.document`, the plots from
:mod:`evaluation.report.charts`."""

from __future__ import annotations

from django.contrib import messages
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.text import slugify
from django.views.decorators.vary import vary_on_headers

from evaluation.access import (
    can_unblind_study,
    comparable_studies,
    get_export_study_for_user,
    get_report_study_for_user,
    not_comparable,
)
from evaluation.models import Export, Study
from evaluation.report import exports
from evaluation.report.compare import compare_studies
from evaluation.report.document import (
    gap_links,
    pairwise_context,
    render_report_document,
    report_context,
)
from palmsweb.lib.htmx import render_page
from palmsweb.lib.http import require_get, require_get_post
from palmsweb.profiles import member_profile_ids
from palmsweb.roles import Role, role_required

research_access = role_required(Role.RESEARCHER)  # admins pass too


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


@require_get
@research_access
def study_pairwise_report(request, pk: int):
    """The pairwise results: win/tie/loss per arm pair and category, Bradley–Terry
    strengths, agreement. What shows follows the same report mode as the 1–5 results."""
    study, mode = get_report_study_for_user(request.user, pk)
    if study.mode != Study.Mode.PAIRWISE:
        raise Http404("This study rates outputs 1–5; its results are on the results page.")
    context = pairwise_context(study, mode)  # as its document shows it
    context["can_unblind"] = can_unblind_study(request.user, study) and not study.is_unblinded
    return render(request, "evaluation/pairwise_results.html", context)


@require_get
@research_access
def report_download(request, pk: int):
    study, mode = get_report_study_for_user(request.user, pk)
    html = render_report_document(study, mode)
    response = HttpResponse(html, content_type="text/html; charset=utf-8")
    name = f"palms-report-{study.pk}-{slugify(study.name) or 'study'}.html"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_get
@research_access
def study_compare(request):
    """Pick two studies; see per-category deltas of the values-targeted mean."""
    studies = list(comparable_studies(request.user))
    context = {"studies": studies, "comparison": None, "problem": ""}
    a_id, b_id = request.GET.get("a", ""), request.GET.get("b", "")
    status = 200
    if a_id and b_id:
        by_pk = {str(s.pk): s for s in studies}
        a, b = by_pk.get(a_id), by_pk.get(b_id)
        context.update(a=a, b=b)
        # The picker again with the reason, rather than a bare error page.
        if a is None or b is None:
            context["problem"] = not_comparable(a_id if a is None else b_id)
            status = 404
        elif a.pk == b.pk:
            context["problem"] = "Pick two different studies: A and B are the same study."
            status = 400
        else:
            readable = member_profile_ids(request.user)  # names no profile not theirs
            context["comparison"] = compare_studies(a, b, readable)
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
    return render_page(request, "evaluation/export_list.html", context, partial="exports")


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
