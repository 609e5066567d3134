"""REST API for curation: categories, datasets and imports here; samples (with revisions
and review) in sample_api.py, snapshots in snapshot_api.py, gap tickets in gap_api.py,
and the shared base viewset in api_base.py. This module names every viewset the router
registers.

Every mutation goes through ``curation.services`` (or ``curation.importing``); domain
errors become status codes here: a stale edit is 409 with both versions, any other
curation rule is 400 with the service's message.

Access: curators and admins read and write; researchers read (and file gap tickets);
raters and users without a role get 403; anonymous requests get 401.
"""

from __future__ import annotations

from django.db.models import Max
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from curation import access, services
from curation.api_base import CURATION_ERROR, CurationViewSet
from curation.gap_api import GapTicketViewSet
from curation.importing import (
    MAX_IMPORT_BYTES,
    ImportRejected,
    samples_import,
    samples_import_preview,
)
from curation.models import Category, Dataset, Sample
from curation.sample_api import SampleViewSet
from curation.serializers import (
    CategoryReorderSerializer,
    CategorySerializer,
    DatasetSerializer,
    ImportPreviewSerializer,
    ImportRejectedSerializer,
    ImportResultSerializer,
    ImportSerializer,
    PositionVersionSerializer,
    PresetLoadResultSerializer,
    PresetLoadSerializer,
)
from curation.snapshot_api import SnapshotViewSet
from palmsweb.models import Profile
from palmsweb.profiles import check_object_profile

__all__ = [
    "CategoryViewSet",
    "DatasetViewSet",
    "GapTicketViewSet",
    "SampleViewSet",
    "SnapshotViewSet",
]


# --- categories ------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(parameters=[OpenApiParameter(
        "include_archived", OpenApiTypes.BOOL, description="Also list archived categories."
    )]),
    create=extend_schema(responses={201: CategorySerializer, 400: CURATION_ERROR}),
    update=extend_schema(responses={200: CategorySerializer, 400: CURATION_ERROR}),
    partial_update=extend_schema(responses={200: CategorySerializer, 400: CURATION_ERROR}),
)
class CategoryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, CurationViewSet):
    serializer_class = CategorySerializer
    queryset = Category.objects.all()

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action != "list":
            return queryset
        # Each row's current version number in the same query (a changed row asks anew).
        queryset = queryset.annotate(
            latest_position_version=Max("position_versions__number")
        ).order_by("order", "name")  # an aggregate drops Meta.ordering
        if self.request.query_params.get("include_archived") not in {"1", "true", "True", "yes"}:
            queryset = queryset.active()
        return queryset

    def create(self, request, *args, **kwargs):
        data = self.validated(CategorySerializer)
        profile = self.profile_for_create(data.pop("profile", None))
        category = services.category_create(**data, user=request.user, profile=profile)
        return Response(CategorySerializer(category).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        category = self.get_object()
        partial = kwargs.get("partial", False)
        data = self.validated(CategorySerializer, instance=category, partial=partial)
        fields = {
            name: data.get(name, getattr(category, name))
            for name in ("name", "position", "guidance", "target_count")
        }
        category = services.category_update(category=category, **fields, user=request.user)
        return Response(CategorySerializer(category).data)

    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    @extend_schema(request=None, responses=PositionVersionSerializer(many=True))
    @action(detail=True, methods=["get"])
    def versions(self, request, pk=None):
        """Every version of the category's position and guidance, newest first, paginated
        like every other list of the API (the schema says so)."""
        category = self.get_object()
        versions = category.position_versions.select_related("author").order_by("-number")
        page = self.paginate_queryset(versions)
        if page is None:
            return Response(PositionVersionSerializer(versions, many=True).data)
        return self.get_paginated_response(PositionVersionSerializer(page, many=True).data)

    @extend_schema(request=None, responses=CategorySerializer)
    @action(detail=True, methods=["post"])
    def archive(self, request, pk=None):
        category = self.get_object()
        services.category_archive(category=category)
        return Response(CategorySerializer(category).data)

    @extend_schema(request=None, responses=CategorySerializer)
    @action(detail=True, methods=["post"])
    def restore(self, request, pk=None):
        category = self.get_object()
        services.category_restore(category=category)
        return Response(CategorySerializer(category).data)

    @extend_schema(
        request=CategoryReorderSerializer,
        responses={200: CategorySerializer(many=True), 400: CURATION_ERROR},
    )
    @action(detail=False, methods=["post"])
    def reorder(self, request):
        data = self.validated(CategoryReorderSerializer)
        profile = self.profile_for_create(data.get("profile"))
        services.category_reorder(ordered_ids=data["ids"], profile=profile)
        categories = Category.objects.filter(profile=profile)
        return Response(CategorySerializer(categories, many=True).data)

    @extend_schema(
        request=PresetLoadSerializer,
        responses={200: PresetLoadResultSerializer, 400: CURATION_ERROR, 403: CURATION_ERROR,
                   404: CURATION_ERROR},
    )  # fmt: skip
    @action(detail=False, methods=["post"], url_path="load-preset")
    def load_preset(self, request):
        """Add the eight PALMS categories missing from a profile (as the category page's
        button does). Idempotent: categories already there, by name, are left unchanged, so
        a second call adds nothing and says so."""
        data = self.validated(PresetLoadSerializer)
        profile = self._preset_profile(data.get("profile"))
        created, existing = services.load_palms_preset(user=request.user, profile=profile)
        body = {"profile": profile.pk, "created": created, "already_there": existing}
        return Response(PresetLoadResultSerializer(body).data)

    def _preset_profile(self, profile_id: int | None) -> Profile:
        if profile_id is None:
            return self.profile_for_create(None)
        profile = get_object_or_404(Profile, pk=profile_id)
        check_object_profile(
            self.request.user, profile.pk, access.WRITE_ROLES,
            "Only curators of this profile may load the preset into it.",
        )  # fmt: skip
        return profile


# --- datasets --------------------------------------------------------------------------


@extend_schema_view(
    create=extend_schema(responses={201: DatasetSerializer, 400: CURATION_ERROR}),
    update=extend_schema(responses={200: DatasetSerializer, 400: CURATION_ERROR}),
    partial_update=extend_schema(responses={200: DatasetSerializer, 400: CURATION_ERROR}),
)
class DatasetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, CurationViewSet):
    """Datasets are never deleted through the API: snapshots and fine-tunes refer to them."""

    serializer_class = DatasetSerializer
    queryset = Dataset.objects.select_related("created_by")

    def _check_self_approval(self, data: dict, dataset: Dataset | None) -> None:
        if "allow_self_approval" not in data or access.is_admin(self.request.user):
            return
        current = dataset.allow_self_approval if dataset else False
        if data["allow_self_approval"] != current:
            raise PermissionDenied("Only admins may change allow_self_approval.")

    def create(self, request, *args, **kwargs):
        data = self.validated(DatasetSerializer)
        self._check_self_approval(data, None)
        profile = self.profile_for_create(data.pop("profile", None))
        dataset = services.dataset_create(user=request.user, profile=profile, **data)
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        dataset = self.get_object()
        data = self.validated(
            DatasetSerializer, instance=dataset, partial=kwargs.get("partial", False)
        )
        self._check_self_approval(data, dataset)
        if data.pop("profile", dataset.profile).pk != dataset.profile_id:
            raise services.CurationError("A dataset never changes profile: its snapshots keep it.")
        dataset = services.dataset_update(dataset=dataset, **data)
        return Response(DatasetSerializer(dataset).data)

    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    @extend_schema(
        request={"multipart/form-data": ImportSerializer},
        responses={
            200: OpenApiResponse(
                ImportPreviewSerializer,
                description="dry_run: what the file would import, and every problem.",
            ),
            201: ImportResultSerializer,
            400: OpenApiResponse(
                ImportRejectedSerializer,
                description="The file was rejected; each problem has its line number. "
                "Nothing was imported.",
            ),
        },
    )
    @action(
        detail=True, methods=["post"], url_path="import",
        parser_classes=[MultiPartParser, FormParser],
    )
    def import_samples(self, request, pk=None):
        """Import samples from a JSONL or CSV file; all of it, or nothing. With ``dry_run``,
        only check it and say what it would import (rows, per category, problems)."""
        dataset = self.get_object()
        data = self.validated(ImportSerializer)
        if data["status"] == Sample.Status.APPROVED and not access.is_admin(request.user):
            raise PermissionDenied("Only admins may import samples as approved.")
        upload = data["file"]
        # One byte over the cap is enough for the importer to refuse it.
        content = upload.read(MAX_IMPORT_BYTES + 1)
        options = {"status": data["status"], "default_category": data["default_category"]}
        if data["dry_run"]:
            preview = samples_import_preview(
                dataset=dataset, data=content, filename=upload.name, **options
            )
            return Response(ImportPreviewSerializer({
                "dry_run": True,
                "count": preview.count,
                "per_category": [
                    {"category": name, "count": n} for name, n in preview.per_category
                ],
                "would_import": preview.ok,
                "errors": [{"line": e.line, "message": e.message} for e in preview.errors],
            }).data)
        try:
            samples = samples_import(
                dataset=dataset, data=content, filename=upload.name, user=request.user,
                **options,
            )
        except ImportRejected as rejected:
            body = {
                "detail": str(rejected),
                "errors": [{"line": e.line, "message": e.message} for e in rejected.errors],
            }
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        return Response(
            {"count": len(samples), "sample_ids": [sample.pk for sample in samples]},
            status=status.HTTP_201_CREATED,
        )
