"""What every evaluation API viewset shares: token-then-session authentication, the domain
errors (:mod:`evaluation.errors`) as status codes, and the ``ERROR`` schema of a refusal."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response

from evaluation import errors
from palmsweb.lib.drf import TokenAuthentication

ERROR = OpenApiResponse(
    inline_serializer("EvaluationErrorResponse", {"detail": serializers.CharField()}),
    description="The action was refused; the message says why.",
)


class EvaluationViewSet(viewsets.GenericViewSet):
    # Token first, so an anonymous request gets 401 with "WWW-Authenticate: Token".
    authentication_classes = [TokenAuthentication, SessionAuthentication]

    def handle_exception(self, exc):
        if isinstance(exc, errors.OutputNotFound):
            return Response({"detail": str(exc)}, status=status.HTTP_404_NOT_FOUND)
        if isinstance(exc, errors.NotARater):
            return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
        if isinstance(exc, errors.StudyStateError | errors.RatingError | errors.StaleAnswerError):
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        if isinstance(exc, errors.EvaluationError):
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return super().handle_exception(exc)

    def validated(self, serializer_class, data=None, **kwargs):
        serializer = serializer_class(
            data=self.request.data if data is None else data,
            context=self.get_serializer_context(),
            **kwargs,
        )
        serializer.is_valid(raise_exception=True)
        return serializer
