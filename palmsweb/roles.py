"""Roles are Django groups. Checks happen in views and the API, never only in templates."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from functools import wraps

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect


class Role(StrEnum):
    CURATOR = "curator"
    RATER = "rater"
    ADMIN = "admin"
    RESEARCHER = "researcher"


def ensure_role_groups() -> None:
    """Create the role groups if missing (idempotent)."""
    for role in Role:
        Group.objects.get_or_create(name=role.value)


def user_roles(user: AbstractBaseUser | AnonymousUser) -> frozenset[Role]:
    """The roles a user holds; staff count as admin. Cached on the user object."""
    if not user.is_authenticated or not user.is_active:
        return frozenset()
    cached = getattr(user, "_palms_roles", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))
        cached = frozenset(role for role in Role if role.value in names)
        if user.is_staff or user.is_superuser:
            cached = cached | {Role.ADMIN}
        user._palms_roles = cached
    return cached


def has_role(user, *roles: Role) -> bool:
    """True when the user holds any of ``roles``. Admins pass every check except rating:
    a rater's queue is a personal assignment, so admins rate only if also in the group."""
    held = user_roles(user)
    if Role.ADMIN in held and Role.RATER not in roles:
        return True
    return bool(held.intersection(roles))


def role_required(*roles: Role) -> Callable:
    """View decorator: anonymous → login page, wrong role → 403."""

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
