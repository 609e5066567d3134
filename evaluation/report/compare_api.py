"""REST API of the comparison of two studies: ``GET /api/studies/compare/?a=<id>&b=<id>``,
the same content as the page (/evaluation/studies/compare/) under the same rules: for
researchers and admins, of closed, unblinded studies of profiles they research in (anything
else is a 404 that says no more than the page does)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from drf_spectacular.utils import inline_serializer as shape
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from evaluation import access
from evaluation.drf import ERROR
from evaluation.models import Study
from evaluation.report.compare import CompareRow, StudyComparison, compare_studies
from evaluation.report.compare_checks import FrozenPosition
from palmsweb.lib.drf import TokenAuthentication, int_param
from palmsweb.profiles import member_profile_ids


# Each field below is a new instance: one field object under two names would be bound to
# the second name only, and the schema would lose the first.
def _float():
    return serializers.FloatField(allow_null=True)


def _int():
    return serializers.IntegerField(allow_null=True)


class ComparedPositionSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    text = serializers.CharField()


class ComparedStudySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    profile = serializers.IntegerField()
    profile_name = serializers.CharField()


def _position_field():
    return ComparedPositionSerializer(
        allow_null=True,
        help_text="The position version this study froze when it opened (null: none).",
    )


_ROW = shape(
    "StudyCompareRow",
    {
        "category": serializers.CharField(help_text="Matched by name across two profiles."),
        "vt_a": _float(), "vt_b": _float(),
        "delta": _float(),
        "ci_low": _float(), "ci_high": _float(),
        "welch_p": _float(),
        "n_prompts_a": _int(), "n_prompts_b": _int(),
        "p_holm": _float(),
        "gap_a": _float(), "lead_p_holm_a": _float(),
        "gap_b": _float(), "lead_p_holm_b": _float(),
        "gap_delta": _float(),
        "position_a": _position_field(), "position_b": _position_field(),
    },
    many=True,
)  # fmt: skip
COMPARISON = shape(
    "StudyComparison",
    {
        "a": ComparedStudySerializer(),
        "b": ComparedStudySerializer(),
        "summary": serializers.CharField(),
        "cross_profile": serializers.BooleanField(),
        "same_base_model": serializers.BooleanField(),
        "prompt_overlap": shape(
            "PromptOverlap",
            {
                "shared": serializers.IntegerField(),
                "n_a": serializers.IntegerField(),
                "n_b": serializers.IntegerField(),
                "same_prompts": serializers.BooleanField(),
            },
            help_text="Distinct prompt texts of each study and how many both have.",
        ),
        "training": shape(
            "ArmTraining",
            {
                "study": serializers.IntegerField(),
                "arm": serializers.CharField(),
                "model_version": serializers.CharField(),
                "trained_profile": _int(),
                "trained_profile_name": serializers.CharField(allow_null=True),
                "own_profile": serializers.BooleanField(),
            },
            many=True,
            help_text="Each values-targeted arm: which profile's snapshot trained it "
            "(null: no fine-tune on record, or a profile the reader is no member of).",
        ),
        "warnings": serializers.ListField(child=serializers.CharField()),
        "rows": _ROW,
    },
)
BAD_PARAMS = OpenApiResponse(
    shape(
        "StudyCompareParamError",
        {
            "a": serializers.ListField(child=serializers.CharField(), required=False),
            "b": serializers.ListField(child=serializers.CharField(), required=False),
        },
    ),
    description="A parameter is missing or not a study id, or A and B are the same study.",
)


class CompareAccess(BasePermission):
    message = "Results are for researchers and admins."

    def has_permission(self, request, view) -> bool:
        return access.can_read_report(request.user)


class StudyCompareView(APIView):
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [CompareAccess]

    @extend_schema(
        operation_id="studies_compare",
        parameters=[
            OpenApiParameter("a", int, required=True, description="Study A (before)."),
            OpenApiParameter("b", int, required=True, description="Study B (after)."),
        ],
        responses={200: COMPARISON, 400: BAD_PARAMS, 403: ERROR, 404: ERROR},
    )
    def get(self, request):
        """Two closed, unblinded studies side by side, per category: the values-targeted
        prompt means and their Welch test (one profile), each study's lead over its base,
        the positions each froze, how many prompts they share, and the warnings."""
        ids = {name: _study_id(request.query_params, name) for name in ("a", "b")}
        a, b = (_comparable(request.user, ids[name]) for name in ("a", "b"))
        if a.pk == b.pk:
            raise ValidationError({"b": ["Pick two different studies: A and B are the same."]})
        comparison = compare_studies(a, b, member_profile_ids(request.user))
        return Response(comparison_payload(comparison))


def _study_id(params, name: str) -> int:
    pk = int_param(params, name)
    if pk is None:
        raise ValidationError({name: [f"Required: the id of study {name.upper()}."]})
    return pk


def _comparable(user, pk: int) -> Study:
    study = access.comparable_studies(user).filter(pk=pk).first()
    if study is None:
        raise NotFound(access.not_comparable(pk))
    return study


def comparison_payload(comparison: StudyComparison) -> dict:
    overlap = comparison.overlap
    return {
        "a": _study(comparison.a),
        "b": _study(comparison.b),
        "summary": comparison.summary,
        "cross_profile": comparison.cross_profile,
        "same_base_model": comparison.same_base_model,
        "prompt_overlap": {
            "shared": overlap.shared,
            "n_a": overlap.n_a,
            "n_b": overlap.n_b,
            "same_prompts": overlap.same_prompts,
        },
        "training": [
            {
                "study": check.study.pk,
                "arm": check.arm,
                "model_version": check.model_version,
                "trained_profile": check.trained_profile_id,
                "trained_profile_name": check.trained_profile,
                "own_profile": check.own_profile,
            }
            for check in comparison.training
        ],
        "warnings": comparison.warnings,
        "rows": [_row(row) for row in comparison.rows],
    }


def _study(study: Study) -> dict:
    profile = study.prompt_set.profile
    return {"id": study.pk, "name": study.name, "profile": profile.pk, "profile_name": profile.name}


def _row(row: CompareRow) -> dict:
    test = row.test
    return {
        "category": row.category.name,
        "vt_a": row.vt_a, "vt_b": row.vt_b, "delta": row.delta,
        "ci_low": test.diff_ci_low if test else None,
        "ci_high": test.diff_ci_high if test else None,
        "welch_p": test.welch_p if test else None,
        # compare_studies tests B against A: the test's n_a counts B's prompts
        "n_prompts_a": test.n_b if test else None,
        "n_prompts_b": test.n_a if test else None,
        "p_holm": row.p_holm,
        "gap_a": row.gap_a, "lead_p_holm_a": row.lead_a.p_holm if row.lead_a else None,
        "gap_b": row.gap_b, "lead_p_holm_b": row.lead_b.p_holm if row.lead_b else None,
        "gap_delta": row.gap_delta,
        "position_a": _position(row.position_a), "position_b": _position(row.position_b),
    }  # fmt: skip


def _position(position: FrozenPosition | None) -> dict | None:
    return None if position is None else {"version": position.version, "text": position.text}
