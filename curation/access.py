"""Who may read and change curation data: the one policy that both the HTML views and the
API's DRF permission classes call.

Curators (and admins, who pass every role check) read and write; researchers read, and
may file gap tickets; everyone else is refused. Two switches are for admins only: a
dataset's ``allow_self_approval`` and importing samples as approved. A pending import is
its uploader's alone. Roles are held per value profile: the ``get_<thing>_for_user`` helpers
check that the user holds the role somewhere (403), load the row (404 when missing), then
check the role again in the row's own profile (404 for a user of another profile, who must
not learn that it exists; 403 for a member without the role).
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
from palmsweb.models import Profile
from palmsweb.profiles import check_object_profile, require_current_profile
from palmsweb.roles import Role, has_role, role_required

READ_ROLES = (Role.CURATOR, Role.RESEARCHER)
WRITE_ROLES = (Role.CURATOR,)  # admins pass every role check

# View decorators: anonymous → the sign-in page, another role → 403.
read_access = role_required(*READ_ROLES)
write_access = role_required(*WRITE_ROLES)


# --- predicates -------------------------------------------------------------------------


def can_read(user, profile=None) -> bool:
    """Curators, researchers and admins see curation data (of ``profile``, or of any)."""
    return has_role(user, *READ_ROLES, profile=profile)


def can_write(user, profile=None) -> bool:
    """Curators and admins change curation data and review samples (in ``profile``, or in
    any)."""
    return has_role(user, *WRITE_ROLES, profile=profile)


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


def check_profile(user, profile_id: int, *, write: bool = False) -> None:
    """The per-object half of :func:`check_access`: the role again, in the object's profile."""
    if write:
        roles, refusal = WRITE_ROLES, "Only curators of this profile can change its data."
    else:
        roles, refusal = READ_ROLES, "Only curators and researchers of this profile see it."
    check_object_profile(user, profile_id, roles, refusal)


def profile_for_request(request, *, write: bool = False) -> Profile:
    """The request's active profile, checked like an object's: list pages show its rows and
    new rows go into it (403 for a user of no profile, or without the role there)."""
    profile = require_current_profile(request)
    check_profile(request.user, profile.pk, write=write)
    return profile


def get_category_for_user(user, pk: int, *, write: bool = False) -> Category:
    """The category, or 404; 403 unless the user may read (or, with ``write``, change) it."""
    check_access(user, write=write)
    category = get_object_or_404(Category, pk=pk)
    check_profile(user, category.profile_id, write=write)
    return category


def get_dataset_for_user(user, pk: int, *, write: bool = False) -> Dataset:
    """The dataset, or 404; 403 unless the user may read (or, with ``write``, change) it."""
    check_access(user, write=write)
    dataset = get_object_or_404(Dataset, pk=pk)
    check_profile(user, dataset.profile_id, write=write)
    return dataset


def get_sample_for_user(user, pk: int, *, write: bool = False) -> Sample:
    """The sample with its dataset, category and people, or 404; 403 unless the user may
    read (or, with ``write``, change) it."""
    check_access(user, write=write)
    related = ("dataset", "category", "author", "updated_by", "gap_ticket")
    sample = get_object_or_404(Sample.objects.select_related(*related), pk=pk)
    check_profile(user, sample.dataset.profile_id, write=write)
    return sample


def get_stale_edit_for_user(user, pk: int, *, write: bool = False) -> StaleEdit:
    """A refused edit, or 404; 403 unless the user may read (or, with ``write``, change) it."""
    check_access(user, write=write)
    stale = get_object_or_404(StaleEdit.objects.select_related("sample__dataset"), pk=pk)
    check_profile(user, stale.sample.dataset.profile_id, write=write)
    return stale


def get_snapshot_for_user(user, pk: int) -> Snapshot:
    """The snapshot with its dataset, or 404; 403 unless the user may read it.
    Snapshots are immutable, so there is no ``write`` flavour."""
    check_access(user, write=False)
    snapshot = get_object_or_404(Snapshot.objects.select_related("dataset", "created_by"), pk=pk)
    check_profile(user, snapshot.dataset.profile_id)
    return snapshot


def get_gap_ticket_for_user(user, pk: int, *, write: bool = False) -> GapTicket:
    """The ticket with its category and people, or 404; 403 unless the user may read (or,
    with ``write``, resolve) it."""
    if not can_read(user):
        raise PermissionDenied("Only curators and researchers can see gap tickets.")
    if write and not can_resolve_gap_ticket(user):
        raise PermissionDenied("Only curators can resolve gap tickets.")
    related = ("category", "created_by", "resolved_by", "resolved_in_snapshot__dataset")
    ticket = get_object_or_404(GapTicket.objects.select_related(*related), pk=pk)
    check_profile(user, ticket.category.profile_id, write=write)
    return ticket


def get_pending_import_for_user(user, pk: int) -> PendingImport:
    """The user's own pending upload, or 404 (another curator's is not theirs to see);
    403 unless the user may change curation data."""
    if not can_write(user):
        raise PermissionDenied("Only curators can import samples.")
    related = ("dataset", "default_category")
    pending = get_object_or_404(PendingImport.objects.select_related(*related), pk=pk)
    if pending.created_by_id != user.pk:
        raise Http404("No such pending import.")
    check_profile(user, pending.dataset.profile_id, write=True)
    return pending
