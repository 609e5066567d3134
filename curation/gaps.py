"""The iteration loop: gap tickets.

A weak category or a low-rated output from a study report becomes a gap ticket on its
category; samples written to close it link back to it (``Sample.gap_ticket``); once those
samples are approved, the tickets are resolved together with a new snapshot of the
dataset, so each resolved ticket names the snapshot that closed it.

Services here follow :mod:`curation.services`: keyword-only, atomic, and they raise
:class:`~curation.services.CurationError` with a message fit to show as is.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from curation.models import (
    MAX_TEXT_CHARS,
    Category,
    Dataset,
    GapTicket,
    Sample,
    Snapshot,
    canonical_json,
)
from curation.services import CurationError, UnchangedSnapshotError, snapshot_create
from palmsweb.lib.format import format_p, format_signed

MAX_TITLE_CHARS = 200
# ``source`` holds a few ids and scores from a report, never whole transcripts.
MAX_SOURCE_BYTES = 10_000

Status = GapTicket.Status


class GapTicketError(CurationError):
    """A gap-ticket rule refused the action; the message says which."""


# --- reads ------------------------------------------------------------------------------


def gap_tickets(*, category: int | None = None, status: str = "") -> QuerySet[GapTicket]:
    """Tickets, open first then newest, optionally narrowed to a category and a status."""
    tickets = GapTicket.objects.select_related("category", "created_by", "resolved_by")
    if category:
        tickets = tickets.filter(category_id=category)
    if status:
        tickets = tickets.filter(status=status)
    return tickets


def approved_in(dataset: Dataset) -> Exists:
    """Whether a ticket has at least one approved sample in ``dataset`` (for annotations)."""
    return Exists(
        Sample.objects.filter(
            gap_ticket=OuterRef("pk"), dataset=dataset, status=Sample.Status.APPROVED
        )
    )


def tickets_ready_in(dataset: Dataset) -> QuerySet[GapTicket]:
    """Open tickets with at least one approved sample in ``dataset``: what a new snapshot
    of it would close."""
    return gap_tickets(status=Status.OPEN).filter(approved_in(dataset))


# --- validation ---------------------------------------------------------------------------


def validate_source(source) -> dict:
    """``source`` is a JSON object (study, output id, scores…) of bounded size."""
    if source is None:
        return {}
    if not isinstance(source, dict):
        raise GapTicketError('The source must be a JSON object, such as {"study": 3}.')
    try:
        encoded = canonical_json(source).encode("utf-8")
    except (TypeError, ValueError):
        raise GapTicketError("The source must contain only JSON values.") from None
    if len(encoded) > MAX_SOURCE_BYTES:
        raise GapTicketError(
            f"The source is too large ({len(encoded):,} bytes; at most {MAX_SOURCE_BYTES:,})."
        )
    return source


# --- services -----------------------------------------------------------------------------


SOURCE_KINDS = {"category": "a weak category in a study", "output": "a low-rated output"}


def describe_source(source: dict) -> list[tuple[str, str, str]]:
    """A ticket's source as rows a person reads: (label, text, link or ""). The report
    fills the source; known keys get words and formatted numbers, others show as they are."""
    source = dict(source or {})
    rows: list[tuple[str, str, str]] = []
    if "kind" in source:
        kind = str(source.pop("kind"))
        rows.append(("Found as", SOURCE_KINDS.get(kind, kind), ""))
    if "study" in source:
        study, name = source.pop("study"), source.pop("study_name", "")
        text = f"“{name}” (#{study})" if name else f"#{study}"
        rows.append(("Study", text, _study_results_url(study)))
    labels = {
        "output": ("Output", str),
        "mean": ("Mean rating", lambda v: f"{v:.2f} of 5" if isinstance(v, int | float) else v),
        "mean_diff": ("Values-targeted − base", format_signed),
        "p_holm": ("p (Holm-adjusted)", format_p),
    }
    for key, (label, show) in labels.items():
        if key in source:
            rows.append((label, str(show(source.pop(key))), ""))
    rows += [(key, str(value), "") for key, value in sorted(source.items())]
    return rows


def _study_results_url(study) -> str:
    # The evaluation app sits above curation: link by URL name, if it is installed.
    try:
        return reverse("evaluation:study-results", args=[int(study)])
    except (NoReverseMatch, TypeError, ValueError):
        return ""


@transaction.atomic
def gap_ticket_create(
    *,
    category: Category | None,
    title: str,
    description: str = "",
    source: dict | None = None,
    user=None,
) -> GapTicket:
    """File an open gap ticket on ``category``."""
    if category is None:
        raise GapTicketError("A gap ticket needs a category.")
    if category.is_archived:
        raise GapTicketError(f"The category {category.name!r} is archived; restore it first.")
    title = (title or "").strip()
    if not title:
        raise GapTicketError("A gap ticket needs a title: the gap, in a few words.")
    if len(title) > MAX_TITLE_CHARS:
        raise GapTicketError(f"The title is limited to {MAX_TITLE_CHARS} characters.")
    description = (description or "").strip()
    if len(description) > MAX_TEXT_CHARS:
        raise GapTicketError(f"The description is limited to {MAX_TEXT_CHARS:,} characters.")
    return GapTicket.objects.create(
        category=category,
        title=title,
        description=description,
        source=validate_source(source),
        created_by=user,
    )


def _mark_resolved(ticket: GapTicket, *, user, snapshot: Snapshot | None) -> GapTicket:
    ticket.status = Status.RESOLVED
    ticket.resolved_by = user
    ticket.resolved_at = timezone.now()
    ticket.resolved_in_snapshot = snapshot
    ticket.save(update_fields=["status", "resolved_by", "resolved_at", "resolved_in_snapshot"])
    return ticket


def _lock_open(ticket_ids: Iterable[int]) -> list[GapTicket]:
    """Lock the tickets (so two curators cannot resolve one twice) and check they are
    still open."""
    ids = sorted(set(ticket_ids))
    tickets = list(
        GapTicket.objects.select_for_update().select_related("category").filter(pk__in=ids)
    )
    missing = set(ids) - {ticket.pk for ticket in tickets}
    if missing:
        raise GapTicketError(f"No gap ticket #{min(missing)}.")
    for ticket in tickets:
        if ticket.status != Status.OPEN:
            raise GapTicketError(f"The gap ticket {ticket.title!r} is already resolved.")
    return tickets


@transaction.atomic
def gap_ticket_resolve(*, ticket: GapTicket, user) -> GapTicket:
    """Close one open ticket without a snapshot (a duplicate, or a gap closed elsewhere)."""
    (locked,) = _lock_open([ticket.pk])
    return _mark_resolved(locked, user=user, snapshot=None)


@transaction.atomic
def tickets_resolve_and_snapshot(
    *, dataset: Dataset, tickets: Iterable[GapTicket], user, label: str = ""
) -> Snapshot:
    """Take a new snapshot of ``dataset`` and resolve ``tickets`` in it, all or nothing.

    Every ticket must be open and have at least one approved sample in ``dataset``, so
    the snapshot really contains something written for it. Each resolved ticket records
    the snapshot (``resolved_in_snapshot``). When nothing changed since the dataset's
    latest snapshot, that snapshot already holds those samples and the tickets record it.
    """
    ids = [ticket.pk for ticket in tickets]
    if not ids:
        raise GapTicketError("Pick at least one gap ticket to resolve.")
    locked = _lock_open(ids)
    ready = set(tickets_ready_in(dataset).filter(pk__in=ids).values_list("pk", flat=True))
    for ticket in locked:
        if ticket.pk not in ready:
            raise GapTicketError(
                f"The gap ticket {ticket.title!r} has no approved sample in {dataset.name}; "
                "write and approve one first."
            )
    try:
        snapshot = snapshot_create(dataset=dataset, user=user, label=label)
    except UnchangedSnapshotError as unchanged:
        # The latest snapshot already holds the samples written for these gaps.
        snapshot = unchanged.snapshot
    for ticket in locked:
        _mark_resolved(ticket, user=user, snapshot=snapshot)
    return snapshot
