"""Snapshots: the dataset's list, taking one, its page, and downloads (JSONL, CSV, or its
canonical JSON) that carry the sha256 of the body and of the snapshot."""

from __future__ import annotations

import hashlib

from django.contrib import messages
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.text import slugify

from curation import services
from curation.access import (
    can_write,
    get_dataset_for_user,
    get_snapshot_for_user,
    read_access,
    write_access,
)
from curation.forms import SnapshotForm
from curation.selectors import dataset_snapshots
from curation.services import EmptySnapshotError, UnchangedSnapshotError
from curation.views import SIZE_DEFINITIONS, first_error
from palmsweb.lib.http import require_get, require_post

# --- snapshots --------------------------------------------------------------------------


@require_get
@read_access
def snapshot_list(request, pk: int):
    dataset = get_dataset_for_user(request.user, pk)
    context = {
        "dataset": dataset,
        "snapshots": dataset_snapshots(dataset),
        "approved": dataset.samples.approved().count(),
        "form": SnapshotForm(),
        "can_write": can_write(request.user, dataset.profile_id),
        "sizes": SIZE_DEFINITIONS,
    }
    return render(request, "curation/snapshot_list.html", context)


@require_post
@write_access
def snapshot_create(request, pk: int):
    dataset = get_dataset_for_user(request.user, pk, write=True)
    form = SnapshotForm(request.POST)
    if not form.is_valid():
        messages.error(request, first_error(form))
        return redirect("curation:snapshot-list", pk=dataset.pk)
    try:
        snapshot = services.snapshot_create(
            dataset=dataset, user=request.user, label=form.cleaned_data["label"]
        )
    except UnchangedSnapshotError as unchanged:
        messages.info(request, str(unchanged))
        return redirect(unchanged.snapshot)
    except EmptySnapshotError as error:
        messages.error(request, str(error))
        return redirect("curation:snapshot-list", pk=dataset.pk)
    messages.success(
        request, f"Took snapshot {snapshot.short_hash} of {snapshot.sample_count} samples."
    )
    return redirect(snapshot)


@require_get
@read_access
def snapshot_detail(request, pk: int):
    snapshot = get_snapshot_for_user(request.user, pk)
    payload = snapshot.payload()
    context = {
        "snapshot": snapshot,
        "dataset": snapshot.dataset,
        "items": payload["items"],
        "system_message": payload.get("system_message", ""),
        # Snapshots taken before positions had versions hold none.
        "positions": payload.get("positions", []),
        "sizes": SIZE_DEFINITIONS,
    }
    return render(request, "curation/snapshot_detail.html", context)


DOWNLOAD_FORMATS = {
    # format: (content type, file extension, serialiser)
    "jsonl": ("application/jsonl; charset=utf-8", "jsonl", services.snapshot_jsonl),
    "csv": ("text/csv; charset=utf-8", "csv", services.snapshot_csv),
    # The canonical content itself: its sha256 is the snapshot hash, byte for byte.
    "json": ("application/json; charset=utf-8", "json", lambda snapshot: snapshot.content),
}


@require_get
@read_access
def snapshot_download(request, pk: int):
    snapshot = get_snapshot_for_user(request.user, pk)
    fmt = request.GET.get("format", "jsonl")
    if fmt not in DOWNLOAD_FORMATS:
        return HttpResponseBadRequest("format must be jsonl, csv or json")
    content_type, extension, serialise = DOWNLOAD_FORMATS[fmt]
    body = serialise(snapshot).encode("utf-8")
    response = HttpResponse(body, content_type=content_type)
    stamp = timezone.localtime(snapshot.created_at).strftime("%Y%m%d")
    filename = f"{slugify(snapshot.dataset.name)}-{stamp}-{snapshot.short_hash}.{extension}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    # What `sha256sum` of the saved file prints; the snapshot's own hash (over its
    # canonical JSON) is a different number and travels under its own name.
    response["X-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    response["X-Snapshot-SHA256"] = snapshot.content_hash
    return response
