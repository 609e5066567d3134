"""The misalignment gate: every fine-tuned version with its gate state (researchers, admins),
gating a version (admins), and one gate's criteria and numbers.

The detail page polls itself with htmx while the gate is measuring.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.vary import vary_on_headers

from curation.forms import SnapshotChoiceField
from evaluation.access import admin_access, study_read_access
from evaluation.alignment import gate as gates
from evaluation.alignment import misalignment
from evaluation.alignment.realignment_views import RealignmentForm
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


class GateForm(forms.Form):
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
    n_samples = RealignmentForm.base_fields["n_samples"]
    max_new_tokens = RealignmentForm.base_fields["max_new_tokens"]
    judge_base_url = RealignmentForm.base_fields["judge_base_url"]
    judge_model = RealignmentForm.base_fields["judge_model"]
    judge_key_env = RealignmentForm.base_fields["judge_key_env"]
    judge_logprobs = RealignmentForm.base_fields["judge_logprobs"]
    coherence_min = RealignmentForm.base_fields["coherence_min"]
    misaligned_below = RealignmentForm.base_fields["misaligned_below"]
    JUDGE_FIELDS = RealignmentForm.JUDGE_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self.JUDGE_FIELDS:  # only needed with the judge; the service checks them
            self.fields[name].required = False

    def judge(self) -> dict:
        if not self.cleaned_data["use_judge"]:
            return {}
        return {name: self.cleaned_data[name] for name in self.JUDGE_FIELDS}


def get_gate_for_user(user, pk: int) -> ModelGate:
    """The gate, or 404; 403 unless the user is a researcher or admin."""
    if not has_role(user, Role.RESEARCHER):
        raise PermissionDenied("Misalignment gates are for researchers and admins.")
    related = ("model_version", "base_version", "evaluation")
    return get_object_or_404(ModelGate.objects.select_related(*related), pk=pk)


@require_get
@study_read_access
def gate_list(request):
    versions = list(gateable_versions()[:200])
    latest = gates.latest_gates(v.pk for v in versions)
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
