"""The hosted exit kit as a download: a button on the fine-tune and base-model pages
(``POST``, admins) and ``POST /api/exit-kits/``; both write the kit with
:func:`evaluation.report.exit_kit.write_exit_kit` and send the zip."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from django.contrib import messages
from django.http import FileResponse
from django.shortcuts import redirect
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import BasePermission

from evaluation import access
from evaluation.drf import ERROR, EvaluationViewSet
from evaluation.report.exit_kit import ExitKitError, hosted_finetunes, write_exit_kit
from palmsweb.lib.drf import MAX_BIGINT, RejectUnknownFieldsMixin
from palmsweb.lib.http import require_post
from palmsweb.roles import Role, role_required
from training.models import FineTuneJob


def _kit_response(jobs) -> FileResponse:
    """Write the kit to a temporary file and stream it; ExitKitError when nothing is hosted.
    The file is unlinked once open: the response holds the only handle."""
    tmp = Path(tempfile.mkdtemp(prefix="exit-kit-"))
    try:  # a refusal (nothing hosted) must not leave the folder behind either
        kit = write_exit_kit(jobs, tmp / "palmsweb-exit-kit.zip")
        handle = kit.path.open("rb")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    response = FileResponse(
        handle, as_attachment=True, filename=kit.path.name, content_type="application/zip"
    )
    response["X-Checksum-SHA256"] = kit.sha256
    return response


def _int_or_none(value) -> int | None:
    """An id from the form; past 64 bits it names nothing (0), rather than everything."""
    if not str(value or "").isdigit():
        return None
    return int(value) if int(value) <= MAX_BIGINT else 0


@require_post
@role_required(Role.ADMIN)
def exit_kit_download(request):
    """The kit of one fine-tune (``finetune``), one base model's (``base_model``) or every
    hosted fine-tune; back to the page with the reason when there is none."""
    finetune = _int_or_none(request.POST.get("finetune"))
    jobs = hosted_finetunes(
        job_ids=[finetune] if finetune is not None else None,
        base_model_id=_int_or_none(request.POST.get("base_model")),
    )
    try:
        return _kit_response(jobs)
    except ExitKitError as error:
        messages.error(request, str(error))
    if finetune and FineTuneJob.objects.filter(pk=finetune).exists():
        return redirect("training:finetune-detail", finetune)
    return redirect(
        "training:basemodel-list" if request.POST.get("base_model") else "training:finetune-list"
    )


class ExitKitAccess(BasePermission):
    message = "Only admins may write exit kits."

    def has_permission(self, request, view) -> bool:
        return access.can_write_exit_kit(request.user)


class ExitKitRequestSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    finetunes = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_BIGINT),
        required=False,
        allow_empty=False,
        help_text="Only these fine-tunes (ids); default: every hosted fine-tune.",
    )  # fmt: skip
    base_model = serializers.IntegerField(
        min_value=1,
        max_value=MAX_BIGINT,
        required=False,
        help_text="Only this base model's hosted fine-tunes.",
    )


class ExitKitViewSet(EvaluationViewSet):
    """The hosted exit kit (admins): a zip with, for every hosted fine-tune, its job spec,
    events, metrics, training snapshot, resulting model id and every output sampled from it
    with its ratings, plus the bundles of the closed studies that used it."""

    permission_classes = [ExitKitAccess]

    @extend_schema(
        request=ExitKitRequestSerializer,
        responses={
            (200, "application/zip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The exit kit (zip); X-Checksum-SHA256."
            ),
            400: ERROR,
        },
    )
    def create(self, request, *args, **kwargs):
        data = self.validated(ExitKitRequestSerializer).validated_data
        jobs = hosted_finetunes(job_ids=data.get("finetunes"), base_model_id=data.get("base_model"))
        return _kit_response(jobs)  # ExitKitError: 400 with its reason (EvaluationViewSet)
