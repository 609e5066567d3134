"""What every curation API viewset shares: authentication, the access check, domain
errors turned into status codes, and input validation."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle

from curation import access, services
from curation.serializers import SampleSerializer, StaleEditSerializer
from palmsweb.lib.drf import TokenAuthentication


class CurationAccess(BasePermission):
    """Reads: curators, researchers, admins. Writes: curators and admins (the policy in
    :mod:`curation.access`)."""

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            self.message = "Curation data is open to curators, researchers and admins."
            return access.can_read(request.user)
        self.message = "Only curators and admins may change curation data."
        return access.can_write(request.user)


class CurationViewSet(viewsets.GenericViewSet):
    # Token first, so an anonymous request gets 401 with "WWW-Authenticate: Token".
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [CurationAccess]
    throttle_classes = [UserRateThrottle]

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
