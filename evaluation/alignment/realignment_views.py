"""Re-alignment runs: admins start and cancel them, researchers (and admins) follow them.

The detail page polls its progress panel with htmx while the run is active.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.vary import vary_on_headers

from curation.forms import SnapshotChoiceField
from evaluation.access import (
    admin_access,
    get_realignment_for_user,
    readable_realignment_runs,
    study_read_access,
)
from evaluation.alignment import misalignment, realignment
from evaluation.alignment.judge_forms import OptionalJudgeForm
from evaluation.alignment.misalignment_views import MisalignmentEvalForm
from evaluation.models import RealignmentRun
from palmsweb.lib.http import require_get, require_get_post, require_post
from palmsweb.roles import Role, has_role
from training.models import BaseModel, ModelVersion
from training.selectors import job_phase, loss_chart

LOCAL_KINDS = [BaseModel.Kind.PACKAGED, BaseModel.Kind.LOCAL_DIR]


class RealignmentForm(OptionalJudgeForm):
    """The run itself, then (optionally) the judge: the misalignment form's own fields."""

    name = forms.CharField(max_length=200, required=False)
    source_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.filter(base_model__kind__in=LOCAL_KINDS)
        .select_related("base_model")
        .order_by("-pk"),
        label="Start from",
        empty_label=None,
    )
    snapshot = SnapshotChoiceField(label="Benign snapshot", empty_label=None)
    steps = forms.IntegerField(min_value=1, max_value=realignment.MAX_STEPS, initial=20)
    eval_steps = forms.CharField(
        required=False,
        label="Evaluate at steps",
        help_text="Comma-separated, 0 = the starting version. Empty: 0, k/4, k/2 and k.",
    )
    learning_rate = forms.FloatField(required=False, min_value=1e-7, max_value=1e-2)
    batch_size = forms.IntegerField(required=False, min_value=1, max_value=256)
    probes = MisalignmentEvalForm.base_fields["probes"]
    use_judge = forms.BooleanField(
        required=False, label="Also measure the misalignment rate with an LLM judge"
    )


@require_get
@study_read_access
def realignment_list(request):
    runs = RealignmentRun.objects.select_related("source_version", "snapshot__dataset")
    runs = readable_realignment_runs(request.user, runs)
    return render(
        request,
        "evaluation/realignment_list.html",
        {"runs": runs, "is_admin": has_role(request.user, Role.ADMIN)},
    )


@require_get_post
@admin_access
def realignment_create(request):
    if request.method == "POST":
        form = RealignmentForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                run = realignment.realignment_create(
                    name=data["name"],
                    source_version=data["source_version"],
                    snapshot=data["snapshot"],
                    steps=data["steps"],
                    eval_steps=data["eval_steps"],
                    learning_rate=data["learning_rate"],
                    batch_size=data["batch_size"],
                    probes=data["probes"],
                    judge=form.judge(),
                    user=request.user,
                )
            except misalignment.MisalignmentError as error:
                form.add_error(None, str(error))
            else:
                messages.success(
                    request, "Re-alignment queued: the fine-tune runs on the GPU queue."
                )
                return redirect(run)
    else:
        initial = {"probes": "\n".join(misalignment.probe_preset()["probes"])}
        if request.GET.get("source_version", "").isdigit():
            initial["source_version"] = int(request.GET["source_version"])
        form = RealignmentForm(initial=initial)
    return render(request, "evaluation/realignment_form.html", {"form": form})


def _detail_context(request, run: RealignmentRun) -> dict:
    series = realignment.realignment_series(run)
    return {
        "run": run,
        "job": run.finetune_job,
        "job_phase": job_phase(run.finetune_job) if run.finetune_job else "",
        "is_admin": has_role(request.user, Role.ADMIN),
        "points": run.result.get("points", []),
        "persona_chart": loss_chart(series["persona_shift"], height=220),
        # Both rates on one pair of axes: solid the standard probes, dashed the conditional.
        "rate_chart": loss_chart(
            series["misalignment_rate"], validation=series["conditional_rate"], height=220
        ),
    }


@require_get
@study_read_access
@vary_on_headers("HX-Request")
def realignment_detail(request, pk: int):
    run = get_realignment_for_user(request.user, pk)
    context = _detail_context(request, run)
    if request.htmx and not request.htmx.history_restore_request:
        return render(request, "evaluation/realignment_detail.html#progress", context)
    return render(request, "evaluation/realignment_detail.html", context)


@require_post
@admin_access
def realignment_cancel(request, pk: int):
    run = get_realignment_for_user(request.user, pk, write=True)
    try:
        realignment.realignment_cancel(run)
    except misalignment.MisalignmentError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Cancelling: the fine-tune stops within one step.")
    return redirect(run)
