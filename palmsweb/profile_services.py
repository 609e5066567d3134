"""Creating and changing value profiles and their memberships (admins only; the views and
the API check that, this module checks the content)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.text import slugify

from palmsweb.models import Membership, Profile
from palmsweb.roles import PROFILE_ROLES, Role, forget_cached_roles


class ProfileError(Exception):
    """A profile rule refused the change; the message says which (a 400)."""


def _clean_name(name: str, *, exclude_pk: int | None = None) -> str:
    name = (name or "").strip()
    if not name:
        raise ProfileError("A profile needs a name.")
    if len(name) > 120:
        raise ProfileError("A profile name has at most 120 characters.")
    if Profile.objects.filter(name__iexact=name).exclude(pk=exclude_pk).exists():
        raise ProfileError(f"A profile named {name!r} already exists.")
    return name


def _unique_slug(name: str) -> str:
    base = slugify(name)[:100] or "profile"
    slug, n = base, 2
    while Profile.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


@transaction.atomic
def profile_create(*, name: str, description: str = "", audience: str = "") -> Profile:
    name = _clean_name(name)
    return Profile.objects.create(
        name=name,
        slug=_unique_slug(name),
        description=description.strip(),
        audience=audience.strip()[:200],
    )


@transaction.atomic
def profile_update(*, profile: Profile, name: str, description: str, audience: str) -> Profile:
    """Rename or redescribe a profile; its slug stays, so links and commands keep working."""
    profile.name = _clean_name(name, exclude_pk=profile.pk)
    profile.description = description.strip()
    profile.audience = audience.strip()[:200]
    profile.save(update_fields=["name", "description", "audience"])
    return profile


def membership_add(*, profile: Profile, username: str, role: str) -> Membership:
    """Give the user ``role`` in ``profile`` (idempotent). Admin is site-wide, not a
    membership."""
    if role not in {r.value for r in PROFILE_ROLES}:
        raise ProfileError("A profile role is curator, rater or researcher (admin is site-wide).")
    user = get_user_model().objects.filter(username=(username or "").strip()).first()
    if user is None:
        raise ProfileError(f"No user named {username!r}.")
    membership, _ = Membership.objects.get_or_create(profile=profile, user=user, role=role)
    forget_cached_roles(user)
    return membership


def membership_remove(*, membership: Membership) -> None:
    """Take the role away. Ratings already given stay; the user no longer sees the profile
    in that role (a rater leaves the queue of its studies at once)."""
    membership.delete()


def members_by_role(profile: Profile) -> dict[Role, list[Membership]]:
    rows = profile.memberships.select_related("user").order_by("user__username")
    grouped: dict[Role, list[Membership]] = {role: [] for role in PROFILE_ROLES}
    for membership in rows:
        grouped[Role(membership.role)].append(membership)
    return grouped
