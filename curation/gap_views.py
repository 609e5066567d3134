"""Gap-ticket pages: the iteration loop's list, new ticket, ticket, resolve, and "resolve
tickets in a new snapshot".

Curators and admins do everything; researchers read tickets and file new ones (the study
report links to the new-ticket page); everyone else gets 403. Views call
:mod:`curation.gaps` for every change.
"""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.vary import vary_on_headers

from curation import gaps
from curation.access import (
    can_read,
    can_write,
    get_dataset_for_user,
    get_gap_ticket_for_user,
    profile_for_request,
    read_access,
    write_access,
)
from curation.forms import GapTicketFilterForm, GapTicketForm, ResolveSnapshotForm
from curation.gaps import GapTicketError
from curation.models import Category, Dataset, GapTicket, Sample
from curation.services import CurationError
from palmsweb.lib.htmx import render_page
from palmsweb.lib.http import require_get, require_get_post, require_post

# Researchers may file tickets (the study report links to the new-ticket page), so
# creating needs only the read roles: curators, researchers, admins.
create_access = read_access


def _initial_from_query(query) -> dict:
    """The report page links here with the ticket spelled out in the query string."""
    initial = {key: query[key] for key in ("title", "description", "source") if query.get(key)}
    if query.get("category", "").isdigit():
        initial["category"] = int(query["category"])
    if "title" in initial:
        initial["title"] = initial["title"][:200]
    return initial


@require_get
@read_access
@vary_on_headers("HX-Request")
def gap_list(request):
    profile = profile_for_request(request)
    filter_form = GapTicketFilterForm(request.GET, profile_id=profile.pk)
    filters = filter_form.filters()
    context = {
        "tickets": gaps.gap_tickets(**filters).filter(category__profile=profile),
        "filter_form": filter_form,
        "filters": filters,
        "profile": profile,
        "can_write": can_write(request.user, profile),
    }
    return render_page(request, "curation/gap_list.html", context, partial="tickets")


def _gap_profile_id(request) -> int:
    """The profile a new ticket is filed in: the chosen category's (the study report links
    here with one, from whichever profile the study is in) when the user reads there, else
    the active profile."""
    chosen = request.POST.get("category") or request.GET.get("category") or ""
    category = Category.objects.filter(pk=int(chosen)).first() if chosen.isdigit() else None
    if category is not None and can_read(request.user, category.profile_id):
        return category.profile_id
    return profile_for_request(request).pk


@require_get_post
@create_access
def gap_create(request):
    form = GapTicketForm(
        request.POST or None,
        initial=_initial_from_query(request.GET),
        profile_id=_gap_profile_id(request),
    )
    if request.method == "POST" and form.is_valid():
        try:
            ticket = gaps.gap_ticket_create(**form.cleaned_data, user=request.user)
        except GapTicketError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Filed the gap ticket “{ticket.title}”.")
            return redirect("curation:gap-detail", pk=ticket.pk)
    context = {"form": form, "source_rows": gaps.describe_source(form.source_value())}
    return render(request, "curation/gap_form.html", context)


@require_get
@read_access
def gap_detail(request, pk: int):
    ticket = get_gap_ticket_for_user(request.user, pk)
    samples = list(
        ticket.samples.select_related("dataset", "author").order_by("dataset__name", "pk")
    )
    datasets = list(Dataset.objects.filter(profile_id=ticket.category.profile_id))
    # Datasets where this ticket could be resolved with a new snapshot right now.
    approved_in = {s.dataset_id for s in samples if s.status == Sample.Status.APPROVED}
    ready_in = [
        dataset
        for dataset in datasets
        if ticket.status == GapTicket.Status.OPEN and dataset.pk in approved_in
    ]
    context = {
        "ticket": ticket,
        "source_rows": gaps.describe_source(ticket.source),
        "samples": samples,
        "datasets": datasets,
        "ready_in": ready_in,
        "can_write": can_write(request.user, ticket.category.profile_id),
    }
    return render(request, "curation/gap_detail.html", context)


@require_post
@write_access
def gap_resolve(request, pk: int):
    ticket = get_gap_ticket_for_user(request.user, pk, write=True)
    try:
        gaps.gap_ticket_resolve(ticket=ticket, user=request.user)
    except GapTicketError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Resolved “{ticket.title}”.")
    return redirect("curation:gap-detail", pk=ticket.pk)


@require_get_post
@write_access
def gap_resolve_snapshot(request, pk: int):
    """One step: resolve the chosen tickets and take a new snapshot of the dataset."""
    dataset = get_dataset_for_user(request.user, pk, write=True)
    ready = gaps.tickets_ready_in(dataset)
    # From a ticket's page (?ticket=<id>) only that ticket starts ticked; otherwise all.
    chosen = request.GET.getlist("ticket") or [ticket.pk for ticket in ready]
    form = ResolveSnapshotForm(request.POST or None, ready=ready, initial={"tickets": chosen})
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                snapshot = gaps.tickets_resolve_and_snapshot(
                    dataset=dataset,
                    tickets=form.cleaned_data["tickets"],
                    user=request.user,
                    label=form.cleaned_data["label"],
                )
            except CurationError as error:
                form.add_error(None, str(error))
            else:
                n = len(form.cleaned_data["tickets"])
                messages.success(
                    request,
                    f"Resolved {n} gap ticket{'s' if n != 1 else ''} in snapshot "
                    f"{snapshot.short_hash} of {snapshot.sample_count} samples.",
                )
                return redirect(snapshot)
        status = 400
    context = {"dataset": dataset, "form": form, "ready": ready}
    return render(request, "curation/gap_resolve_snapshot.html", context, status=status)
