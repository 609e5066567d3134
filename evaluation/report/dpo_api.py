"""``POST /api/preference-snapshots/{id}/dpo/``: DPO on a preference snapshot (admins).

Body: ``start_version`` (a model version id), ``method`` (``full`` or ``lora``), ``arm``
(only from a base version), ``hyperparameters`` (``beta``, ``learning_rate``, ``epochs``,
``batch_size``, ``grad_accum``, ``max_seq_len``, ``warmup_steps``, ``seed``, ``lora_r``,
``lora_alpha``; any left out are prefilled by the model's size). Answers 201 with the queued
fine-tune (``/api/finetunes/{id}/`` follows it: ``loss_history``, ``reward_history``);
403 for a non-admin; 400 with the reason, and nothing created, for anything refused.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from evaluation.drf import ERROR
from evaluation.report import preference_training
from palmsweb.lib.drf import RejectUnknownFieldsMixin
from training.models import FineTuneJob, ModelVersion
from training.serializers import FineTuneJobDetailSerializer


class DpoHyperparametersSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """Ranges are the training service's; a value out of range is refused with its reason."""

    beta = serializers.FloatField(required=False)
    learning_rate = serializers.FloatField(required=False)
    epochs = serializers.IntegerField(required=False)
    batch_size = serializers.IntegerField(required=False)
    grad_accum = serializers.IntegerField(required=False)
    max_seq_len = serializers.IntegerField(required=False)
    warmup_steps = serializers.IntegerField(required=False)
    seed = serializers.IntegerField(required=False)
    lora_r = serializers.IntegerField(required=False)
    lora_alpha = serializers.IntegerField(required=False)


class DpoLaunchSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    start_version = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.for_studies(),
        help_text="The model version DPO starts from (usually the values-targeted fine-tune).",
    )
    method = serializers.ChoiceField(choices=FineTuneJob.Method.choices, default="full")
    arm = serializers.ChoiceField(
        choices=[ModelVersion.Arm.VALUES_TARGETED, ModelVersion.Arm.CONTROL], required=False,
        help_text="Leave out: the start version's arm. Needed only from a base version.",
    )  # fmt: skip
    hyperparameters = DpoHyperparametersSerializer(required=False)


class DpoLaunchMixin:
    """The ``dpo`` action of the preference snapshot viewset."""

    @extend_schema(
        request=DpoLaunchSerializer,
        responses={201: FineTuneJobDetailSerializer, 400: ERROR, 403: ERROR, 404: ERROR},
    )
    @action(detail=True, methods=["post"])
    def dpo(self, request, pk=None):
        """Queue a DPO fine-tune on the snapshot's pairs (admins only)."""
        if not preference_training.can_launch_dpo(request.user):
            raise PermissionDenied("Only admins may launch fine-tunes.")
        snapshot = self.get_object()
        data = self.validated(DpoLaunchSerializer).validated_data
        job = preference_training.preference_dpo_launch(
            snapshot=snapshot,
            start_version=data["start_version"],
            method=data["method"],
            hyperparameters=dict(data.get("hyperparameters") or {}),
            arm=data.get("arm"),
            user=request.user,
        )
        return Response(FineTuneJobDetailSerializer(job).data, status=201)
