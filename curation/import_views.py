"""Importing samples from a file, in two steps: upload → preview → confirm.

The upload is checked whole. With problems, the page lists every one of them (and what the
file holds) and nothing is kept. Without, the file waits as a :class:`PendingImport` and
the preview page shows the rows per category and the status they get; *Import* checks it
again against the dataset as it is then and creates the samples. Curators and admins only;
a pending upload is visible to its uploader alone.
"""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render

from curation import importing
from curation.access import get_dataset_for_user, get_pending_import_for_user, write_access
from curation.forms import ImportForm
from curation.importing import MAX_IMPORT_BYTES, ImportRejected
from palmsweb.lib.http import require_get_post


@require_get_post
@write_access
def dataset_import(request, pk: int):
    dataset = get_dataset_for_user(request.user, pk, write=True)
    form = ImportForm(request.POST or None, request.FILES or None, profile_id=dataset.profile_id)
    context = {"dataset": dataset, "form": form, "preview": None}
    if request.method != "POST" or not form.is_valid():
        return render(request, "curation/import.html", context)
    upload, data = form.cleaned_data["file"], form.cleaned_data
    # One byte past the cap is enough for the importer to refuse it.
    content = upload.read(MAX_IMPORT_BYTES + 1)
    preview = importing.samples_import_preview(
        dataset=dataset,
        data=content,
        filename=upload.name,
        status=data["status"],
        default_category=data["default_category"],
    )
    if not preview.ok:
        context.update(preview=preview, filename=upload.name)
        return render(request, "curation/import.html", context, status=400)
    pending = importing.pending_import_create(
        dataset=dataset,
        data=content,
        filename=upload.name,
        user=request.user,
        status=data["status"],
        default_category=data["default_category"],
    )
    return redirect("curation:import-preview", pk=pending.pk)


@require_get_post
@write_access
def import_preview(request, pk: int):
    """The preview of a checked upload; POST ``confirm`` imports it, ``cancel`` drops it."""
    pending = get_pending_import_for_user(request.user, pk)
    dataset = pending.dataset
    if request.method == "POST" and "cancel" in request.POST:
        pending.delete()
        messages.info(request, f"Dropped {pending.filename}; nothing was imported.")
        return redirect("curation:dataset-import", pk=dataset.pk)
    if request.method == "POST":
        try:
            created = importing.pending_import_confirm(pending=pending, user=request.user)
        except ImportRejected:
            # The dataset changed since the preview (a duplicate was added, a category
            # archived): the page below shows what is wrong now.
            messages.error(request, "The file no longer passes its checks; nothing was imported.")
        else:
            messages.success(request, f"Imported {len(created)} samples from {pending.filename}.")
            return redirect(dataset)
    preview = importing.pending_import_preview(pending)
    context = {
        "dataset": dataset,
        "pending": pending,
        "preview": preview,
        "filename": pending.filename,
    }
    return render(
        request, "curation/import_preview.html", context, status=200 if preview.ok else 400
    )
