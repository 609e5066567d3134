"""REST API of the held-out adherence metric: ``GET /api/studies/{id}/adherence/`` (the
report section and the newest run) and ``POST`` (start a run; admins).

Per-arm changes against base are shown only to those who may see arm results (admins, and
researchers once the study is unblinded); others get perplexities under blinded labels.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from evaluation import access, errors, scoring
from evaluation.drf import ERROR
from evaluation.models import ScoringRun, Study
from palmsweb.lib.drf import RejectUnknownFieldsMixin, TokenAuthentication


class AdherenceAccess(BasePermission):
    message = "Study management is for admins and researchers."

    def has_permission(self, request, view) -> bool:
        if request.method == "POST":
            return access.can_manage_study(request.user)
        return access.can_read_study(request.user)


class AdherenceStartSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    snapshot = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1, max_value=2**63 - 1,
        help_text="The held-out snapshot; left out: the demo validation snapshot (else the "
        "newest snapshot of a validation dataset).",
    )  # fmt: skip


RUN = inline_serializer(
    "AdherenceRun",
    {
        "id": serializers.IntegerField(),
        "status": serializers.CharField(),
        "progress_done": serializers.IntegerField(),
        "progress_total": serializers.IntegerField(),
        "error": serializers.CharField(),
        "snapshot": serializers.IntegerField(allow_null=True),
        "compute": serializers.DictField(
            help_text="The run's accounting once it ends ({} before): device, wall seconds, "
            "tokens read, flops (2 x parameters x tokens read), energy_kwh, co2e_kg."
        ),
    },
    allow_null=True,
)
ADHERENCE = inline_serializer(
    "StudyAdherence",
    {
        "study": serializers.IntegerField(),
        "blinded": serializers.BooleanField(),
        "latest_run": RUN,
        "section": serializers.DictField(
            help_text="available; snapshot; unit (the held-out sample); confidence; "
            "categories; rows (arm, available, cells: category, n_samples, tokens, perplexity "
            "and, unblinded, change_pct, ci_low_pct, ci_high_pct; unblinded also "
            "capability_change_pct); sentences (unblinded)."
        ),
    },
)


def _run_payload(run: ScoringRun | None) -> dict | None:
    if run is None:
        return None
    return {
        "id": run.pk,
        "status": run.status,
        "progress_done": run.progress_done,
        "progress_total": run.progress_total,
        "error": run.error,
        "snapshot": run.options.get("snapshot"),
        "compute": run.compute,
    }


def _study(request, raw: str, *, write: bool = False) -> Study:
    """The study of the URL, or 404 (the permission class has checked the role already);
    an id that is not a positive 64-bit integer is a 404, as the router's routes answer."""
    try:
        pk = int(raw)
    except ValueError:
        raise NotFound() from None
    if not 0 < pk < 2**63:
        raise NotFound()
    return access.get_study_for_user(request.user, pk, write=write)


# The id is matched loosely in the URL so that a bad one gets this API's JSON 404, not the
# site's page; the schema still says it is an integer.
STUDY_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="Study id.")


@extend_schema(parameters=[STUDY_ID])
class StudyAdherenceView(APIView):
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [AdherenceAccess]

    def _payload(self, request, study: Study) -> dict:
        blinded = not access.can_see_arm_results(request.user, study)
        latest = scoring.latest_runs(study)[ScoringRun.Kind.ADHERENCE]
        return {
            "study": study.pk,
            "blinded": blinded,
            "latest_run": _run_payload(latest),
            "section": scoring.adherence_summary(study, blinded=blinded),
        }

    @extend_schema(responses={200: ADHERENCE, 403: ERROR, 404: ERROR})
    def get(self, request, **kwargs):
        """The held-out adherence of the study's arms (latest succeeded run) and the
        newest run's status."""
        study = _study(request, kwargs["id"])
        return Response(self._payload(request, study))

    @extend_schema(
        request=AdherenceStartSerializer, responses={202: ADHERENCE, 400: ERROR, 403: ERROR}
    )
    def post(self, request, **kwargs):
        """Queue a held-out adherence run (gpu queue); 400 when the set is missing, empty
        or not held out, or a run is already queued or running."""
        study = _study(request, kwargs["id"], write=True)
        data = AdherenceStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            scoring.scoring_run_start(
                study=study, kind=ScoringRun.Kind.ADHERENCE,
                options={"snapshot": data.validated_data["snapshot"]}, user=request.user,
            )  # fmt: skip
        except errors.EvaluationError as error:
            return Response({"detail": str(error)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(self._payload(request, study), status=status.HTTP_202_ACCEPTED)
