"""REST API of the pairwise report: ``GET /api/pairwise-results/{study id}/``, the same
numbers as the page, under the same report modes (arms by name once unblinded, letters for
admins before, agreement only for researchers on a closed, blinded study)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from evaluation.access import get_report_study_for_user
from evaluation.drf import ERROR, EvaluationViewSet
from evaluation.models import Study
from evaluation.report.pairwise import pairwise_report
from evaluation.studies.position_serializers import (
    FrozenPositionSerializer,
    frozen_position_payload,
)

_RATE = inline_serializer(
    "PairwiseRate",
    {
        "value": serializers.FloatField(allow_null=True),
        "ci_low": serializers.FloatField(allow_null=True),
        "ci_high": serializers.FloatField(allow_null=True),
    },
)
PAIRWISE_REPORT = inline_serializer(
    "PairwiseReport",
    {
        "study": serializers.IntegerField(),
        "mode": serializers.ChoiceField(choices=["arms", "blinded", "arm-free"]),
        "unit_of_analysis": serializers.CharField(),
        "n_judgments": serializers.IntegerField(),
        "n_prompts": serializers.IntegerField(),
        "agreement": inline_serializer(
            "PairwiseAgreement",
            {
                "alpha": serializers.FloatField(allow_null=True),
                "ci_low": serializers.FloatField(allow_null=True),
                "ci_high": serializers.FloatField(allow_null=True),
                "n_pairs": serializers.IntegerField(),
                "percent_agreement": serializers.FloatField(allow_null=True),
            },
        ),
        "outcomes": inline_serializer(
            "PairwiseOutcome",
            {
                "first": serializers.CharField(),
                "second": serializers.CharField(),
                "category": serializers.CharField(),
                "n_prompts": serializers.IntegerField(),
                "n_judgments": serializers.IntegerField(),
                "win": _RATE,
                "tie": _RATE,
                "loss": _RATE,
                "both_bad": _RATE,
            },
            many=True,
        ),
        "bradley_terry": serializers.DictField(
            allow_null=True,
            help_text="strengths [{arm, strength, ci_low, ci_high}] (log-odds vs the first "
            "arm), left_bias, n_decisive, n_ties, n_both_bad, n_prompts, note; null when "
            "the arms are not shown (arm-free mode).",
        ),
        "positions": FrozenPositionSerializer(
            many=True, help_text="The position versions raters judged against, frozen at opening."
        ),
    },
)


class PairwiseResultsViewSet(EvaluationViewSet):
    """The pairwise report of a study, for researchers and admins."""

    permission_classes = [IsAuthenticated]
    queryset = Study.objects.all()  # for the schema's id type; access via the report policy

    @extend_schema(responses={200: PAIRWISE_REPORT, 403: ERROR, 404: ERROR})
    def retrieve(self, request, pk=None):
        """Win/tie/loss per arm pair and category, Bradley–Terry strengths and agreement;
        the unit of analysis is the prompt (see ``unit_of_analysis``)."""
        if not str(pk).isdigit():
            raise Http404("No such study.")
        study, mode = get_report_study_for_user(request.user, int(pk))
        if study.mode != Study.Mode.PAIRWISE:
            raise Http404("This study rates outputs 1–5: see /api/studies/{id}/results/.")
        positions = {"positions": frozen_position_payload(study)}  # as the page shows them
        return Response(pairwise_report(study, mode) | positions)
