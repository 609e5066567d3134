"""Who may read and change curation data: the one policy that both the HTML views and the
API's DRF permission classes call.

Curators (and admins, who pass every role check) read and write; researchers read, and
may file gap tickets; everyone else is refused. Two switches are for admins only: a
dataset's ``allow_self_approval`` and importing samples as approved. A pending import is
its uploader's alone. Every curation object is otherwise open to every reader: the rules
are per role, not per row, so the ``get_<thing>_for_user`` helpers check the role, then
load the row (404 when missing).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404

from curation.models import (
    Category,
    Dataset,
    GapTicket,
    PendingImport,
    Sample,
    Snapshot,
    StaleEdit,
)
from palmsweb.roles import Role, has_role, role_required

READ_ROLES = (Role.CURATOR, Role.RESEARCHER)
WRITE_ROLES = (Role.CURATOR,)  # admins pass every role check

# View decorators: anonymous → the sign-in page, another role → 403.
read_access = role_required(*READ_ROLES)
write_access = role_required(*WRITE_ROLES)


# --- predicates -------------------------------------------------------------------------


def can_read(user) -> bool:
    """Curators, researchers and admins see curation data."""
    return has_role(user, *READ_ROLES)


def can_write(user) -> bool:
    """Curators and admins change curation data (and review samples)."""
    return has_role(user, *WRITE_ROLES)


def can_file_gap_ticket(user) -> bool:
    """Researchers file tickets too: the study report links to the new-ticket page."""
    return can_read(user)


def can_resolve_gap_ticket(user) -> bool:
    return can_write(user)


def is_admin(user) -> bool:
    """Admins alone set ``allow_self_approval`` and import samples as approved."""
    return has_role(user, Role.ADMIN)


# --- the object helpers the HTML views use ----------------------------------------------


def check_access(user, *, write: bool = False) -> None:
    """403 unless the user may read (or, with ``write``, change) curation data."""
    if write and not can_write(user):
        raise PermissionDenied("Only curators can change curation data.")
    if not can_read(user):
        raise PermissionDenied("Only curators and researchers can see curation data.")


def get_category_for_user(user, pk: int, *, write: bool = False) -> Category:
    """The category, or 404; 403 unless the user may read (or, with ``write``, change) it."""
    check_access(user, write=write)
    return get_object_or_404(Category, pk=pk)


def get_dataset_for_user(user, pk: int, *, write: bool = False) -> Dataset:
    """The dataset, or 404; 403 unless the user may read (or, with ``write``, change) it."""
    check_access(user, write=write)
    return get_object_or_404(Dataset, pk=pk)


def get_sample_for_user(user, pk: int, *, write: bool = False) -> Sample:
    """The sample with its dataset, category and people, or 404; 403 unless the user may
    read (or, with ``write``, change) it."""
    check_access(user, write=write)
    related = ("dataset", "category", "author", "updated_by", "gap_ticket")
    return get_object_or_404(Sample.objects.select_related(*related), pk=pk)


def get_stale_edit_for_user(user, pk: int, *, write: bool = False) -> StaleEdit:
    """A refused edit, or 404; 403 unless the user may read (or, with ``write``, change) it."""
    check_access(user, write=write)
    return get_object_or_404(StaleEdit.objects.select_related("sample"), pk=pk)


def get_snapshot_for_user(user, pk: int) -> Snapshot:
    """The snapshot with its dataset, or 404; 403 unless the user may read it.
    Snapshots are immutable, so there is no ``write`` flavour."""
    check_access(user, write=False)
    return get_object_or_404(Snapshot.objects.select_related("dataset", "created_by"), pk=pk)


def get_gap_ticket_for_user(user, pk: int, *, write: bool = False) -> GapTicket:
    """The ticket with its category and people, or 404; 403 unless the user may read (or,
    with ``write``, resolve) it."""
    if not can_read(user):
        raise PermissionDenied("Only curators and researchers can see gap tickets.")
    if write and not can_resolve_gap_ticket(user):
        raise PermissionDenied("Only curators can resolve gap tickets.")
    related = ("category", "created_by", "resolved_by", "resolved_in_snapshot__dataset")
    return get_object_or_404(GapTicket.objects.select_related(*related), pk=pk)


def get_pending_import_for_user(user, pk: int) -> PendingImport:
    """The user's own pending upload, or 404 (another curator's is not theirs to see);
    403 unless the user may change curation data."""
    if not can_write(user):
        raise PermissionDenied("Only curators can import samples.")
    related = ("dataset", "default_category")
    pending = get_object_or_404(PendingImport.objects.select_related(*related), pk=pk)
    if pending.created_by_id != user.pk:
        raise Http404("No such pending import.")
    return pending
