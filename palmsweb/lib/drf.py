"""Small pieces shared by the apps' DRF serializers."""

from rest_framework import serializers


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
