"""The misalignment gate: every fine-tuned version with its gate state (researchers, admins),
gating a version (admins), and one gate's criteria and numbers.

The detail page polls itself with htmx while the gate is measuring.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.vary import vary_on_headers

from curation.forms import SnapshotChoiceField
from evaluation.access import admin_access, get_gate_for_user, readable_gates, study_read_access
from evaluation.alignment import gate as gates
from evaluation.alignment import misalignment
from evaluation.alignment.judge_forms import OptionalJudgeForm
from evaluation.models import ModelGate
from palmsweb.lib.http import require_get, require_get_post
from palmsweb.roles import Role, has_role
from training.models import ModelVersion


def gateable_versions():
    """Every version but the base ones (the reference a gate compares with), newest first."""
    return (
        ModelVersion.objects.exclude(arm=ModelVersion.Arm.BASE)
        .select_related("base_model")
        .order_by("-pk")
    )


class GateForm(OptionalJudgeForm):
    """The version, optionally the snapshot to make conditional probes from (default: the
    data the version was trained on), and optionally the judge (re-alignment's fields)."""

    model_version = forms.ModelChoiceField(queryset=gateable_versions(), empty_label=None)
    conditional_snapshot = SnapshotChoiceField(
        required=False,
        label="Conditional probes from",
        help_text="Empty: the snapshot the version was (first) fine-tuned on.",
    )
    use_judge = forms.BooleanField(
        required=False, label="Also measure the standard and conditional misalignment rates"
    )


@require_get
@study_read_access
def gate_list(request):
    versions = list(gateable_versions()[:200])
    # Only the gates the reader may open: another profile's gate state stays unseen.
    readable = readable_gates(request.user, ModelGate.objects.all())
    latest = gates.latest_gates((v.pk for v in versions), readable)
    rows = [
        {"version": v, "gate": latest.get(v.pk), "state": gates.gate_state(latest.get(v.pk))}
        for v in versions
    ]
    context = {
        "rows": rows,
        "is_admin": has_role(request.user, Role.ADMIN),
        "tolerance": gates.persona_tolerance(),
    }
    return render(request, "evaluation/gate_list.html", context)


@require_get_post
@admin_access
def gate_create(request):
    if request.method == "POST":
        form = GateForm(request.POST)
        if form.is_valid():
            try:
                gate = gates.gate_create(
                    model_version=form.cleaned_data["model_version"],
                    conditional_snapshot=form.cleaned_data["conditional_snapshot"],
                    judge=form.judge(),
                    user=request.user,
                )
            except misalignment.MisalignmentError as error:
                form.add_error(None, str(error))
            else:
                messages.success(request, "Gate queued: the measurements run on the workers.")
                return redirect(gate)
    else:
        initial = {}
        if request.GET.get("model_version", "").isdigit():
            initial["model_version"] = int(request.GET["model_version"])
        form = GateForm(initial=initial)
    status = 400 if request.method == "POST" else 200
    return render(request, "evaluation/gate_form.html", {"form": form}, status=status)


@require_get
@study_read_access
@vary_on_headers("HX-Request")
def gate_detail(request, pk: int):
    gate = get_gate_for_user(request.user, pk)
    context = {"gate": gate, "state": gates.gate_state(gate), "result": gate.result}
    if request.htmx and not request.htmx.history_restore_request:
        return render(request, "evaluation/gate_detail.html#progress", context)
    return render(request, "evaluation/gate_detail.html", context)
