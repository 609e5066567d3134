"""REST API for snapshots: immutable; created, listed, read and downloaded."""

from __future__ import annotations

from django.http import HttpResponse
from django.utils.text import slugify
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from curation import services
from curation.api_base import CURATION_ERROR, CurationViewSet
from curation.models import Snapshot, sha256_hex
from curation.serializers import (
    SnapshotCreateSerializer,
    SnapshotDetailSerializer,
    SnapshotSerializer,
)
from palmsweb.lib.drf import int_param

# --- snapshots -------------------------------------------------------------------------

# format: the body and its content type
DOWNLOADS = {
    "jsonl": lambda snapshot: (services.snapshot_jsonl(snapshot), "application/jsonl"),
    "csv": lambda snapshot: (services.snapshot_csv(snapshot), "text/csv; charset=utf-8"),
    # The canonical content itself, byte for byte: its sha256 is the snapshot hash.
    "json": lambda snapshot: (snapshot.content, "application/json; charset=utf-8"),
}


@extend_schema_view(
    list=extend_schema(parameters=[OpenApiParameter("dataset", OpenApiTypes.INT)]),
    retrieve=extend_schema(responses=SnapshotDetailSerializer),
    create=extend_schema(
        request=SnapshotCreateSerializer,
        responses={
            201: SnapshotSerializer,
            400: CURATION_ERROR,
            409: OpenApiResponse(
                inline_serializer(
                    "SnapshotUnchangedResponse",
                    {"detail": serializers.CharField(), "snapshot": SnapshotSerializer()},
                ),
                description="Nothing changed since the dataset's latest snapshot, which is "
                "returned; no snapshot was taken.",
            ),
        },
    ),
)
class SnapshotViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, CurationViewSet):
    """Snapshots are immutable: created, listed, read and downloaded; never changed."""

    queryset = Snapshot.objects.select_related("dataset", "created_by")
    profile_path = "dataset__profile"

    def get_serializer_class(self):
        return SnapshotDetailSerializer if self.action == "retrieve" else SnapshotSerializer

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action == "list":
            # The JSON content can be large; a listing never needs it.
            queryset = queryset.defer("content")
            if (dataset := int_param(self.request.query_params, "dataset")) is not None:
                queryset = queryset.filter(dataset_id=dataset)
        return queryset

    def create(self, request, *args, **kwargs):
        data = self.validated(SnapshotCreateSerializer)
        self.check_write_profile(data["dataset"].profile_id)
        try:
            snapshot = services.snapshot_create(user=request.user, **data)
        except services.UnchangedSnapshotError as unchanged:
            existing = SnapshotSerializer(unchanged.snapshot).data
            body = {"detail": str(unchanged), "snapshot": existing}
            return Response(body, status=status.HTTP_409_CONFLICT)
        return Response(SnapshotSerializer(snapshot).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[OpenApiParameter(
            "fmt", OpenApiTypes.STR, OpenApiParameter.PATH, enum=["jsonl", "csv", "json"]
        )],
        responses={
            (200, "application/jsonl"): OpenApiTypes.STR,
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/json"): OpenApiTypes.OBJECT,
        },
    )
    @action(detail=True, methods=["get"], url_path=r"download/(?P<fmt>jsonl|csv|json)")
    def download(self, request, pk=None, fmt="jsonl"):
        """The snapshot as OpenAI chat-format JSONL, CSV, or its canonical JSON (``json``:
        the samples, system message and position versions the hash is computed over).

        ``X-Content-SHA256`` is the sha256 of the body (what ``sha256sum`` of the saved file
        prints); ``X-Snapshot-SHA256`` is the snapshot's content hash (over its canonical
        JSON), as shown in listings. For ``json`` the two are equal: ``sha256sum`` of the
        saved file re-checks the snapshot. ``X-Snapshot-Hash`` is the older name of the latter.
        """
        snapshot = self.get_object()
        body, content_type = DOWNLOADS[fmt](snapshot)
        response = HttpResponse(body.encode("utf-8"), content_type=content_type)
        filename = f"{slugify(snapshot.dataset.name) or 'dataset'}-{snapshot.short_hash}.{fmt}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["X-Content-SHA256"] = sha256_hex(body)
        response["X-Snapshot-SHA256"] = snapshot.content_hash
        response["X-Snapshot-Hash"] = snapshot.content_hash
        return response
