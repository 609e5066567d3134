"""REST API of preference sets and snapshots (curators and admins of the study's profile).

``POST /api/preference-sets/`` builds one from a closed study (``study``, ``source``:
``pairwise`` or ``ratings``, ``margin`` for ratings); ``POST /api/preference-sets/preview/``
gives the counts first and writes nothing. ``GET /api/preference-sets/{id}/`` lists the pairs;
``POST /api/preference-pairs/{id}/drop/`` (``{"dropped": true|false}``) reviews one;
``POST /api/preference-pairs/{id}/answer/`` (``{"answer": …, "base_version": n}``) writes a
curator's own chosen answer (409 on a stale version), ``GET …/revisions/`` its history;
``POST /api/preference-sets/{id}/freeze/`` freezes the kept pairs. Snapshots:
``GET /api/preference-snapshots/{id}/`` (provenance, hash) and ``…/download/?kind=openai|trl``
(JSONL). Rows of other profiles do not exist for the caller (404, or 400 for a chosen study).
"""

from __future__ import annotations

import json

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from evaluation import access
from evaluation.drf import ERROR, EvaluationViewSet
from evaluation.models import (
    PreferenceAnswerRevision,
    PreferencePair,
    PreferenceSet,
    PreferenceSnapshot,
    Study,
)
from evaluation.report import preference_answers, preferences
from evaluation.report.dpo_api import DpoLaunchMixin
from palmsweb.lib.drf import RejectUnknownFieldsMixin
from palmsweb.profiles import ProfileScopedPrimaryKeyField, in_profiles
from palmsweb.roles import has_role


class CuratorsOnly(BasePermission):
    message = "Preference sets are for curators and admins."

    def has_permission(self, request, view) -> bool:
        return has_role(request.user, *access.PREFERENCE_ROLES)


class BuildSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    study = ProfileScopedPrimaryKeyField(
        queryset=Study.objects.all(), profile_path="prompt_set__profile",
        roles=access.PREFERENCE_ROLES,
    )  # fmt: skip
    source = serializers.ChoiceField(choices=PreferenceSet.Source.choices)
    margin = serializers.FloatField(required=False, allow_null=True, default=None)


class PreviewSerializer(serializers.Serializer):
    considered = serializers.IntegerField()
    kept = serializers.IntegerField()
    left_out = serializers.DictField(child=serializers.IntegerField())


class PairSerializer(serializers.ModelSerializer):
    prompt = serializers.CharField(source="prompt.text")
    category = serializers.CharField(source="prompt.category.name")
    chosen = serializers.CharField(source="chosen.text")
    rejected = serializers.CharField(source="rejected.text")
    answer_by = serializers.CharField(
        source="answer_by.get_username", default=None, allow_null=True,
        help_text="Who wrote the curator's answer; null when the raters' choice stands.",
    )

    class Meta:
        model = PreferencePair
        fields = ["id", "prompt", "category", "chosen", "rejected", "votes_for", "votes_total",
                  "chosen_mean", "rejected_mean", "dropped", "answer", "answer_version",
                  "answer_by"]  # fmt: skip


class AnswerSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    answer = serializers.CharField(allow_blank=True, trim_whitespace=False)
    base_version = serializers.IntegerField(min_value=0)


class AnswerRevisionSerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author.get_username", default=None)

    class Meta:
        model = PreferenceAnswerRevision
        fields = ["number", "answer", "author", "note", "created_at"]


class SetSerializer(serializers.ModelSerializer):
    pairs = PairSerializer(many=True, read_only=True)
    snapshots = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = PreferenceSet
        fields = ["id", "study", "source", "margin", "created_at", "pairs", "snapshots"]


class PreferenceSnapshotSerializer(serializers.ModelSerializer):
    provenance = serializers.SerializerMethodField()

    class Meta:
        model = PreferenceSnapshot
        fields = ["id", "preference_set", "content_hash", "pair_count", "created_at",
                  "provenance"]  # fmt: skip

    def get_provenance(self, snapshot) -> dict:
        return json.loads(snapshot.content)["provenance"]


class DropSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    dropped = serializers.BooleanField(default=True)


class PreferenceSetViewSet(mixins.RetrieveModelMixin, mixins.ListModelMixin, EvaluationViewSet):
    permission_classes = [CuratorsOnly]
    serializer_class = SetSerializer

    def get_queryset(self):
        rows = PreferenceSet.objects.prefetch_related(
            "pairs__prompt__category", "pairs__chosen", "pairs__rejected", "pairs__answer_by",
            "snapshots",
        )  # fmt: skip
        return in_profiles(self, rows, access.PREFERENCE_ROLES, "study__prompt_set__profile")

    def _candidates(self):
        data = self.validated(BuildSerializer).validated_data
        found = preferences.preference_candidates(
            data["study"], source=data["source"], margin=data["margin"]
        )
        return data, found

    @extend_schema(
        request=BuildSerializer, responses={200: PreviewSerializer, 400: ERROR, 409: ERROR}
    )
    @action(detail=False, methods=["post"])
    def preview(self, request):
        """What a build would keep and leave out; writes nothing."""
        _, found = self._candidates()
        payload = {"considered": found.considered, "kept": found.kept, "left_out": found.left_out}
        return Response(PreviewSerializer(payload).data)

    @extend_schema(request=BuildSerializer, responses={201: SetSerializer, 400: ERROR, 409: ERROR})
    def create(self, request):
        """Build a preference set from a closed study."""
        data, _ = self._candidates()
        built = preferences.preference_set_build(
            study=data["study"], source=data["source"], margin=data["margin"], user=request.user
        )
        return Response(SetSerializer(self.get_queryset().get(pk=built.pk)).data, status=201)

    @extend_schema(request=None, responses={201: PreferenceSnapshotSerializer, 400: ERROR})
    @action(detail=True, methods=["post"])
    def freeze(self, request, pk=None):
        """Freeze the kept pairs into an immutable, content-hashed snapshot."""
        snapshot = preferences.preference_snapshot_freeze(
            preference_set=self.get_object(), user=request.user
        )
        return Response(PreferenceSnapshotSerializer(snapshot).data, status=201)


class PreferencePairViewSet(EvaluationViewSet):
    permission_classes = [CuratorsOnly]
    serializer_class = PairSerializer

    def get_queryset(self):
        rows = PreferencePair.objects.select_related(
            "prompt__category", "chosen", "rejected", "answer_by"
        )
        path = "preference_set__study__prompt_set__profile"
        return in_profiles(self, rows, access.PREFERENCE_ROLES, path)

    @extend_schema(request=DropSerializer, responses={200: PairSerializer, 400: ERROR, 404: ERROR})
    @action(detail=True, methods=["post"])
    def drop(self, request, pk=None):
        """Drop the pair from its set (``dropped: false`` takes it back)."""
        data = self.validated(DropSerializer).validated_data
        pair = preferences.preference_pair_drop(
            pair=self.get_object(), dropped=data["dropped"], user=request.user
        )
        return Response(PairSerializer(self.get_queryset().get(pk=pair.pk)).data)

    @extend_schema(
        request=AnswerSerializer,
        responses={200: PairSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    @action(detail=True, methods=["post"])
    def answer(self, request, pk=None):
        """Write your own better answer as the pair's chosen side (blank: the raters'
        choice again). ``base_version`` is the ``answer_version`` you started from; 409
        when someone saved since (your text is not saved; read theirs and send again)."""
        pair = self.get_object()  # first: another profile's pair is 404 whatever the body
        data = self.validated(AnswerSerializer).validated_data
        pair = preference_answers.preference_answer_save(
            pair=pair, answer=data["answer"], base_version=data["base_version"],
            user=request.user,
        )  # fmt: skip
        return Response(PairSerializer(self.get_queryset().get(pk=pair.pk)).data)

    @extend_schema(responses={200: AnswerRevisionSerializer(many=True), 404: ERROR})
    @action(detail=True, methods=["get"])
    def revisions(self, request, pk=None):
        """Every saved version of the curator's answer, newest first, with its author
        (paginated, like every list)."""
        page = self.paginate_queryset(self.get_object().revisions.select_related("author"))
        return self.get_paginated_response(AnswerRevisionSerializer(page, many=True).data)


class PreferenceSnapshotViewSet(
    DpoLaunchMixin, mixins.RetrieveModelMixin, mixins.ListModelMixin, EvaluationViewSet
):
    permission_classes = [CuratorsOnly]
    serializer_class = PreferenceSnapshotSerializer

    def get_queryset(self):
        path = "preference_set__study__prompt_set__profile"
        return in_profiles(self, PreferenceSnapshot.objects.all(), access.PREFERENCE_ROLES, path)

    @extend_schema(
        parameters=[OpenApiParameter("kind", OpenApiTypes.STR, enum=list(preferences.KINDS))],
        responses={
            (200, "application/jsonl"): OpenApiTypes.STR,
            (200, "application/zip"): OpenApiTypes.BINARY,
            400: ERROR,
            404: ERROR,
        },
    )
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        """The pairs as JSONL: ``openai`` (input / preferred_output / non_preferred_output)
        or ``trl`` (prompt / chosen / rejected); ``zip``: both, Parquet and a dataset card."""
        snapshot = self.get_object()
        fmt = request.query_params.get("kind", "openai")
        if fmt == "zip":
            response = HttpResponse(
                preferences.snapshot_zip(snapshot), content_type="application/zip"
            )
            name = f"preferences-{snapshot.content_hash[:12]}.zip"
            response["Content-Disposition"] = f'attachment; filename="{name}"'
            return response
        body = preferences.snapshot_jsonl(snapshot, fmt)
        response = HttpResponse(body, content_type="application/jsonl; charset=utf-8")
        name = f"preferences-{snapshot.content_hash[:12]}-{fmt}.jsonl"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
