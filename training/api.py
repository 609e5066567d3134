"""REST API for training: base models, model versions, fine-tunes, sampling jobs.

Every mutation goes through ``training.services``; a TrainingError (a rule refused the
request) becomes 400 with the service's message.

Access (:mod:`training.access`): admins read and write; curators and researchers read;
raters and users without a role get 403; anonymous requests get 401.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle

from palmsweb.lib.drf import TokenAuthentication
from training import access, selectors, services
from training.models import FineTuneJob, SamplingJob
from training.serializers import (
    BaseModelCreateSerializer,
    BaseModelSerializer,
    FineTuneCreateSerializer,
    FineTuneJobDetailSerializer,
    FineTuneJobSerializer,
    GenerationSerializer,
    ModelVersionSerializer,
    RetrainSerializer,
    SamplingCreateSerializer,
    SamplingJobDetailSerializer,
    SamplingJobSerializer,
)
from training.services import TrainingError


class TrainingAccess(BasePermission):
    """The policy of :mod:`training.access`: reads for curators, researchers and admins,
    writes for admins, restricted sampling jobs for admins only."""

    def has_permission(self, request, view) -> bool:
        return self._allowed(request)

    def has_object_permission(self, request, view, obj) -> bool:
        return self._allowed(request, obj)

    def _allowed(self, request, obj=None) -> bool:
        try:
            access.check_access(request.user, obj, write=request.method not in SAFE_METHODS)
        except DjangoPermissionDenied as denied:
            self.message = str(denied)
            return False
        return True


class TrainingViewSet(viewsets.GenericViewSet):
    # Token first, so an anonymous request gets 401 with "WWW-Authenticate: Token".
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [TrainingAccess]
    throttle_classes = [UserRateThrottle]

    def handle_exception(self, exc):
        if isinstance(exc, TrainingError):
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return super().handle_exception(exc)

    def validated(self, serializer_class) -> dict:
        serializer = serializer_class(data=self.request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def created(self, serializer_class, instance) -> Response:
        data = serializer_class(instance, context=self.get_serializer_context()).data
        location = self.request.build_absolute_uri(
            self.reverse_action("detail", args=[instance.pk])
        )
        return Response(data, status=status.HTTP_201_CREATED, headers={"Location": location})


class TrainingErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


TRAINING_ERROR = OpenApiResponse(
    TrainingErrorSerializer,
    description="Invalid input, or a training rule refused the request (message says why).",
)


# --- base models and versions ---------------------------------------------------------------


@extend_schema_view(
    create=extend_schema(
        request=BaseModelCreateSerializer,
        responses={201: BaseModelSerializer, 400: TRAINING_ERROR},
    ),
)
class BaseModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TrainingViewSet):
    """Base models. Registering one also creates its "base" model version."""

    serializer_class = BaseModelSerializer
    queryset = selectors.base_model_list()

    def create(self, request, *args, **kwargs):
        base_model = services.base_model_create(**self.validated(BaseModelCreateSerializer))
        return self.created(BaseModelSerializer, base_model)


class ModelVersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TrainingViewSet):
    """Everything that can be sampled: base models as is, and fine-tune results."""

    serializer_class = ModelVersionSerializer
    queryset = selectors.model_version_list()


# --- jobs -----------------------------------------------------------------------------------


class JobActionsMixin:
    """POST cancel and retry, shared by fine-tunes and sampling jobs."""

    detail_serializer_class: type[serializers.Serializer]

    def _detail(self, job) -> Response:
        job.refresh_from_db()
        return Response(
            self.detail_serializer_class(job, context=self.get_serializer_context()).data
        )

    def _cancel(self, request, pk=None) -> Response:
        job = self.get_object()
        if job.is_finished:
            raise TrainingError("This job has already finished.")
        services.job_cancel(job=job)
        return self._detail(job)

    def _retry(self, request, pk=None) -> Response:
        job = self.get_object()
        services.job_retry(job=job)
        return self._detail(job)


@extend_schema_view(
    list=extend_schema(responses=FineTuneJobSerializer(many=True)),
    retrieve=extend_schema(responses=FineTuneJobDetailSerializer),
    create=extend_schema(
        request=FineTuneCreateSerializer,
        responses={201: FineTuneJobDetailSerializer, 400: TRAINING_ERROR},
    ),
)
class FineTuneJobViewSet(
    JobActionsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TrainingViewSet
):
    """Fine-tunes: launch (queued on the gpu workers), follow, cancel, retry."""

    detail_serializer_class = FineTuneJobDetailSerializer

    def get_queryset(self):
        if self.action == "list":
            return access.in_readable_profiles(self.request.user, selectors.finetune_list())
        return FineTuneJob.objects.select_related("base_model", "snapshot__dataset", "created_by")

    def get_serializer_class(self):
        return FineTuneJobSerializer if self.action == "list" else FineTuneJobDetailSerializer

    def create(self, request, *args, **kwargs):
        data = self.validated(FineTuneCreateSerializer)
        job = services.finetune_launch(
            base_model=data["base_model"],
            snapshot=data["snapshot"],
            arm=data["arm"],
            method=data["method"],
            hyperparameters=dict(data["hyperparameters"]),
            track_persona=data["track_persona"],
            allow_arm_mismatch=data["allow_arm_mismatch"],
            validation_snapshot=data["validation_snapshot"],
            devices=data["devices"],
            nodes=data["nodes"],
            user=request.user,
        )
        return self.created(FineTuneJobDetailSerializer, job)

    @extend_schema(request=None, responses={200: FineTuneJobDetailSerializer, 400: TRAINING_ERROR})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Ask the job to stop: a queued job ends at once, a running one within one step."""
        return self._cancel(request, pk)

    @extend_schema(request=None, responses={200: FineTuneJobDetailSerializer, 400: TRAINING_ERROR})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Queue a failed or cancelled job again."""
        return self._retry(request, pk)

    @extend_schema(
        request=RetrainSerializer,
        responses={201: FineTuneJobDetailSerializer, 400: TRAINING_ERROR},
    )
    @action(detail=True, methods=["post"])
    def retrain(self, request, pk=None):
        """Retrain elsewhere: the job's snapshot and hyperparameters on another provider or
        a local model, as a new job whose ``retrained_from`` is this one."""
        job = self.get_object()
        data = self.validated(RetrainSerializer)
        new = services.finetune_retrain_elsewhere(
            job=job, base_model=data["base_model"], method=data.get("method"),
            user=request.user,
        )  # fmt: skip
        return self.created(FineTuneJobDetailSerializer, new)


@extend_schema_view(
    list=extend_schema(responses=SamplingJobSerializer(many=True)),
    retrieve=extend_schema(responses=SamplingJobDetailSerializer),
    create=extend_schema(
        request=SamplingCreateSerializer,
        responses={201: SamplingJobDetailSerializer, 400: TRAINING_ERROR},
    ),
)
class SamplingJobViewSet(
    JobActionsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TrainingViewSet
):
    """Sampling jobs: prompts × model versions × n samples; outputs are paginated."""

    detail_serializer_class = SamplingJobDetailSerializer

    def get_queryset(self):
        jobs = SamplingJob.objects.all()
        if self.action == "list":  # nor restricted jobs (blinded studies'), nor other profiles'
            jobs = access.in_readable_profiles(self.request.user, jobs)
        return jobs.select_related("created_by").prefetch_related("model_versions")

    def get_serializer_class(self):
        if self.action == "outputs":
            return GenerationSerializer
        return SamplingJobSerializer if self.action == "list" else SamplingJobDetailSerializer

    def create(self, request, *args, **kwargs):
        data = self.validated(SamplingCreateSerializer)
        prompts = selectors.palms_eval_prompts() if data["use_demo_prompts"] else []
        prompts += [dict(prompt) for prompt in data["prompts"]]
        job = services.sampling_launch(
            prompts=prompts,
            model_versions=list(data["model_versions"]),
            n_samples=data["n_samples"],
            temperature=data["temperature"],
            top_p=data["top_p"],
            max_new_tokens=data["max_new_tokens"],
            seed=data["seed"],
            name=data["name"],
            system_prompt=data["system_prompt"],
            user=request.user,
        )
        return self.created(SamplingJobDetailSerializer, job)

    @extend_schema(request=None, responses={200: SamplingJobDetailSerializer, 400: TRAINING_ERROR})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Ask the job to stop; outputs stored so far are kept."""
        return self._cancel(request, pk)

    @extend_schema(request=None, responses={200: SamplingJobDetailSerializer, 400: TRAINING_ERROR})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Queue a failed or cancelled job again; it resumes after the stored outputs."""
        return self._retry(request, pk)

    @extend_schema(responses=GenerationSerializer(many=True))
    @action(detail=True, methods=["get"])
    def outputs(self, request, pk=None):
        """The job's outputs, paginated, in model version, prompt and sample order."""
        job = self.get_object()
        page = self.paginate_queryset(selectors.sampling_outputs(job))
        return self.get_paginated_response(GenerationSerializer(page, many=True).data)
