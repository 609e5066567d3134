"""Which value profile a request works in, and the per-object profile check.

Pages work in one profile at a time, the *active* one (kept in the session, switched from
the navigation bar), the way a workspace works in annotation tools: list pages show its
objects and new objects go into it. Object pages check the object's own profile instead, so
a link into another profile the user belongs to still opens. The API has no session
profile: lists cover every profile the user may read (``?profile=<id>`` narrows them) and
creation names its profile (or the user's only one).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import serializers

from palmsweb.lib.drf import int_param
from palmsweb.models import Profile
from palmsweb.roles import (
    PROFILE_ROLES,
    Role,
    has_role,
    is_site_admin,
    memberships,
    profile_ids_with_role,
)

SESSION_KEY = "palmsweb_profile_id"


def member_profile_ids(user) -> list[int]:
    """Every profile the user holds any role in (all of them for admins)."""
    return profile_ids_with_role(user, *PROFILE_ROLES)


def member_profiles(request) -> list[Profile]:
    """The profiles of :func:`member_profile_ids`, by name; one query, cached on the request
    (the navigation bar's switcher and the active profile both read it)."""
    if not hasattr(request, "_palms_profiles"):
        user = request.user
        if is_site_admin(user):
            profiles = Profile.objects.all()
        else:
            profiles = Profile.objects.filter(pk__in=list(memberships(user)))
        request._palms_profiles = list(profiles.order_by("name")) if user.is_authenticated else []
    return request._palms_profiles


def current_profile(request) -> Profile | None:
    """The request's active profile: the one chosen in the session when the user still
    belongs to it, else the first by name of those they hold a role in (an admin with no
    membership: the newest profile, where fresh work is); None for a user of no profile.
    Cached on the request."""
    if hasattr(request, "_palms_profile"):
        return request._palms_profile
    profiles = member_profiles(request)
    chosen = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
    profile = next((p for p in profiles if p.pk == chosen), None)
    request._palms_profile = profile or _first_profile(request.user, profiles)
    return request._palms_profile


def _first_profile(user, profiles: list[Profile]) -> Profile | None:
    held = [p for p in profiles if p.pk in memberships(user)]
    if held:
        return held[0]
    return max(profiles, key=lambda p: (p.created_at, p.pk)) if profiles else None


def switch_profile(request, profile: Profile) -> None:
    """Make ``profile`` the active one (404 unless the user belongs to it)."""
    if profile.pk not in member_profile_ids(request.user):
        raise Http404("No such profile.")
    request.session[SESSION_KEY] = profile.pk
    request._palms_profile = profile


def require_current_profile(request) -> Profile:
    """The active profile, or 403 for a user who belongs to none."""
    profile = current_profile(request)
    if profile is None:
        raise PermissionDenied("You are not a member of any value profile yet: ask an admin.")
    return profile


def check_object_profile(user, profile_id: int, roles: tuple[Role, ...], refusal: str) -> None:
    """404 when the user holds no role in the object's profile (another profile's objects
    do not exist for them); 403 with ``refusal`` when they hold a role there but none of
    ``roles``."""
    if not is_site_admin(user) and profile_id not in member_profile_ids(user):
        raise Http404("No such object.")
    if not has_role(user, *roles, profile=profile_id):
        raise PermissionDenied(refusal)


class ProfileScopedPrimaryKeyField(serializers.PrimaryKeyRelatedField):
    """A related object chosen by id among the profiles the requesting user holds one of
    ``roles`` in: an id of another profile gets DRF's "object does not exist" (400), the
    same answer as an id that was never used, so it tells nothing about other profiles."""

    def __init__(self, *, profile_path: str = "profile", roles=PROFILE_ROLES, **kwargs):
        self.profile_path = profile_path
        self.roles = tuple(roles)
        super().__init__(**kwargs)

    def get_queryset(self):
        queryset = super().get_queryset()
        request = self.context.get("request")
        if request is None:
            return queryset.none()
        ids = profile_ids_with_role(request.user, *self.roles)
        return queryset.filter(**{f"{self.profile_path}__in": ids})


def in_profiles(view, queryset, roles: tuple[Role, ...], path: str):
    """An API viewset's queryset narrowed to the profiles the user holds one of ``roles``
    in; on lists, ``?profile=<id>`` narrows it to one of them."""
    ids = profile_ids_with_role(view.request.user, *roles)
    queryset = queryset.filter(**{f"{path}__in": ids})
    wanted = int_param(view.request.query_params, "profile")
    if wanted is not None and view.action == "list":
        queryset = queryset.filter(**{path: wanted})
    return queryset


def profile_for_create(user, chosen: Profile | None, roles: tuple[Role, ...]) -> Profile:
    """The profile a row created through the API goes into: the one the request names
    (403 unless the user holds one of ``roles`` there), else the user's only such profile
    (400 when there are several, or none)."""
    allowed = profile_ids_with_role(user, *roles)
    if chosen is not None:
        if chosen.pk not in allowed:
            raise PermissionDenied("Your role in that value profile does not allow this.")
        return chosen
    if len(allowed) != 1:
        raise serializers.ValidationError(
            {
                "profile": [
                    f"Say which value profile this goes into: you may write to {len(allowed)}."
                ]
            }
        )
    return Profile.objects.get(pk=allowed[0])


def profile_choice_field(roles: tuple[Role, ...], help_text: str):
    """A writable ``profile`` id among the profiles the user holds one of ``roles`` in."""
    return ProfileScopedPrimaryKeyField(
        queryset=Profile.objects.all(), profile_path="pk", roles=roles, required=False,
        help_text=help_text,
    )  # fmt: skip
