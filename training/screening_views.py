"""Sample screening pages (issue 21): launch a screening of a snapshot, follow it, read each
sample's persona-shift score, sorted, with the dataset's distribution and its outliers."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.vary import vary_on_headers

from curation.forms import SnapshotChoiceField
from palmsweb.lib.htmx import is_partial
from palmsweb.lib.http import require_get, require_get_post
from palmsweb.profiles import check_object_profile, require_current_profile
from palmsweb.roles import role_required
from training.access import (
    SCREENING_READ_ROLES,
    can_launch_screening,
    get_screening_for_user,
)
from training.models import BaseModel, ScreeningRun
from training.services import TrainingError
from training.services.screening import MAX_OWN_TOKENS, MIN_OWN_TOKENS, screening_launch
from training.views import progress_context

screening_access = role_required(*SCREENING_READ_ROLES)
SORTS = {"shift": ("-shift",), "category": ("category", "-shift"), "order": ("index",)}


class ScreeningForm(forms.Form):
    snapshot = SnapshotChoiceField(label="Snapshot to screen", empty_label=None)
    base_model = forms.ModelChoiceField(
        queryset=BaseModel.objects.filter(kind__in=[BaseModel.Kind.PACKAGED,
                                                    BaseModel.Kind.LOCAL_DIR]),
        empty_label=None, help_text="A local model: the score reads its activations.",
    )  # fmt: skip
    max_new_tokens = forms.IntegerField(
        min_value=MIN_OWN_TOKENS, max_value=MAX_OWN_TOKENS, initial=64,
        label="Own-answer length (tokens)",
        help_text="Each sample is compared with the model's own greedy answer this long.",
    )  # fmt: skip

    def __init__(self, *args, profile_id: int, **kwargs):
        super().__init__(*args, **kwargs)
        snapshots = self.fields["snapshot"].queryset
        self.fields["snapshot"].queryset = snapshots.filter(dataset__profile_id=profile_id)


def _profile(request):
    profile = require_current_profile(request)
    refusal = "Sample screenings are for this profile's curators and researchers."
    check_object_profile(request.user, profile.pk, SCREENING_READ_ROLES, refusal)
    return profile


@require_get_post
@screening_access
def screening_list(request):
    """The active profile's screenings, newest first, and the launch form (curators)."""
    profile = _profile(request)
    initial = {"snapshot": request.GET.get("snapshot")} if request.GET.get("snapshot") else {}
    form = ScreeningForm(request.POST or None, initial=initial, profile_id=profile.pk)
    if request.method == "POST" and form.is_valid():
        if not can_launch_screening(request.user, form.cleaned_data["snapshot"]):
            raise PermissionDenied("Only this profile's curators and admins screen samples.")
        try:
            run = screening_launch(**form.cleaned_data, user=request.user)
        except TrainingError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Queued screening #{run.pk}.")
            return redirect(run)
    runs = ScreeningRun.objects.filter(snapshot__dataset__profile=profile)
    context = {
        "runs": runs.select_related("snapshot__dataset", "base_model")[:50],
        "form": form,
        "can_launch": can_launch_screening(request.user) and profile is not None,
        "section": "screening",
    }
    status = 400 if request.method == "POST" else 200
    return render(request, "training/screening_list.html", context, status=status)


def sorted_rows(run: ScreeningRun, sort: str) -> list[dict]:
    keys = SORTS.get(sort, SORTS["shift"])
    rows = list(run.scores)
    for key in reversed(keys):
        name = key.lstrip("-")
        rows.sort(key=lambda row, name=name: row[name], reverse=key.startswith("-"))
    return rows


def strip_plot(run: ScreeningRun) -> dict | None:
    """Each sample as a dot on one horizontal axis per category, x = its shift: where a
    dataset's risky samples stand out at a glance."""
    if not run.scores:
        return None
    shifts = [row["shift"] for row in run.scores]
    low, high = min(shifts), max(shifts)
    span = (high - low) or 1.0
    categories = sorted({row["category"] for row in run.scores})
    lanes = []
    for lane, category in enumerate(categories):
        dots = [
            {"x": round(4 + 92 * (row["shift"] - low) / span, 2), "row": row}
            for row in run.scores if row["category"] == category
        ]  # fmt: skip
        lanes.append({"category": category or "(no category)", "y": 18 + lane * 22, "dots": dots})
    median_x = round(4 + 92 * (run.summary.get("median", low) - low) / span, 2)
    return {"lanes": lanes, "height": 26 + 22 * len(lanes), "low": low, "high": high,
            "median_x": median_x}  # fmt: skip


@require_get
@screening_access
@vary_on_headers("HX-Request")
def screening_detail(request, pk: int):
    run = get_screening_for_user(request.user, pk)
    sort = request.GET.get("sort", "shift")
    context = {
        "job": run,
        "run": run,
        "progress": progress_context(run),
        "rows": sorted_rows(run, sort),
        "sort": sort if sort in SORTS else "shift",
        "plot": strip_plot(run),
        "section": "screening",
    }
    template = "training/screening_detail.html"
    if is_partial(request) and request.GET.get("part") == "progress":
        template += "#progress"
    return render(request, template, context)
