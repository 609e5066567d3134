"""REST API for evaluation: studies (admins; researchers read), outputs (admins), and the
raters' queue (prompt sets: :mod:`evaluation.studies.prompt_set_api`).

Raters: ``/api/rating/studies/`` lists their studies; ``POST …/{id}/claim/`` leases the next
output (200 with the task, 204 when nothing is left); ``POST /api/rating/outputs/{public
id}/submit|skip|flag/`` answers it. Rater payloads carry the opaque public id and nothing that
maps to an arm, model, size or internal id.

Errors: a rule refusing an action is 409 (state) or 400 (input) with ``detail``; a user
outside the role or the rater pool gets 403; anonymous requests get 401.
"""

from __future__ import annotations

import re

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from evaluation import access
from evaluation.drf import ERROR, EvaluationViewSet
from evaluation.gate_state import study_gate_warnings
from evaluation.models import Rating, Study, StudyOutput
from evaluation.studies import lifecycle, queue, revisions
from evaluation.studies.arm_pairs import compared_numbers
from evaluation.studies.plan_serializers import (
    PairwisePlanSerializer,
    StudyPlanRequestSerializer,
    StudyPlanSerializer,
)
from evaluation.studies.position_serializers import (
    FrozenPositionSerializer,
    frozen_position_payload,
)
from evaluation.studies.rating_close import UNCHANGED
from evaluation.studies.selectors import (
    rater_progress,
    rater_studies,
    study_progress,
    study_results,
)
from evaluation.studies.serializers import (
    ExcludeSerializer,
    FlagSerializer,
    LastRatingSerializer,
    LiveStudySerializer,
    RaterStudySerializer,
    RatingResultSerializer,
    StudyEventSerializer,
    StudyOutputSerializer,
    StudySerializer,
    StudyWriteSerializer,
    SubmitSerializer,
    TaskSerializer,
    last_rating_payload,
    results_payload,
    task_payload,
)
from palmsweb.lib.drf import int_param
from palmsweb.profiles import in_profiles

# --- studies -------------------------------------------------------------------------------


RESEARCHER_ACTIONS = {"list", "retrieve", "unblind", "results", "events"}


class StudyAccess(BasePermission):
    """Admins do everything; researchers read, unblind (closed studies) and read results
    (unblinded studies); nobody else gets in."""

    def has_permission(self, request, view) -> bool:
        if view.action in RESEARCHER_ACTIONS:
            return access.can_read_study(request.user)
        return access.can_manage_study(request.user)


@extend_schema_view(
    create=extend_schema(
        request=StudyWriteSerializer,
        responses={201: StudySerializer, 400: ERROR},
        description="The 201 body also holds `gate_warnings`: the arms whose model version "
        "failed the misalignment gate or was never gated (a warning, not a refusal).",
    ),
    update=extend_schema(
        request=StudyWriteSerializer,
        responses={200: StudySerializer, 400: ERROR, 409: ERROR},
        description="Drafts: the whole design. Open studies: only `rubric` "
        "and `raters` (other keys are refused).",
    ),
    partial_update=extend_schema(
        request=StudyWriteSerializer, responses={200: StudySerializer, 400: ERROR, 409: ERROR}
    ),
    destroy=extend_schema(responses={204: None, 409: ERROR}),
)
class StudyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, EvaluationViewSet):
    """Blinded rating studies: draft → sampling → rating → closed."""

    permission_classes = [StudyAccess]
    serializer_class = StudySerializer
    queryset = Study.objects.prefetch_related("arms__model_version__base_model", "raters")

    def get_queryset(self):
        """The studies of the profiles the user researches in (``?profile=<id>``: one)."""
        queryset = super().get_queryset().select_related("prompt_set__profile")
        return in_profiles(self, queryset, access.STUDY_READ_ROLES, "prompt_set__profile")

    def _out(self, study: Study) -> dict:
        """The study as this user may read it (see StudySerializer)."""
        study = self.get_queryset().get(pk=study.pk)
        return StudySerializer(study, context=self.get_serializer_context()).data

    def create(self, request, *args, **kwargs):
        data = self.validated(StudyWriteSerializer).service_kwargs()
        study = lifecycle.study_create(user=request.user, **data)
        # Arms whose version failed the misalignment gate or was never gated: warned, not refused.
        body = self._out(study) | {"gate_warnings": study_gate_warnings(study)}
        return Response(body, status=status.HTTP_201_CREATED)

    def update(self, request, *args, partial: bool = False, **kwargs):
        study = self.get_object()
        if study.status != Study.Status.DRAFT:
            data = self.validated(
                LiveStudySerializer,
                partial=partial,
            ).validated_data
            lifecycle.study_update_live(
                study=study,
                rubric=data.get("rubric", study.rubric),
                raters=data.get("raters", study.raters.all()),
                rating_closes_on=data.get("rating_closes_on", UNCHANGED),
                user=request.user,
            )
        else:
            current = {
                "name": study.name,
                "description": study.description,
                "prompt_set": study.prompt_set_id,
                "rubric": study.rubric,
                "raters": [u.get_username() for u in study.raters.all()],
                "arms": [
                    {"arm": a.arm, "model_version": a.model_version_id, "size_tag": a.size_tag,
                     "label": a.label}  # fmt: skip
                    for a in study.arms.all()
                ],
                "arm_pairs": [list(pair) for pair in compared_numbers(study)],
                **{
                    name: getattr(study, name)
                    for name in (
                        "mode",
                        "samples_per_prompt",
                        "raters_per_output",
                        "temperature",
                        "top_p",
                        "max_new_tokens",
                        "seed",
                        "lease_minutes",
                        "rating_closes_on",
                    )
                },
            }
            merged = {**current, **request.data} if partial else request.data
            serializer = self.validated(StudyWriteSerializer, data=merged)
            lifecycle.study_update(study=study, user=request.user, **serializer.service_kwargs())
        return Response(self._out(study))

    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request, *args, **kwargs):
        lifecycle.study_delete(study=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _lifecycle(self, service, **kwargs) -> Response:
        study = service(study=self.get_object(), user=self.request.user, **kwargs)
        return Response(self._out(study))

    @extend_schema(request=None, responses={200: StudySerializer, 400: ERROR, 409: ERROR})
    @action(detail=True, methods=["post"])
    def open(self, request, pk=None):
        """Draft → sampling: one sampling job over every arm. Rating opens when it ends."""
        return self._lifecycle(lifecycle.study_open)

    @extend_schema(request=None, responses={200: StudySerializer})
    @action(detail=True, methods=["post"])
    def sync(self, request, pk=None):
        """Move a sampling study on now if its job has finished (idempotent)."""
        study = self.get_object()
        lifecycle.study_sync_sampling(study_id=study.pk)
        return Response(self._out(study))

    @extend_schema(request=None, responses={200: StudySerializer, 409: ERROR})
    @action(detail=True, methods=["post"])
    def close(self, request, pk=None):
        """Stop rating; open claims end. Researchers may unblind afterwards."""
        return self._lifecycle(lifecycle.study_close)

    @extend_schema(request=None, responses={200: StudySerializer, 409: ERROR})
    @action(detail=True, methods=["post"])
    def unblind(self, request, pk=None):
        """Researchers and admins, closed studies only. Logged with who and when."""
        return self._lifecycle(lifecycle.study_unblind)

    @extend_schema(
        responses={
            200: inline_serializer(
                "StudyResults",
                {
                    "study": serializers.IntegerField(),
                    "unblinded_at": serializers.DateTimeField(allow_null=True),
                    "categories": serializers.ListField(child=serializers.CharField()),
                    "arms": serializers.ListField(child=serializers.DictField()),
                    "positions": FrozenPositionSerializer(many=True),
                },
            ),
            403: ERROR,
        }
    )
    @action(detail=True, methods=["get"])
    def results(self, request, pk=None):
        """Mean score per arm × category. Admins any time; researchers once unblinded."""
        study = self.get_object()
        if not access.can_see_arm_results(request.user, study):
            raise PermissionDenied(
                "Per-arm results open to researchers once the study is closed and unblinded."
            )
        results = study_results(study)
        return Response(
            {
                "study": study.pk,
                "unblinded_at": study.unblinded_at,
                "categories": results["categories"],
                "arms": results_payload(results),
                "positions": frozen_position_payload(study),  # what the raters judged against
            }
        )

    @extend_schema(
        request=StudyPlanRequestSerializer,
        responses={
            200: PolymorphicProxySerializer(
                component_name="StudyPlanResult",
                serializers={
                    Study.Mode.SCALE.value: StudyPlanSerializer,
                    Study.Mode.PAIRWISE.value: PairwisePlanSerializer,
                },
                resource_type_field_name="mode",
            ),
            400: ERROR,
        },
        description="Plan a study before creating it. 1–5 mode: the power of the paired t "
        "on prompt means for the expected difference (default 0.5), per category (at "
        "α/categories) and over all categories, the smallest detectable differences, and the "
        "prompts per category, samples or raters that would reach 80%; variance components "
        "come from the last closed study's ratings, else a prior. Pairwise mode: the "
        "worst-case 95% half-width of each arm pair's win rate, over all prompts and per "
        "category, and the prompts that would reach `target_half_width`.",
    )
    @action(detail=False, methods=["post"])
    def plan(self, request):
        from evaluation.studies.planning import pairwise_plan_for_prompt_set, plan_for_prompt_set

        data = self.validated(StudyPlanRequestSerializer).validated_data
        design = {name: data[name] for name in ("samples_per_prompt", "raters_per_output")}
        if data["mode"] == Study.Mode.PAIRWISE:
            pairwise = pairwise_plan_for_prompt_set(
                data["prompt_set"], target_half_width=data["target_half_width"], **design
            )
            return Response(PairwisePlanSerializer(pairwise.as_dict()).data)
        plan = plan_for_prompt_set(data["prompt_set"], effect=data["expected_difference"], **design)
        return Response(StudyPlanSerializer(plan.as_dict()).data)

    @extend_schema(responses=StudyEventSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)
    def events(self, request, pk=None):
        """The audit log: opened, screened, closed, unblinded — who and when."""
        study = self.get_object()
        return Response(StudyEventSerializer(study.events.select_related("actor"), many=True).data)


# --- outputs (admins) ------------------------------------------------------------------------


class OutputAccess(BasePermission):
    def has_permission(self, request, view) -> bool:
        return access.can_screen_output(request.user)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("study", OpenApiTypes.INT, description="Study id."),
            OpenApiParameter("screening", OpenApiTypes.STR, enum=StudyOutput.Screening.values),
        ]
    )
)
class StudyOutputViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, EvaluationViewSet):
    """Admins only: outputs with their arm and model, and the screening actions."""

    permission_classes = [OutputAccess]
    serializer_class = StudyOutputSerializer
    queryset = StudyOutput.objects.select_related(
        "arm__model_version", "prompt__category"
    ).order_by("study_id", "prompt__order", "arm__order", "sample_index")

    def get_queryset(self):
        queryset = super().get_queryset()
        params = self.request.query_params
        if (study := int_param(params, "study")) is not None:
            queryset = queryset.filter(study_id=study)
        if (screening := params.get("screening")) in StudyOutput.Screening.values:
            queryset = queryset.filter(screening=screening)
        return queryset

    @extend_schema(request=None, responses={200: StudyOutputSerializer, 400: ERROR})
    @action(detail=True, methods=["post"])
    def clear(self, request, pk=None):
        """Let a held output into the rating pool."""
        output = lifecycle.output_clear(output=self.get_object(), user=request.user)
        return Response(StudyOutputSerializer(self.get_queryset().get(pk=output.pk)).data)

    @extend_schema(request=ExcludeSerializer, responses={200: StudyOutputSerializer})
    @action(detail=True, methods=["post"])
    def exclude(self, request, pk=None):
        """Take an output out of the study (no more claims; results ignore it)."""
        data = self.validated(ExcludeSerializer).validated_data
        output = lifecycle.output_exclude(
            output=self.get_object(), user=request.user, reason=data["reason"]
        )
        return Response(StudyOutputSerializer(self.get_queryset().get(pk=output.pk)).data)


# --- raters ----------------------------------------------------------------------------------


class RaterOnly(BasePermission):
    message = "Only members of the rater group rate (admins too must be in it)."

    def has_permission(self, request, view) -> bool:
        return access.can_rate_study(request.user)


def _task_response(rating: Rating | None) -> Response:
    if rating is None:
        return Response(status=status.HTTP_204_NO_CONTENT)
    return Response(TaskSerializer(task_payload(rating)).data)


TASK_RESPONSES = {
    200: TaskSerializer,
    204: OpenApiResponse(description="Nothing left for you in this study right now."),
    403: ERROR,
    409: ERROR,
}


def rater_study(user, pk, *, check_pool: bool = True) -> Study:
    """The study a rater asks for by id, or 404; 403 outside its pool (the rating services
    check the pool themselves, so their callers skip the extra query)."""
    valid = re.fullmatch(r"[0-9]{1,18}", str(pk)) is not None
    studies = Study.objects.select_related("prompt_set")
    study = studies.filter(pk=int(pk)).first() if valid else None
    # A study of a profile the user does not rate in does not exist for them.
    if study is None or not access.has_rater_role(user, study.profile_id):
        raise NotFound("No such study.")
    if check_pool and not access.can_rate_study(user, study):
        raise PermissionDenied("You are not in this study's rater pool.")
    return study


class RatingStudyViewSet(EvaluationViewSet):
    """The studies a rater rates in, and their queue."""

    permission_classes = [RaterOnly]
    serializer_class = RaterStudySerializer
    queryset = Study.objects.all()  # for the schema's id type; access goes through _study
    pagination_class = None

    def _study(self, pk, *, check_pool: bool = True) -> Study:
        return rater_study(self.request.user, pk, check_pool=check_pool)

    def _summary(self, study: Study) -> dict:
        progress = study_progress(study)
        mine = rater_progress(study, self.request.user)
        share = -(-progress.needed // (study.raters.count() or 1))  # a fair share per rater
        return {
            "id": study.pk,
            "name": study.name,
            "status": study.status,
            "my_progress": {
                "completed": mine.completed,
                "skipped": mine.skipped,
                "share": share,
                "open_to_me": mine.open_to_me,
            },
            "study_progress": {
                "completed": progress.completed,
                "needed": progress.needed,
                "percent": progress.percent,
            },
        }

    @extend_schema(responses=RaterStudySerializer(many=True))
    def list(self, request):
        """Studies open for rating that you are in, with your progress and the study's."""
        rows = [self._summary(s) for s in rater_studies(request.user)]
        return Response(RaterStudySerializer(rows, many=True).data)

    @extend_schema(responses={200: RaterStudySerializer, 403: ERROR})
    def retrieve(self, request, pk=None):
        return Response(RaterStudySerializer(self._summary(self._study(pk))).data)

    @extend_schema(request=None, responses=TASK_RESPONSES)
    @action(detail=True, methods=["post"])
    def claim(self, request, pk=None):
        """Lease your next output (or get back the one you hold)."""
        study = self._study(pk, check_pool=False)
        return _task_response(queue.rating_claim_next(study=study, rater=request.user))

    @extend_schema(responses=TASK_RESPONSES)
    @action(detail=True, methods=["get"])
    def current(self, request, pk=None):
        """The output you hold now, if any (no new claim)."""
        study = self._study(pk, check_pool=False)
        queue.check_can_rate(study, request.user)
        return _task_response(queue.current_claim(study, request.user))

    @extend_schema(
        responses={
            200: LastRatingSerializer,
            204: OpenApiResponse(description="You have not submitted a rating here yet."),
            403: ERROR,
            409: ERROR,
        }
    )
    @action(detail=True, methods=["get"])
    def last(self, request, pk=None):
        """Your last submitted rating in this study: the one you may still change
        (``POST /api/rating/outputs/{output}/revise/``) while the study is open."""
        study = self._study(pk, check_pool=False)
        queue.check_can_rate(study, request.user)
        rating = revisions.rating_last(study, request.user)
        if rating is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        rating.study = study
        return Response(LastRatingSerializer(last_rating_payload(rating)).data)


class RatingOutputViewSet(EvaluationViewSet):
    """Answer a claimed output, by its public id."""

    permission_classes = [RaterOnly]
    lookup_field = "public_id"
    lookup_value_regex = r"[A-Za-z0-9_-]{6,32}"
    serializer_class = RatingResultSerializer

    @staticmethod
    def _result(rating: Rating) -> Response:
        return Response(
            RatingResultSerializer(
                {
                    "output": rating.output.public_id,
                    "status": rating.status,
                    "score": rating.score,
                }
            ).data
        )

    @extend_schema(
        request=SubmitSerializer,
        responses={200: RatingResultSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    @action(detail=True, methods=["post"])
    def submit(self, request, public_id=None):
        """Score your claimed output 1–5 (5 = matches the category's position best)."""
        data = self.validated(SubmitSerializer).validated_data
        rating = queue.rating_submit(
            public_id=public_id,
            rater=request.user,
            score=int(data["score"]),
            comment=data["comment"],
        )
        return self._result(rating)

    @extend_schema(
        request=SubmitSerializer,
        responses={200: RatingResultSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    @action(detail=True, methods=["post"])
    def revise(self, request, public_id=None):
        """Change the score (and comment) of your last submitted rating while the study is
        open. Only your last one; the earlier score and comment are kept in a revision
        log."""
        data = self.validated(SubmitSerializer).validated_data
        output = StudyOutput.objects.select_related("study").filter(public_id=public_id).first()
        if output is None:
            raise NotFound("No such output.")
        rating = revisions.rating_revise(
            study=output.study,
            rater=request.user,
            public_id=public_id,
            score=int(data["score"]),
            comment=data["comment"],
        )
        return self._result(rating)

    @extend_schema(request=None, responses={200: RatingResultSerializer, 404: ERROR, 409: ERROR})
    @action(detail=True, methods=["post"])
    def skip(self, request, public_id=None):
        """Give the output back: other raters get it, you never see it again."""
        return self._result(queue.rating_skip(public_id=public_id, rater=request.user))

    @extend_schema(
        request=FlagSerializer, responses={200: RatingResultSerializer, 404: ERROR, 409: ERROR}
    )
    @action(detail=True, methods=["post"])
    def flag(self, request, public_id=None):
        """Report the output (names a model, broken, …); an admin reviews it."""
        data = self.validated(FlagSerializer).validated_data
        rating = queue.rating_flag(public_id=public_id, rater=request.user, reason=data["reason"])
        return self._result(rating)
