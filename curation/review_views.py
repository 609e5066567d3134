"""Review pages: "waiting for my review" and bulk actions on ticked samples.

The queue lists the samples a curator may approve as an independent reviewer; opening one
from it shows previous / next and keyboard keys on the sample page (``?queue=1``). Bulk
submit, approve and archive run the single-sample services one by one
(:func:`curation.review.samples_bulk_action`) and report each refusal. Curators and
admins only.
"""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from curation import review
from curation.access import write_access
from curation.forms import BulkActionForm
from curation.models import Dataset
from curation.sample_views import queue_dataset, queue_url
from curation.services import CurationError
from curation.views import first_error
from palmsweb.lib.http import require_get, require_post

MAX_REFUSALS_SHOWN = 20


@require_get
@write_access
def review_queue(request):
    dataset = queue_dataset(request, request.GET)
    samples = list(review.review_queue(request.user, dataset=dataset))
    context = {
        "samples": samples,
        "queue_dataset": dataset,
        "datasets": Dataset.objects.filter(profile__in=review.curated_profile_ids(request.user)),
        "first_url": queue_url(samples[0].pk, dataset) if samples else "",
        "here": request.get_full_path(),
    }
    return render(request, "curation/review_queue.html", context)


def _safe_next(request, target: str, fallback: str) -> str:
    allowed = url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return target if target and allowed else fallback


def _report(request, action: str, result: review.BulkResult) -> None:
    if result.done:
        n = len(result.done)
        messages.success(request, f"{review.BULK_DONE[action]} {n} sample{'s' * (n != 1)}.")
    for pk, why in result.refused[:MAX_REFUSALS_SHOWN]:
        messages.error(request, f"Sample #{pk} refused: {why}")
    more = len(result.refused) - MAX_REFUSALS_SHOWN
    if more > 0:
        messages.error(request, f"…and {more} more refused.")


@require_post
@write_access
def sample_bulk(request):
    """Submit, approve or archive the ticked samples; back to the page they were ticked on."""
    form = BulkActionForm(request.POST)
    fallback = reverse("curation:dataset-list")
    if not form.is_valid():
        messages.error(request, first_error(form))
        return redirect(_safe_next(request, request.POST.get("next", ""), fallback))
    data = form.cleaned_data
    try:
        result = review.samples_bulk_action(
            action=data["action"], items=data["sample"], user=request.user, body=data["body"]
        )
    except CurationError as error:
        messages.error(request, str(error))
    else:
        _report(request, data["action"], result)
    return redirect(_safe_next(request, data["next"], fallback))
