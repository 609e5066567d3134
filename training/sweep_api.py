"""REST API for sweeps: launch a grid of local fine-tunes, read the runs ranked by best
validation loss (with their curves), cancel all, promote one run's version into studies,
delete the losing runs' weights. Access as every training object (:mod:`training.access`);
a TrainingError becomes 400 with the service's message."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from curation.models import Snapshot
from palmsweb.lib.drf import RejectUnknownFieldsMixin
from training import services
from training.access import get_finetune_for_user, in_readable_profiles
from training.api import TRAINING_ERROR, TrainingViewSet
from training.models import BaseModel, FineTuneJob, Sweep
from training.serializers import HyperparametersSerializer, JobStatusField
from training.services import MAX_SWEEP_RUNS, TrainingError


class GridSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    learning_rate = serializers.ListField(child=serializers.FloatField(), allow_empty=False)
    epochs = serializers.ListField(child=serializers.IntegerField(), allow_empty=False)
    method = serializers.ListField(
        child=serializers.ChoiceField(choices=FineTuneJob.Method.choices),
        required=False,
        default=list,
        help_text="Left out: full fine-tunes only.",
    )


class SweepCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    base_model = serializers.PrimaryKeyRelatedField(queryset=BaseModel.objects.all())
    snapshot = serializers.PrimaryKeyRelatedField(queryset=Snapshot.objects.all())
    grid = GridSerializer()
    max_runs = serializers.IntegerField(
        min_value=1, max_value=MAX_SWEEP_RUNS, default=MAX_SWEEP_RUNS,
        help_text="The grid may hold at most this many runs; a bigger grid is refused (400).",
    )  # fmt: skip
    hyperparameters = HyperparametersSerializer(
        required=False, default=dict,
        help_text="Shared by every run; learning_rate and epochs come from the grid.",
    )  # fmt: skip
    validation_snapshot = serializers.PrimaryKeyRelatedField(
        queryset=Snapshot.objects.all(), required=False, allow_null=True, default=None,
        help_text="Runs are ranked by their best validation loss on it (or give "
        "hyperparameters.validation_share).",
    )  # fmt: skip


class SweepRunSerializer(serializers.Serializer):
    rank = serializers.IntegerField(allow_null=True)
    label = serializers.CharField()
    id = serializers.IntegerField(source="job.pk")
    status = JobStatusField(source="job.status")
    method = serializers.CharField(source="job.method")
    learning_rate = serializers.FloatField(source="job.hyperparameters.learning_rate")
    epochs = serializers.IntegerField(source="job.hyperparameters.epochs")
    best_validation_loss = serializers.FloatField(source="best_loss", allow_null=True)
    best_step = serializers.IntegerField(allow_null=True)
    validation_loss = serializers.JSONField(
        source="job.validation_loss_history", help_text="[[step, loss], ...]"
    )
    result = serializers.IntegerField(source="job.result_id", allow_null=True)
    weights_deleted = serializers.BooleanField()


class SweepSerializer(serializers.ModelSerializer):
    status = serializers.SerializerMethodField()
    runs = serializers.SerializerMethodField()

    class Meta:
        model = Sweep
        fields = [
            "id", "name", "base_model", "snapshot", "validation_snapshot", "grid",
            "hyperparameters", "max_runs", "status", "promoted_version", "promoted_at",
            "cancelled_at", "created_at", "runs",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(
        serializers.ChoiceField(choices=["running", "succeeded", "failed", "cancelled"])
    )
    def get_status(self, sweep: Sweep) -> str:
        return services.sweep_status(sweep)

    @extend_schema_field(SweepRunSerializer(many=True))
    def get_runs(self, sweep: Sweep) -> list[dict]:
        return SweepRunSerializer(services.sweep_ranking(sweep), many=True).data


class PromoteSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    run = serializers.IntegerField(
        min_value=1, max_value=2**63 - 1,
        help_text="The fine-tune (a run of this sweep) to promote.",
    )  # fmt: skip


class DeletedWeightsSerializer(serializers.Serializer):
    cleared = serializers.IntegerField()
    bytes_freed = serializers.IntegerField()


@extend_schema_view(
    create=extend_schema(
        request=SweepCreateSerializer, responses={201: SweepSerializer, 400: TRAINING_ERROR}
    ),
)
class SweepViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TrainingViewSet):
    """Sweeps: grids of local fine-tunes ranked by validation loss."""

    serializer_class = SweepSerializer

    def get_queryset(self):
        sweeps = Sweep.objects.select_related("base_model", "snapshot__dataset")
        return in_readable_profiles(self.request.user, sweeps) if self.action == "list" else sweeps

    def create(self, request, *args, **kwargs):
        data = self.validated(SweepCreateSerializer)
        grid = dict(data["grid"])
        if not grid["method"]:
            grid["method"] = [FineTuneJob.Method.FULL]
        sweep = services.sweep_launch(
            base_model=data["base_model"], snapshot=data["snapshot"], grid=grid,
            max_runs=data["max_runs"], name=data["name"],
            hyperparameters=dict(data["hyperparameters"]),
            validation_snapshot=data["validation_snapshot"], user=request.user,
        )  # fmt: skip
        return self.created(SweepSerializer, sweep)

    @extend_schema(request=None, responses={200: SweepSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel every queued or running run (running ones stop within one step)."""
        sweep = self.get_object()
        services.sweep_cancel(sweep=sweep)
        return Response(SweepSerializer(self.get_object()).data)

    @extend_schema(request=PromoteSerializer, responses={200: SweepSerializer, 400: TRAINING_ERROR})
    @action(detail=True, methods=["post"])
    def promote(self, request, pk=None):
        """Make one succeeded run's version the sweep's choice, available to studies."""
        sweep = self.get_object()
        run = self.validated(PromoteSerializer)["run"]
        job = FineTuneJob.objects.filter(pk=run, sweep=sweep).select_related("result").first()
        if job is None:
            raise TrainingError(f"Fine-tune #{run} is not a run of this sweep.")
        get_finetune_for_user(request.user, job.pk, write=True)
        services.sweep_promote(sweep=sweep, job=job)
        return Response(SweepSerializer(self.get_object()).data)

    @extend_schema(request=None, responses={200: DeletedWeightsSerializer, 400: TRAINING_ERROR})
    @action(detail=True, methods=["post"], url_path="delete-weights")
    def delete_weights(self, request, pk=None):
        """Delete the weights of every run but the promoted (else best-ranked) one and any
        sampled version; rows, metadata and curves stay. Refused while runs are active."""
        cleared, freed = services.sweep_delete_losing_weights(sweep=self.get_object())
        return Response({"cleared": cleared, "bytes_freed": freed})
