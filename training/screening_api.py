"""REST API for sample screenings: list and read them (curators and researchers of the
snapshot's value profile, admins), launch one (curators of that profile, admins)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission

from curation.models import Snapshot
from palmsweb.lib.drf import RejectUnknownFieldsMixin
from palmsweb.profiles import ProfileScopedPrimaryKeyField, in_profiles
from palmsweb.roles import has_role
from training import access
from training.api import TRAINING_ERROR, TrainingViewSet
from training.models import BaseModel, ScreeningRun
from training.services.screening import MAX_OWN_TOKENS, MIN_OWN_TOKENS, screening_launch


class ScreeningRowSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the item in the snapshot.")
    category = serializers.CharField()
    question = serializers.CharField()
    shift = serializers.FloatField(help_text="Projection of the sample minus the model's own.")
    z = serializers.FloatField(help_text="Robust z (median and MAD of the snapshot).")
    flagged = serializers.BooleanField()
    training = serializers.FloatField(required=False)
    own = serializers.FloatField(required=False)


class ScreeningSerializer(serializers.ModelSerializer):
    scores = ScreeningRowSerializer(many=True, read_only=True)

    class Meta:
        model = ScreeningRun
        fields = [
            "id", "snapshot", "base_model", "max_new_tokens", "status", "phase",
            "progress_done", "progress_total", "error", "direction", "summary", "scores",
            "created_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class ScreeningCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    snapshot = ProfileScopedPrimaryKeyField(
        queryset=Snapshot.objects.all(), profile_path="dataset__profile",
        roles=access.SCREENING_READ_ROLES,
    )  # fmt: skip
    base_model = serializers.PrimaryKeyRelatedField(queryset=BaseModel.objects.all())
    max_new_tokens = serializers.IntegerField(
        min_value=MIN_OWN_TOKENS, max_value=MAX_OWN_TOKENS, default=64
    )


class ScreeningAccess(BasePermission):
    message = "Sample screenings are for curators and researchers (launching: curators)."

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return has_role(request.user, *access.SCREENING_READ_ROLES)
        return access.can_launch_screening(request.user)


@extend_schema_view(
    create=extend_schema(
        request=ScreeningCreateSerializer, responses={201: ScreeningSerializer, 400: TRAINING_ERROR}
    )
)
class ScreeningViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TrainingViewSet):
    """Persona-shift screenings of snapshots (``?profile=<id>`` narrows the list)."""

    permission_classes = [ScreeningAccess]
    serializer_class = ScreeningSerializer
    queryset = ScreeningRun.objects.select_related("snapshot__dataset")

    def get_queryset(self):
        roles = access.SCREENING_READ_ROLES
        return in_profiles(self, super().get_queryset(), roles, "snapshot__dataset__profile")

    def create(self, request, *args, **kwargs):
        data = self.validated(ScreeningCreateSerializer)
        if not access.can_launch_screening(request.user, data["snapshot"]):
            raise PermissionDenied("Only this profile's curators and admins screen samples.")
        run = screening_launch(**data, user=request.user)
        return self.created(ScreeningSerializer, run)
