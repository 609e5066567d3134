"""What every curation API viewset shares: authentication, the access check, domain
errors turned into status codes, and input validation."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle

from curation import access, services
from curation.serializers import SampleSerializer, StaleEditSerializer
from palmsweb.lib.drf import TokenAuthentication
from palmsweb.models import Profile
from palmsweb.profiles import in_profiles, profile_for_create
from palmsweb.roles import profile_ids_with_role


class CurationAccess(BasePermission):
    """Reads: curators, researchers, admins. Writes: curators and admins (the policy in
    :mod:`curation.access`), in the object's own value profile. Objects of profiles the
    user holds no role in are not in the viewset's queryset at all (404)."""

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            self.message = "Curation data is open to curators, researchers and admins."
            return access.can_read(request.user)
        self.message = "Only curators and admins may change curation data."
        return access.can_write(request.user)

    def has_object_permission(self, request, view, obj) -> bool:
        if request.method in SAFE_METHODS:
            self.message = "Only curators and researchers of this profile see it."
            return access.can_read(request.user, obj.profile_id)
        self.message = "Only curators of this profile may change its data."
        return access.can_write(request.user, obj.profile_id)


class CurationViewSet(viewsets.GenericViewSet):
    # Token first, so an anonymous request gets 401 with "WWW-Authenticate: Token".
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [CurationAccess]
    throttle_classes = [UserRateThrottle]
    # The lookup from the viewset's model to its value profile.
    profile_path = "profile"

    def get_queryset(self):
        """Only the profiles the user reads in; ``?profile=<id>`` narrows to one of them."""
        return in_profiles(self, super().get_queryset(), access.READ_ROLES, self.profile_path)

    def readable(self, queryset, profile_path: str):
        """``queryset`` narrowed to the profiles the user reads in."""
        readable = profile_ids_with_role(self.request.user, *access.READ_ROLES)
        return queryset.filter(**{f"{profile_path}__in": readable})

    def check_write_profile(self, profile_id: int) -> None:
        """403 unless the user may change data of the profile that ``profile_id`` names."""
        if not access.can_write(self.request.user, profile_id):
            raise PermissionDenied("Only curators of this profile may change its data.")

    def profile_for_create(self, chosen: Profile | None) -> Profile:
        """The profile a new row goes into (see :func:`palmsweb.profiles.profile_for_create`)."""
        return profile_for_create(self.request.user, chosen, access.WRITE_ROLES)

    def handle_exception(self, exc):
        if isinstance(exc, services.StaleEditError):
            body = {
                "detail": str(exc),
                "current": SampleSerializer(exc.current).data,
                "yours": StaleEditSerializer(exc.stale_edit).data,
                "stale_edit_id": exc.stale_edit.pk,
            }
            return Response(body, status=status.HTTP_409_CONFLICT)
        if isinstance(exc, services.CurationError):
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return super().handle_exception(exc)

    def validated(self, serializer_class, data=None, **kwargs) -> dict:
        serializer = serializer_class(
            data=self.request.data if data is None else data,
            context=self.get_serializer_context(),
            **kwargs,
        )
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


CURATION_ERROR = OpenApiResponse(
    inline_serializer("CurationErrorResponse", {"detail": serializers.CharField()}),
    description="Invalid input, or a curation rule refused the action (message says why).",
)
