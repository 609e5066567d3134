"""A preference snapshot's page and DPO from it (issue 18, item 3): curators and admins of
the study's profile see the snapshot, its downloads and the DPO fine-tunes trained on it;
admins launch one (start version, beta, learning rate, epochs, full or LoRA). The launch
goes through :func:`preference_training.preference_dpo_launch`, as the API's does."""

from __future__ import annotations

import json

from django import forms
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render

from evaluation.access import get_preference_snapshot_for_user, preference_access
from evaluation.errors import EvaluationError
from evaluation.report import preference_training
from palmsweb.lib.http import require_get, require_post
from training.models import FineTuneJob, ModelVersion

ARM_CHOICES = [("", "The start version's arm")] + [
    (value, label) for value, label in ModelVersion.Arm.choices if value != ModelVersion.Arm.BASE
]


class StartVersionField(forms.ModelChoiceField):
    def label_from_instance(self, version: ModelVersion) -> str:
        return f"{version.name} ({version.get_arm_display()}, {version.size_label})"


class DpoLaunchForm(forms.Form):
    """What an admin chooses; blank hyperparameters are prefilled by the model's size."""

    start_version = StartVersionField(
        queryset=ModelVersion.objects.none(), empty_label=None,
        help_text="Usually the values-targeted fine-tune; the DPO'd model keeps its arm.",
    )  # fmt: skip
    method = forms.ChoiceField(choices=FineTuneJob.Method.choices, initial="full", required=False)
    beta = forms.FloatField(
        required=False, min_value=0.001, max_value=10,
        help_text="How far from the start the model may move (0.1 is usual).",
    )  # fmt: skip
    learning_rate = forms.FloatField(required=False, help_text="Blank: by the model's size.")
    epochs = forms.IntegerField(required=False, min_value=1, max_value=100)
    batch_size = forms.IntegerField(
        required=False, min_value=1, max_value=256, help_text="Pairs per step."
    )
    arm = forms.ChoiceField(
        choices=ARM_CHOICES, required=False,
        help_text="Only from a base version, which has no such arm.",
    )  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        versions = preference_training.dpo_start_versions()
        self.fields["start_version"].queryset = versions
        first = versions.filter(arm=ModelVersion.Arm.VALUES_TARGETED).first() or versions.first()
        if first is not None and not self.is_bound:
            self.initial["start_version"] = first.pk
            defaults = _defaults(first)
            for name in ("beta", "learning_rate", "epochs", "batch_size"):
                self.initial[name] = defaults[name]

    def hyperparameters(self) -> dict:
        names = ("beta", "learning_rate", "epochs", "batch_size")
        return {n: self.cleaned_data[n] for n in names if self.cleaned_data.get(n) is not None}


def _defaults(version: ModelVersion) -> dict:
    from training.services import dpo_defaults

    return dpo_defaults(version)


def _page(request, snapshot, form, *, error: str = "", status: int = 200):
    content = json.loads(snapshot.content)
    context = {
        "snapshot": snapshot,
        "preference_set": snapshot.preference_set,
        "study": snapshot.preference_set.study,
        "provenance": content.get("provenance", {}),
        "jobs": preference_training.dpo_jobs_for(snapshot),
        "form": form,
        "error": error,
    }
    return render(request, "evaluation/preference_snapshot_detail.html", context, status=status)


@require_get
@preference_access
def preference_snapshot_detail(request, pk: int):
    snapshot = get_preference_snapshot_for_user(request.user, pk)
    can_launch = preference_training.can_launch_dpo(request.user)
    return _page(request, snapshot, DpoLaunchForm() if can_launch else None)


@require_post
@preference_access
def preference_snapshot_dpo(request, pk: int):
    """Launch DPO on the snapshot's pairs (admins); a refusal re-shows the form with 400."""
    snapshot = get_preference_snapshot_for_user(request.user, pk)
    if not preference_training.can_launch_dpo(request.user):
        raise PermissionDenied("Only admins may launch fine-tunes.")
    form = DpoLaunchForm(request.POST)
    if not form.is_valid():
        return _page(request, snapshot, form, status=400)
    try:
        job = preference_training.preference_dpo_launch(
            snapshot=snapshot,
            start_version=form.cleaned_data["start_version"],
            method=form.cleaned_data["method"] or FineTuneJob.Method.FULL,
            hyperparameters=form.hyperparameters(),
            arm=form.cleaned_data["arm"] or None,
            user=request.user,
        )
    except EvaluationError as refused:
        return _page(request, snapshot, form, error=str(refused), status=400)
    return redirect(job)
