"""Small pieces shared by the apps' DRF serializers and views: unknown-field refusal, a
JSON parser that refuses what the database cannot store, and the token authentication."""

import binascii
import re
from hmac import compare_digest

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed, ParseError
from rest_framework.parsers import JSONParser


class RejectUnknownFieldsMixin:
    # Refuse body keys that are not writable fields of the serializer: DRF silently drops
    # unknown and read-only keys, so a typo ("anwser") or an attempt to set "status" directly
    # would look like success while changing nothing. (A comment, not a docstring:
    # drf-spectacular would show a docstring as every input schema's description.)

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            errors = {
                key: ["This field is read-only." if key in self.fields else "Unknown field."]
                for key in data
                if key not in writable
            }
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


def contains_nul(value) -> bool:
    """True when a parsed JSON value holds a NUL character in any key or string."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class SafeJSONParser(JSONParser):
    # DRF's parser turns only ValueError into a 400: a deeply nested body raised
    # RecursionError (a 500), and a "\u0000" in a JSONField value reached PostgreSQL,
    # which refuses NUL in text (another 500). Both are bad input and get a 400 here.

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
        if contains_nul(data):
            raise ParseError("JSON parse error - NUL characters (\\u0000) are not accepted.")
        return data


class TokenAuthentication(KnoxTokenAuthentication):
    # django-rest-knox's tokens (hashed, expiring; "Authorization: Token <key>"), checked
    # here in one query. Knox's own check also sweeps all the user's other tokens on every
    # request (one more query on the raters' hot path), and decodes the header as UTF-8
    # without a guard, so a stray byte was a 500; a bad header is a 401 here. Expired
    # tokens are refused; they are deleted when their user next makes a token.

    def authenticate_credentials(self, token: bytes):
        from knox.crypto import hash_token
        from knox.models import get_token_model
        from knox.settings import CONSTANTS

        invalid = AuthenticationFailed("Invalid or expired token.")
        try:
            key = token.decode("utf-8")
            digest = hash_token(key)
        except (UnicodeDecodeError, TypeError, ValueError, binascii.Error):
            raise invalid from None
        now = timezone.now()
        candidates = get_token_model().objects.filter(
            token_key=key[: CONSTANTS.TOKEN_KEY_LENGTH]
        ).select_related("user")
        for auth_token in candidates:
            live = auth_token.expiry is None or auth_token.expiry > now
            if live and compare_digest(digest, auth_token.digest):
                return self.validate_user(auth_token)
        raise invalid


class TokenScheme(OpenApiAuthenticationExtension):
    # How the OpenAPI schema describes TokenAuthentication (drf-spectacular knows DRF's
    # own token class, not knox's).
    target_class = "palmsweb.lib.drf.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix="Token"
        )


_INTEGER = re.compile(r"-?[0-9]{1,19}")
MAX_BIGINT = 2**63 - 1


def int_param(params, name: str) -> int | None:
    """An integer id from the query string, or None when absent or blank. Anything else
    (text, Unicode digits, a number no database column can hold) is a 400 naming the
    parameter: such values used to reach the database and come back as a 500."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if not _INTEGER.fullmatch(value) or not -MAX_BIGINT <= int(value) <= MAX_BIGINT:
        raise serializers.ValidationError({name: ["Expected an integer id."]})
    return int(value)
