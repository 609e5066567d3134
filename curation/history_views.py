"""A sample's history: every revision, the diff of two, restoring an old one, and
resolving an edit that was refused as stale."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from curation import services
from curation.access import (
    can_write,
    get_sample_for_user,
    get_stale_edit_for_user,
    read_access,
    write_access,
)
from curation.forms import DiffForm, RestoreForm
from curation.models import SampleRevision
from curation.selectors import revision_diff, sample_revisions
from curation.services import StaleEditError
from palmsweb.lib.http import require_get, require_post

# --- history ----------------------------------------------------------------------------


@require_get
@read_access
def sample_history(request, pk: int):
    sample = get_sample_for_user(request.user, pk)
    revisions = list(sample_revisions(sample))
    context = {
        "sample": sample,
        "dataset": sample.dataset,
        "revisions": revisions,
        "default_a": revisions[1].number if len(revisions) > 1 else sample.version,
        "default_b": sample.version,
        "can_write": can_write(request.user, sample.dataset.profile_id),
    }
    return render(request, "curation/sample_history.html", context)


@require_get
@read_access
def sample_diff(request, pk: int):
    sample = get_sample_for_user(request.user, pk)
    form = DiffForm(request.GET)
    if not form.is_valid():
        return HttpResponseBadRequest("Pick two revisions: ?a=N&b=M with revision numbers.")
    revisions = sample_revisions(sample)
    rev_a = get_object_or_404(revisions, number=form.cleaned_data["a"])
    rev_b = get_object_or_404(revisions, number=form.cleaned_data["b"])
    context = {"sample": sample, "dataset": sample.dataset, "diff": revision_diff(rev_a, rev_b)}
    return render(request, "curation/sample_diff.html", context)


@require_post
@write_access
def sample_restore(request, pk: int):
    sample = get_sample_for_user(request.user, pk, write=True)
    form = RestoreForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Restoring needs a revision number and the version.")
    number = form.cleaned_data["revision"]
    if not SampleRevision.objects.filter(sample=sample, number=number).exists():
        raise Http404("No such revision.")
    try:
        restored = services.sample_restore(
            sample_id=sample.pk,
            revision_number=number,
            base_version=form.cleaned_data["version"],
            user=request.user,
        )
    except StaleEditError as error:
        # Same rule as an edit: refused, and the restored text waits in the editor.
        messages.error(request, str(error))
        edit_url = reverse("curation:sample-edit", args=[sample.pk])
        return redirect(f"{edit_url}?stale={error.stale_edit.pk}")
    messages.success(request, f"Restored revision {number} as revision {restored.version}.")
    return redirect("curation:sample-history", pk=sample.pk)


@require_post
@write_access
def stale_edit_resolve(request, pk: int):
    stale = get_stale_edit_for_user(request.user, pk, write=True)
    services.stale_edit_resolve(stale_edit=stale)
    messages.success(request, "Marked the unmerged edit as resolved.")
    return redirect(stale.sample)
