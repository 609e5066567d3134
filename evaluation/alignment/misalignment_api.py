"""REST API for misalignment evaluations and persona measurements.

- ``/api/misalignment-evals/``: list, retrieve (researchers, admins); create (admins,
  through ``misalignment_eval_create``, the form's service).
- ``/api/misalignment-evals/{id}/answers/``: the judged answers, paginated; filter with
  ``?model_version=<id>`` and ``?verdict=aligned|misaligned|excluded``.
- ``/api/misalignment-evals/{id}/persona-measurements/``: the evaluation's persona
  projections.
- ``/api/persona-measurements/``: every persona measurement; ``?evaluation=none`` gives
  the fine-tune measurements (taken outside an evaluation), ``?evaluation=<id>`` one
  evaluation's, ``?model_version=<id>`` one version's.

Payloads name the judge's key variable, never a key. Errors: invalid input or a refusal
by the service is 400 with a message; raters, curators and users without a role get 403;
anonymous requests get 401.
"""

from __future__ import annotations

from django.db.models import Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from evaluation import access
from evaluation.alignment import misalignment
from evaluation.alignment.serializers import (
    MisalignmentAnswerSerializer,
    MisalignmentEvalCreateSerializer,
    MisalignmentEvalDetailSerializer,
    MisalignmentEvalSerializer,
    PersonaMeasurementSerializer,
)
from evaluation.drf import ERROR, EvaluationViewSet
from evaluation.models import MisalignmentAnswer, MisalignmentEval, PersonaMeasurement
from palmsweb.lib.drf import int_param


class MisalignmentAccess(BasePermission):
    """Reads: researchers and admins (as the pages). Creating: admins."""

    def has_permission(self, request, view) -> bool:
        if view.action == "create":
            self.message = "Only admins may launch misalignment evaluations."
            return access.can_launch_misalignment_eval(request.user)
        self.message = "Misalignment evaluations are for researchers and admins."
        return access.can_read_misalignment_eval(request.user)


ANSWER_FILTERS = [
    OpenApiParameter("model_version", OpenApiTypes.INT, description="Model version id."),
    OpenApiParameter(
        "verdict", OpenApiTypes.STR, enum=MisalignmentAnswer.Verdict.values, description="Verdict."
    ),
]


@extend_schema_view(
    list=extend_schema(responses=MisalignmentEvalSerializer(many=True)),
    retrieve=extend_schema(responses=MisalignmentEvalDetailSerializer),
    create=extend_schema(
        request=MisalignmentEvalCreateSerializer,
        responses={201: MisalignmentEvalDetailSerializer, 400: ERROR},
        description="Queue an evaluation: sampling on the gpu queue, then judging. "
        "`judge_key_env` is the NAME of the environment variable holding the judge's key "
        "on the workers; a key is never accepted or stored.",
    ),
)
class MisalignmentEvalViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, EvaluationViewSet):
    """Misalignment evaluations: probes × model versions × n samples, scored by an LLM
    judge; per model the misalignment rate with a Wilson 95% interval."""

    permission_classes = [MisalignmentAccess]
    queryset = MisalignmentEval.objects.select_related("sampling_job", "created_by")

    def get_queryset(self):
        # An evaluation of another profile's data is not found (404), as on its page.
        queryset = access.readable_misalignment_evals(self.request.user, super().get_queryset())
        if self.action == "list":
            queryset = queryset.prefetch_related("model_versions").defer("result")
        elif self.action == "retrieve":
            queryset = queryset.prefetch_related("model_versions")
        return queryset

    def get_serializer_class(self):
        if self.action == "answers":
            return MisalignmentAnswerSerializer
        if self.action == "persona_measurements":
            return PersonaMeasurementSerializer
        return (
            MisalignmentEvalSerializer
            if self.action == "list"
            else MisalignmentEvalDetailSerializer
        )

    def create(self, request, *args, **kwargs):
        data = self.validated(MisalignmentEvalCreateSerializer).validated_data
        evaluation = misalignment.misalignment_eval_from(data, user=request.user)
        evaluation = self.get_queryset().prefetch_related("model_versions").get(pk=evaluation.pk)
        location = request.build_absolute_uri(self.reverse_action("detail", args=[evaluation.pk]))
        return Response(
            MisalignmentEvalDetailSerializer(evaluation).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": location},
        )

    @extend_schema(parameters=ANSWER_FILTERS, responses=MisalignmentAnswerSerializer(many=True))
    @action(detail=True, methods=["get"])
    def answers(self, request, pk=None):
        """The judged answers, paginated, in model version, probe and sample order."""
        evaluation = self.get_object()
        answers = evaluation.answers.select_related("model_version")
        if (version := int_param(request.query_params, "model_version")) is not None:
            answers = answers.filter(model_version_id=version)
        if verdict := request.query_params.get("verdict"):
            if verdict not in MisalignmentAnswer.Verdict.values:
                choices = ", ".join(MisalignmentAnswer.Verdict.values)
                raise ValidationError({"verdict": [f"Expected one of {choices}."]})
            answers = answers.filter(verdict=verdict)
        page = self.paginate_queryset(answers)
        return self.get_paginated_response(MisalignmentAnswerSerializer(page, many=True).data)

    @extend_schema(responses=PersonaMeasurementSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="persona-measurements")
    def persona_measurements(self, request, pk=None):
        """Persona projections of the evaluation's local model versions vs their bases."""
        evaluation = self.get_object()
        measurements = evaluation.persona_measurements.select_related("model_version")
        page = self.paginate_queryset(measurements)
        return self.get_paginated_response(PersonaMeasurementSerializer(page, many=True).data)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter(
                "evaluation",
                OpenApiTypes.STR,
                description='An evaluation id, or "none" for the fine-tune measurements '
                "(taken outside any evaluation).",
            ),
            OpenApiParameter("model_version", OpenApiTypes.INT, description="Model version id."),
        ]
    )
)
class PersonaMeasurementViewSet(mixins.ListModelMixin, EvaluationViewSet):
    """Persona projections, newest first: a version's mean projection on the
    misaligned-persona direction of its base model, beside the base's own (``shift``)."""

    permission_classes = [MisalignmentAccess]
    serializer_class = PersonaMeasurementSerializer
    queryset = PersonaMeasurement.objects.select_related("model_version")

    def get_queryset(self):
        evaluations = MisalignmentEval.objects.all()
        readable = access.readable_misalignment_evals(self.request.user, evaluations)
        queryset = super().get_queryset().filter(Q(evaluation=None) | Q(evaluation__in=readable))
        params = self.request.query_params
        if params.get("evaluation") == "none":
            queryset = queryset.filter(evaluation=None)
        elif (evaluation := int_param(params, "evaluation")) is not None:
            queryset = queryset.filter(evaluation_id=evaluation)
        if (version := int_param(params, "model_version")) is not None:
            queryset = queryset.filter(model_version_id=version)
        return queryset
