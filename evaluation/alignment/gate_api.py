"""REST API for the misalignment gate: ``/api/model-gates/`` lists and retrieves gates
(researchers, admins; ``?model_version=<id>``), gates a version (admins, through
``gate_create``, as the form does), and ``/api/model-gates/versions/`` gives every
fine-tuned version's gate state (pass / fail / not measured / measuring / never gated) with
the numbers of its newest gate.

A gate's ``result`` holds ``persona`` (value, base_value, shift), ``standard`` and
``conditional`` (rate, prompt-clustered 95% CI, counts) beside ``base_standard`` and
``base_conditional``, ``coherence``, and ``criteria`` (name, verdict, value, limit, detail).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from curation.models import Snapshot
from evaluation.access import readable_gates
from evaluation.alignment import gate as gates
from evaluation.alignment.gate_views import gateable_versions
from evaluation.alignment.realignment_api import JudgeSettingsSerializer
from evaluation.drf import ERROR, EvaluationViewSet
from evaluation.models import ModelGate
from palmsweb.lib.drf import RejectUnknownFieldsMixin
from palmsweb.roles import Role, has_role
from training.models import ModelVersion


class GateAccess(BasePermission):
    """Reads: researchers and admins (as the pages). Gating a version: admins."""

    def has_permission(self, request, view) -> bool:
        if view.action == "create":
            self.message = "Only admins may gate a model version."
            return has_role(request.user, Role.ADMIN)
        self.message = "Misalignment gates are for researchers and admins."
        return has_role(request.user, Role.RESEARCHER)


class ModelGateSerializer(serializers.ModelSerializer):
    # Not the model's choices: empty while the gate is measuring, which an enum would refuse.
    verdict = serializers.CharField(
        read_only=True, help_text="pass, fail or not_measured; empty while measuring."
    )

    class Meta:
        model = ModelGate
        fields = [
            "id", "model_version", "base_version", "evaluation", "persona_tolerance",
            "status", "verdict", "result", "error", "created_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class GateCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    model_version = serializers.PrimaryKeyRelatedField(queryset=ModelVersion.objects.all())
    conditional_snapshot = serializers.PrimaryKeyRelatedField(
        queryset=Snapshot.objects.all(),
        required=False,
        allow_null=True,
        help_text="Left out: the snapshot the version was (first) fine-tuned on.",
    )
    judge = JudgeSettingsSerializer(required=False)


class VersionGateSerializer(serializers.Serializer):
    model_version = serializers.IntegerField()
    name = serializers.CharField()
    arm = serializers.CharField()
    state = serializers.CharField(help_text="pass, fail, not measured, measuring, never gated")
    gate = ModelGateSerializer(allow_null=True)


VERSION_FILTER = OpenApiParameter(
    "model_version", OpenApiTypes.INT, description="Only this model version."
)


def _version_filter(request) -> int | None:
    raw = request.query_params.get("model_version")
    if raw is None:
        return None
    if not raw.isdigit():
        raise ValidationError({"model_version": ["A model version id (a whole number)."]})
    return int(raw)


@extend_schema_view(
    list=extend_schema(parameters=[VERSION_FILTER], responses=ModelGateSerializer(many=True)),
    retrieve=extend_schema(responses=ModelGateSerializer),
    create=extend_schema(
        request=GateCreateSerializer, responses={201: ModelGateSerializer, 400: ERROR}
    ),
)
class ModelGateViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, EvaluationViewSet):
    """Misalignment gates of model versions, newest first."""

    permission_classes = [GateAccess]
    serializer_class = ModelGateSerializer
    queryset = ModelGate.objects.all()

    def get_queryset(self):
        queryset = readable_gates(self.request.user, super().get_queryset())
        if self.action == "list" and (version := _version_filter(self.request)) is not None:
            queryset = queryset.filter(model_version_id=version)
        return queryset

    def create(self, request, *args, **kwargs):
        data = self.validated(GateCreateSerializer).validated_data
        gate = gates.gate_create(
            model_version=data["model_version"],
            conditional_snapshot=data.get("conditional_snapshot"),
            judge=dict(data.get("judge") or {}),
            user=request.user,
        )
        gate.refresh_from_db()
        return Response(ModelGateSerializer(gate).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[VERSION_FILTER], responses=VersionGateSerializer(many=True))
    @action(detail=False, methods=["get"])
    def versions(self, request):
        """Every fine-tuned version (base versions are the reference) with its gate state
        and its newest gate, paginated."""
        versions = gateable_versions()
        if (version := _version_filter(request)) is not None:
            versions = versions.filter(pk=version)
        page = self.paginate_queryset(versions)
        readable = readable_gates(request.user, ModelGate.objects.all())
        latest = gates.latest_gates((v.pk for v in page), readable)
        rows = [
            {
                "model_version": v.pk,
                "name": v.name,
                "arm": v.arm,
                "state": gates.gate_state(latest.get(v.pk)),
                "gate": latest.get(v.pk),
            }
            for v in page
        ]
        return self.get_paginated_response(VersionGateSerializer(rows, many=True).data)
