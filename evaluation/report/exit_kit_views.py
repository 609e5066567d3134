"""The hosted exit kit in the browser and the API (admins). Starting one records an
:class:`ExitKitRun` and returns at once; a worker on the default queue writes the zip
(:mod:`evaluation.report.exit_kit_jobs`), the page polls it with htmx and both download it
once it has succeeded.

Pages: ``exit-kits/`` (the kits, and ``POST`` to start one: every hosted model, one
fine-tune's with ``finetune``, one base model's with ``base_model``) and
``exit-kits/<pk>/download/``. API: ``POST /api/exit-kits/`` (202), ``GET /api/exit-kits/``,
``GET /api/exit-kits/{id}/`` and ``GET /api/exit-kits/{id}/download/``."""

from __future__ import annotations

from django.contrib import messages
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.vary import vary_on_headers
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from evaluation import access
from evaluation.drf import ERROR, EvaluationViewSet
from evaluation.models import ExitKitRun
from evaluation.report.exit_kit import ExitKitError
from evaluation.report.exit_kit_jobs import exit_kit_create, kit_file
from palmsweb.lib.drf import MAX_BIGINT, RejectUnknownFieldsMixin
from palmsweb.lib.htmx import render_page
from palmsweb.lib.http import require_get, require_get_post
from palmsweb.roles import Role, role_required

KITS_SHOWN = 50


def _int_or_none(value) -> int | None:
    """An id from the form; past 64 bits it names nothing (0), rather than everything."""
    if not str(value or "").isdigit():
        return None
    return int(value) if int(value) <= MAX_BIGINT else 0


def _kit_download(run: ExitKitRun) -> FileResponse:
    path = kit_file(run)
    if path is None:
        raise Http404("This exit kit is not written (yet), or its file is gone.")
    response = FileResponse(
        path.open("rb"), as_attachment=True, filename=path.name, content_type="application/zip"
    )
    response["X-Checksum-SHA256"] = run.sha256
    return response


@require_get_post
@role_required(Role.ADMIN)
@vary_on_headers("HX-Request")
def exit_kit_list(request):
    """The exit kits: start one (POST: every hosted model, or ``finetune`` or
    ``base_model``'s), watch them being written (htmx polling), download them."""
    if request.method == "POST":
        finetune = _int_or_none(request.POST.get("finetune"))
        try:
            exit_kit_create(
                job_ids=[finetune] if finetune is not None else None,
                base_model_id=_int_or_none(request.POST.get("base_model")),
                user=request.user,
            )
        except ExitKitError as error:
            messages.error(request, str(error))
        else:
            messages.success(request, "Exit kit queued: download it below once it is written.")
        return redirect("evaluation:exit-kits")
    kits = list(ExitKitRun.objects.select_related("created_by")[:KITS_SHOWN])
    context = {
        "kits": kits,
        "pending": any(k.status in (k.Status.QUEUED, k.Status.RUNNING) for k in kits),
    }
    return render_page(request, "evaluation/exit_kit_list.html", context, partial="kits")


@require_get
@role_required(Role.ADMIN)
def exit_kit_download(request, pk: int):
    """Stream a written kit with its SHA-256 in the headers."""
    return _kit_download(get_object_or_404(ExitKitRun, pk=pk))


# --- API --------------------------------------------------------------------------------------


class ExitKitAccess(BasePermission):
    message = "Only admins may write exit kits."

    def has_permission(self, request, view) -> bool:
        return access.can_write_exit_kit(request.user)


class ExitKitRequestSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    finetunes = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_BIGINT),
        required=False,
        allow_empty=False,
        help_text="Only these fine-tunes (ids); default: every hosted fine-tune and every "
        "hosted model sampled as is.",
    )  # fmt: skip
    base_model = serializers.IntegerField(
        min_value=1,
        max_value=MAX_BIGINT,
        required=False,
        help_text="Only this base model's hosted fine-tunes and plain versions.",
    )


class ExitKitRunSerializer(serializers.ModelSerializer):
    download = serializers.SerializerMethodField(
        help_text="Where to download the zip once status is succeeded; null before."
    )
    finetunes_requested = serializers.ListField(
        source="finetune_ids", child=serializers.IntegerField(), read_only=True
    )
    base_model_requested = serializers.IntegerField(
        source="base_model_id", read_only=True, allow_null=True
    )

    class Meta:
        model = ExitKitRun
        fields = [
            "id", "status", "phase", "error", "finetunes_requested", "base_model_requested",
            "finetunes", "model_versions", "outputs", "studies", "sha256", "size_bytes",
            "created_at", "started_at", "finished_at", "download",
        ]  # fmt: skip
        read_only_fields = fields

    def get_download(self, run: ExitKitRun) -> str | None:
        if run.status != ExitKitRun.Status.SUCCEEDED:
            return None
        return f"/api/exit-kits/{run.pk}/download/"


@extend_schema_view(
    list=extend_schema(responses=ExitKitRunSerializer(many=True)),
    retrieve=extend_schema(responses=ExitKitRunSerializer),
)
class ExitKitViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, EvaluationViewSet):
    """The hosted exit kit (admins): a zip with, for every hosted fine-tune, its job spec,
    events, metrics, training snapshot, resulting model id and every output sampled from it
    with its ratings; for every hosted model sampled as is, its outputs; and the bundles of
    the closed studies that used them. Written in the background: create one, poll it,
    download it."""

    permission_classes = [ExitKitAccess]
    serializer_class = ExitKitRunSerializer
    queryset = ExitKitRun.objects.all()

    @extend_schema(
        request=ExitKitRequestSerializer,
        responses={202: ExitKitRunSerializer, 400: ERROR},
    )
    def create(self, request, *args, **kwargs):
        """Queue a kit; 400 with the reason when there is nothing hosted to put in it."""
        data = self.validated(ExitKitRequestSerializer).validated_data
        run = exit_kit_create(
            job_ids=data.get("finetunes"), base_model_id=data.get("base_model"),
            user=request.user,
        )  # fmt: skip
        return Response(ExitKitRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        responses={
            (200, "application/zip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The exit kit (zip); X-Checksum-SHA256."
            ),
            409: ERROR,
        },
    )
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        """The zip, once the kit has succeeded; 409 while it is queued or being written."""
        run = self.get_object()
        if run.status != ExitKitRun.Status.SUCCEEDED:
            return Response(
                {"detail": f"This exit kit has no zip ({run.get_status_display().lower()})."},
                status=status.HTTP_409_CONFLICT,
            )
        return _kit_download(run)
