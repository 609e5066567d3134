"""API tokens: issued for a password or a signed-in session, expiring, listed and revoked
on the account page.

Tokens are django-rest-knox's: only a hash is stored, each has an expiry
(``API_TOKEN_TTL_DAYS``), a user may hold several (one per script or machine), and clients
keep sending ``Authorization: Token <key>``. Password attempts go through Django's
``authenticate`` and so through django-axes, which limits failures per username and per
client address exactly as on the sign-in page.
"""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from knox.models import AuthToken
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import APIException, NotAuthenticated, Throttled
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from palmsweb.lib.drf import RejectUnknownFieldsMixin, SafeJSONParser, TokenAuthentication


class TokenError(Exception):
    """A token action was refused; the message says why."""


# --- services -------------------------------------------------------------------------------


@transaction.atomic
def token_create(*, user) -> tuple[AuthToken, str]:
    """A new token for ``user`` and its key (shown once: only its hash is stored). The
    user's expired tokens are deleted on the way."""
    AuthToken.objects.filter(user=user, expiry__lt=timezone.now()).delete()
    return AuthToken.objects.create(user=user)


@transaction.atomic
def token_revoke(*, user, token_key: str) -> None:
    """Delete one of ``user``'s tokens, named by its key prefix (as listed)."""
    if not token_key:
        raise TokenError("Choose a token to revoke.")
    deleted, _ = AuthToken.objects.filter(user=user, token_key=token_key).delete()
    if not deleted:
        raise TokenError("No such token of yours (it may have expired or been revoked).")


def tokens_of(user):
    """The user's live tokens, newest first."""
    return AuthToken.objects.filter(user=user, expiry__gt=timezone.now()).order_by("-created")


# --- API ------------------------------------------------------------------------------------


class TokenRequestSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    username = serializers.CharField(required=False)
    password = serializers.CharField(
        required=False, trim_whitespace=False, style={"input_type": "password"}
    )


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send it as `Authorization: Token <token>`.")
    expiry = serializers.DateTimeField(help_text="After this the token stops working.")


class BadCredentials(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Unable to sign in with that username and password."
    default_code = "bad_credentials"


LOCKED_OUT = "Too many failed sign-in attempts. Wait and try again."
TOKEN_ERROR = OpenApiResponse(
    inline_serializer("TokenErrorResponse", {"detail": serializers.CharField()}),
    description="Refused; the message says why.",
)


class AuthTokenView(APIView):
    """Get an API token: signed in (session), or with username and password. Revoke the
    token you sent with DELETE."""

    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [AllowAny]
    parser_classes = [SafeJSONParser, FormParser, MultiPartParser]

    @extend_schema(
        request=TokenRequestSerializer,
        responses={200: TokenSerializer, 400: TOKEN_ERROR, 401: TOKEN_ERROR, 429: TOKEN_ERROR},
    )
    def post(self, request):
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        username = serializer.validated_data.get("username", "")
        password = serializer.validated_data.get("password", "")
        if username or password:
            user = self._password_user(username, password)
        elif request.user.is_authenticated:
            user = request.user
        else:
            raise NotAuthenticated("Sign in first, or send username and password.")
        instance, key = token_create(user=user)
        return Response({"token": key, "expiry": instance.expiry})

    def _password_user(self, username: str, password: str):
        # django-axes sees this attempt through authenticate() and refuses a locked-out
        # username or address there; it marks the request it was given.
        user = authenticate(self.request, username=username, password=password)
        if user is not None:
            return user
        if getattr(self.request, "axes_locked_out", False):
            raise Throttled(detail=LOCKED_OUT)
        raise BadCredentials()

    @extend_schema(request=None, responses={204: None, 401: TOKEN_ERROR})
    def delete(self, request):
        """Revoke the token this request carries; signed in by session: all your tokens."""
        if not request.user.is_authenticated:
            raise NotAuthenticated()
        if isinstance(request.auth, AuthToken):
            request.auth.delete()
        else:
            AuthToken.objects.filter(user=request.user).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)
