"""What the API says about the positions a study froze and the value profile it belongs to:
the study, its results and the pairwise results carry the same shapes.

Position text and the profile name no arm, model or rater, so every reader of a study may
see them (researchers before unblinding too).
"""

from __future__ import annotations

from rest_framework import serializers

from evaluation.models import Study
from evaluation.studies.positions import position_records, positions_edited_since_opening


class FrozenPositionSerializer(serializers.Serializer):
    """One position version a study froze when it opened."""

    category = serializers.CharField()
    version = serializers.IntegerField(help_text="The version's number (v1, v2, …).")
    position = serializers.CharField()
    guidance = serializers.CharField(allow_blank=True)
    sha256 = serializers.CharField(help_text="sha256 of the position text (UTF-8).")


class NewerPositionSerializer(serializers.Serializer):
    """A category whose position was edited after the study froze it."""

    category = serializers.CharField()
    frozen = serializers.IntegerField(help_text="The version the study's raters judge against.")
    latest = serializers.IntegerField(help_text="The category's newest version.")


class ProfileRefSerializer(serializers.Serializer):
    """The value profile (application context) a study belongs to: its prompt set's."""

    id = serializers.IntegerField()
    name = serializers.CharField()


def frozen_position_payload(study: Study, frozen=None) -> list[dict]:
    """The frozen versions as the API carries them (empty for a study never opened);
    ``frozen``: the study's frozen versions, already read by the caller."""
    return FrozenPositionSerializer(position_records(study, frozen), many=True).data


def newer_position_payload(study: Study, frozen=None) -> list[dict]:
    edits = positions_edited_since_opening(study, frozen)
    return NewerPositionSerializer(edits, many=True).data
