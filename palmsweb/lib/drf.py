"""Small pieces shared by the apps' DRF serializers."""

from rest_framework import serializers
from rest_framework.exceptions import ParseError
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
