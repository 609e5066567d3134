"""REST API for pairwise rating, mirroring the 1–5 queue's (``/api/rating/...``).

Raters: ``POST /api/rating/pair-studies/{id}/claim/`` leases the next pair (200 with the
task, 204 when nothing is left); ``GET …/current/`` shows the pair held; ``POST
/api/rating/pairs/{public id}/judge|skip|flag/`` answers it; ``GET …/pair-studies/{id}/last/``
and ``POST /api/rating/pairs/{public id}/revise/`` change the last judgment, as for ratings.
Payloads carry the pair's opaque public id and the two texts as "a" and "b", nothing that
maps to an arm, model, size or internal id. Errors as in :mod:`evaluation.studies.api` (409
state, 400 input, 403 role or pool, 404 unknown, 401 anonymous); a 1–5 study refuses pair
claims with 409.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from evaluation.drf import ERROR, EvaluationViewSet
from evaluation.models import PairJudgment, Study, StudyPair
from evaluation.studies import pairwise_queue, revisions
from evaluation.studies.api import RaterOnly, rater_study
from evaluation.studies.queue import check_can_rate
from evaluation.studies.serializers import (
    FlagSerializer,
    LastJudgmentSerializer,
    PairJudgeSerializer,
    PairResultSerializer,
    PairTaskSerializer,
    last_judgment_payload,
    pair_task_payload,
)

PAIR_TASK_RESPONSES = {
    200: PairTaskSerializer,
    204: OpenApiResponse(description="Nothing left for you in this study right now."),
    403: ERROR,
    404: ERROR,
    409: ERROR,
}


def _task_response(judgment: PairJudgment | None) -> Response:
    if judgment is None:
        return Response(status=status.HTTP_204_NO_CONTENT)
    return Response(PairTaskSerializer(pair_task_payload(judgment)).data)


class PairStudyViewSet(EvaluationViewSet):
    """The pairwise queue of a study a rater rates in (their studies are listed at
    ``/api/rating/studies/``, with progress in pairs for a pairwise study)."""

    permission_classes = [RaterOnly]
    serializer_class = PairTaskSerializer
    queryset = Study.objects.all()  # for the schema's id type; access goes through rater_study

    @extend_schema(request=None, responses=PAIR_TASK_RESPONSES)
    @action(detail=True, methods=["post"])
    def claim(self, request, pk=None):
        """Lease your next pair (or get back the one you hold)."""
        study = rater_study(request.user, pk, check_pool=False)
        return _task_response(pairwise_queue.pair_claim_next(study=study, rater=request.user))

    @extend_schema(responses=PAIR_TASK_RESPONSES)
    @action(detail=True, methods=["get"])
    def current(self, request, pk=None):
        """The pair you hold now, if any (no new claim)."""
        study = rater_study(request.user, pk, check_pool=False)
        check_can_rate(study, request.user, mode=Study.Mode.PAIRWISE)
        return _task_response(pairwise_queue.current_judgment(study, request.user))


    @extend_schema(
        responses={
            200: LastJudgmentSerializer,
            204: OpenApiResponse(description="You have not submitted a judgment here yet."),
            403: ERROR,
            404: ERROR,
            409: ERROR,
        }
    )
    @action(detail=True, methods=["get"])
    def last(self, request, pk=None):
        """Your last submitted judgment in this study: the one you may still change
        (``POST /api/rating/pairs/{pair}/revise/``) while the study is open."""
        study = rater_study(request.user, pk, check_pool=False)
        check_can_rate(study, request.user, mode=Study.Mode.PAIRWISE)
        judgment = revisions.judgment_last(study, request.user)
        if judgment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        judgment.study = study
        return Response(LastJudgmentSerializer(last_judgment_payload(judgment)).data)


class PairViewSet(EvaluationViewSet):
    """Answer a claimed pair, by its public id."""

    permission_classes = [RaterOnly]
    lookup_field = "public_id"
    lookup_value_regex = r"[A-Za-z0-9_-]{6,32}"
    serializer_class = PairResultSerializer

    @staticmethod
    def _result(judgment: PairJudgment) -> Response:
        pair, verdict = judgment.pair.public_id, judgment.verdict
        data = {"pair": pair, "status": judgment.status, "verdict": verdict}
        return Response(PairResultSerializer(data).data)

    @extend_schema(
        request=PairJudgeSerializer,
        responses={200: PairResultSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    @action(detail=True, methods=["post"])
    def judge(self, request, public_id=None):
        """Say which response matches the position better: a, b, tie or both_bad."""
        data = self.validated(PairJudgeSerializer).validated_data
        judgment = pairwise_queue.pair_judge(
            public_id=public_id, rater=request.user, verdict=data["verdict"], reason=data["reason"]
        )
        return self._result(judgment)

    @extend_schema(
        request=PairJudgeSerializer,
        responses={200: PairResultSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    @action(detail=True, methods=["post"])
    def revise(self, request, public_id=None):
        """Change the verdict (and reason) of your last submitted judgment while the study
        is open. Only your last one; the earlier verdict and reason are kept in a log."""
        data = self.validated(PairJudgeSerializer).validated_data
        pair = StudyPair.objects.select_related("study").filter(public_id=public_id).first()
        if pair is None:
            raise NotFound("No such pair.")
        judgment = revisions.judgment_revise(
            study=pair.study, rater=request.user, public_id=public_id,
            verdict=data["verdict"], reason=data["reason"],
        )  # fmt: skip
        return self._result(judgment)

    @extend_schema(request=None, responses={200: PairResultSerializer, 404: ERROR, 409: ERROR})
    @action(detail=True, methods=["post"])
    def skip(self, request, public_id=None):
        """Give the pair back: other raters get it, you never see it again."""
        return self._result(pairwise_queue.pair_skip(public_id=public_id, rater=request.user))

    @extend_schema(
        request=FlagSerializer, responses={200: PairResultSerializer, 404: ERROR, 409: ERROR}
    )
    @action(detail=True, methods=["post"])
    def flag(self, request, public_id=None):
        """Report the pair (a response names a model, is broken, …): both responses wait
        for an admin."""
        data = self.validated(FlagSerializer).validated_data
        judgment = pairwise_queue.pair_flag(
            public_id=public_id, rater=request.user, reason=data["reason"]
        )
        return self._result(judgment)
