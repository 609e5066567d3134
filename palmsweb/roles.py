"""Roles. Curator, rater and researcher are held *per value profile*
(:class:`palmsweb.models.Membership`); admin is site-wide (staff, superusers, or the
``admin`` group). Checks happen in views and the API, never only in templates.

Without a ``profile`` argument a check asks "does the user hold this role in any profile?",
which is what navigation and the role gates of whole sections need; the per-object
``get_<thing>_for_user`` helpers then ask again for the object's own profile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from functools import wraps

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef
from django.shortcuts import redirect

from palmsweb.models import Membership, Profile


class Role(StrEnum):
    CURATOR = "curator"
    RATER = "rater"
    ADMIN = "admin"
    RESEARCHER = "researcher"


PROFILE_ROLES = (Role.CURATOR, Role.RATER, Role.RESEARCHER)
ProfileRef = Profile | int | None


def ensure_role_groups() -> None:
    """Create the site-wide ``admin`` group if missing (idempotent). The other roles are
    memberships of a profile, not groups."""
    Group.objects.get_or_create(name=Role.ADMIN.value)


def grant_role(user, role: Role, profile: ProfileRef = None) -> None:
    """Give ``user`` ``role``: in ``profile`` (the default profile when None) for the
    profile roles, site-wide for admin."""
    if role == Role.ADMIN:
        ensure_role_groups()
        user.groups.add(Group.objects.get(name=Role.ADMIN.value))
    else:
        profile_id = _profile_id(profile) or Profile.objects.default().pk
        Membership.objects.get_or_create(profile_id=profile_id, user=user, role=role.value)
    forget_cached_roles(user)


def forget_cached_roles(user) -> None:
    for attribute in ("_palms_admin", "_palms_memberships"):
        if hasattr(user, attribute):
            delattr(user, attribute)


def _profile_id(profile: ProfileRef) -> int | None:
    return profile.pk if isinstance(profile, Profile) else profile


def _is_active(user) -> bool:
    return bool(user.is_authenticated and user.is_active)


def _load_roles(user) -> None:
    """Read the admin group and every membership in one query (every request asks), and
    cache both on the user object."""
    in_admin_group = Group.objects.filter(user=OuterRef("pk"), name=Role.ADMIN.value)
    rows = (
        get_user_model()
        ._default_manager.filter(pk=user.pk)
        .annotate(in_admin_group=Exists(in_admin_group))
        .values_list("in_admin_group", "memberships__profile_id", "memberships__role")
    )
    held: dict[int, set[Role]] = {}
    in_group = False
    for row_in_group, profile_id, role in rows:
        in_group = in_group or row_in_group
        if profile_id is not None:
            held.setdefault(profile_id, set()).add(Role(role))
    user._palms_admin = bool(user.is_staff or user.is_superuser or in_group)
    user._palms_memberships = {pk: frozenset(roles) for pk, roles in held.items()}


def is_site_admin(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Staff, superusers and members of the ``admin`` group. Cached on the user object."""
    if not _is_active(user):
        return False
    if not hasattr(user, "_palms_admin"):
        _load_roles(user)
    return user._palms_admin


def memberships(user) -> dict[int, frozenset[Role]]:
    """``{profile id: roles held there}`` for the user. Cached on the user object."""
    if not _is_active(user):
        return {}
    if not hasattr(user, "_palms_memberships"):
        _load_roles(user)
    return user._palms_memberships


def user_roles(user, profile: ProfileRef = None) -> frozenset[Role]:
    """The roles a user holds in ``profile`` (in any profile when None), admin included."""
    held = memberships(user)
    if profile is None:
        roles = frozenset().union(*held.values()) if held else frozenset()
    else:
        roles = held.get(_profile_id(profile), frozenset())
    return roles | {Role.ADMIN} if is_site_admin(user) else roles


def has_role(user, *roles: Role, profile: ProfileRef = None) -> bool:
    """True when the user holds any of ``roles`` (in ``profile``, or in any profile when
    None). Admins pass every check except rating: a rater's queue is a personal
    assignment, so admins rate only where they are also a rater member."""
    held = user_roles(user, profile)
    if Role.ADMIN in held and Role.RATER not in roles:
        return True
    return bool(held.intersection(roles))


def profile_ids_with_role(user, *roles: Role) -> list[int]:
    """The profiles in which the user holds any of ``roles`` (every profile for admins,
    unless the question is about raters only): what list pages and API lists filter on."""
    if is_site_admin(user) and set(roles) - {Role.RATER}:
        return list(Profile.objects.values_list("pk", flat=True))
    wanted = set(roles)
    return sorted(pk for pk, held in memberships(user).items() if held & wanted)


def profiles_with_role(user, *roles: Role) -> Iterable[Profile]:
    return Profile.objects.filter(pk__in=profile_ids_with_role(user, *roles))


def role_required(*roles: Role) -> Callable:
    """View decorator: anonymous → login page, no such role in any profile → 403."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect(f"/accounts/login/?next={request.get_full_path()}")
            if not has_role(request.user, *roles):
                raise PermissionDenied("Your role does not allow this page.")
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
