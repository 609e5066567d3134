"""REST API for curation: categories, datasets, samples, revisions, snapshots, imports.

Every mutation goes through ``curation.services`` (or ``curation.importing``); domain
errors become status codes here: a stale edit is 409 with both versions, any other
curation rule is 400 with the service's message.

Access: curators and admins read and write; researchers read (and file gap tickets);
raters and users without a role get 403; anonymous requests get 401.
"""

from __future__ import annotations

from django.db.models import Q
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
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import (
    PermissionDenied,
)
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle

from curation import gaps, review, services
from curation.importing import (
    MAX_IMPORT_BYTES,
    ImportRejected,
    samples_import,
    samples_import_preview,
)
from curation.models import (
    Category,
    Dataset,
    GapTicket,
    Sample,
    SampleRevision,
    Snapshot,
    sha256_hex,
)
from curation.selectors import review_changes
from curation.serializers import (
    ApprovalCheckSerializer,
    BulkActionSerializer,
    BulkResultSerializer,
    CategoryReorderSerializer,
    CategorySerializer,
    CommentInputSerializer,
    CommentSerializer,
    DatasetSerializer,
    GapTicketCreateSerializer,
    GapTicketResolveSnapshotSerializer,
    GapTicketSerializer,
    ImportPreviewSerializer,
    ImportRejectedSerializer,
    ImportResultSerializer,
    ImportSerializer,
    RestoreSerializer,
    RevisionSerializer,
    SampleActionSerializer,
    SampleApproveSerializer,
    SampleCreateSerializer,
    SampleSerializer,
    SampleUpdateSerializer,
    SnapshotCreateSerializer,
    SnapshotDetailSerializer,
    SnapshotSerializer,
    StaleEditConflictSerializer,
    StaleEditSerializer,
)
from palmsweb.lib.drf import TokenAuthentication, int_param
from palmsweb.roles import Role, has_role


class CurationAccess(BasePermission):
    """Reads: curators, researchers, admins. Writes: curators and admins."""

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            self.message = "Curation data is open to curators, researchers and admins."
            return has_role(request.user, Role.CURATOR, Role.RESEARCHER)
        self.message = "Only curators and admins may change curation data."
        return has_role(request.user, Role.CURATOR)


class CurationViewSet(viewsets.GenericViewSet):
    # Token first, so an anonymous request gets 401 with "WWW-Authenticate: Token".
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [CurationAccess]
    throttle_classes = [UserRateThrottle]

    def handle_exception(self, exc):
        if isinstance(exc, services.StaleEditError):
            body = {
                "detail": str(exc),
                "current": SampleSerializer(exc.current).data,
                "yours": StaleEditSerializer(exc.stale_edit).data,
                "stale_edit_id": exc.stale_edit.pk,
            }
            return Response(body, status=status.HTTP_409_CONFLICT)
        if isinstance(exc, services.CurationError):
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return super().handle_exception(exc)

    def validated(self, serializer_class, data=None, **kwargs) -> dict:
        serializer = serializer_class(
            data=self.request.data if data is None else data,
            context=self.get_serializer_context(),
            **kwargs,
        )
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


CURATION_ERROR = OpenApiResponse(
    inline_serializer("CurationErrorResponse", {"detail": serializers.CharField()}),
    description="Invalid input, or a curation rule refused the action (message says why).",
)


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
        if self.action == "list" and self.request.query_params.get("include_archived") not in {
            "1", "true", "True", "yes",
        }:
            queryset = queryset.active()
        return queryset

    def create(self, request, *args, **kwargs):
        data = self.validated(CategorySerializer)
        category = services.category_create(**data)
        return Response(CategorySerializer(category).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        category = self.get_object()
        partial = kwargs.get("partial", False)
        data = self.validated(CategorySerializer, instance=category, partial=partial)
        fields = {
            name: data.get(name, getattr(category, name))
            for name in ("name", "position", "guidance", "target_count")
        }
        category = services.category_update(category=category, **fields)
        return Response(CategorySerializer(category).data)

    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

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
        services.category_reorder(ordered_ids=data["ids"])
        return Response(CategorySerializer(Category.objects.all(), many=True).data)


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
        if "allow_self_approval" not in data or has_role(self.request.user, Role.ADMIN):
            return
        current = dataset.allow_self_approval if dataset else False
        if data["allow_self_approval"] != current:
            raise PermissionDenied("Only admins may change allow_self_approval.")

    def create(self, request, *args, **kwargs):
        data = self.validated(DatasetSerializer)
        self._check_self_approval(data, None)
        dataset = services.dataset_create(user=request.user, **data)
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        dataset = self.get_object()
        data = self.validated(
            DatasetSerializer, instance=dataset, partial=kwargs.get("partial", False)
        )
        self._check_self_approval(data, dataset)
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
        if data["status"] == Sample.Status.APPROVED and not has_role(request.user, Role.ADMIN):
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


# --- samples ---------------------------------------------------------------------------


SAMPLE_FILTERS = [
    OpenApiParameter("dataset", OpenApiTypes.INT, description="Dataset id."),
    OpenApiParameter("category", OpenApiTypes.STR, description="Category id, or 'none'."),
    OpenApiParameter("status", OpenApiTypes.STR, enum=Sample.Status.values),
    OpenApiParameter("author", OpenApiTypes.STR, description="Author id or username."),
    OpenApiParameter("search", OpenApiTypes.STR, description="Text in question or answer."),
]
SAMPLE_CHANGED = {200: SampleSerializer, 400: CURATION_ERROR}
STALE = OpenApiResponse(
    StaleEditConflictSerializer,
    description="Someone saved first. Both versions are returned; your edit is kept.",
)


@extend_schema_view(
    list=extend_schema(parameters=SAMPLE_FILTERS),
    create=extend_schema(
        request=SampleCreateSerializer, responses={201: SampleSerializer, 400: CURATION_ERROR}
    ),
    update=extend_schema(
        request=SampleUpdateSerializer,
        responses={200: SampleSerializer, 400: CURATION_ERROR, 409: STALE},
    ),
    partial_update=extend_schema(
        request=SampleUpdateSerializer,
        responses={200: SampleSerializer, 400: CURATION_ERROR, 409: STALE},
    ),
)
class SampleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, CurationViewSet):
    """Samples are archived, never deleted; edits need the version they started from."""

    serializer_class = SampleSerializer
    queryset = Sample.objects.select_related("dataset", "category", "author", "updated_by")

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action != "list":
            return queryset
        params = self.request.query_params
        if (dataset := int_param(params, "dataset")) is not None:
            queryset = queryset.filter(dataset_id=dataset)
        category = params.get("category")
        if category == "none":
            queryset = queryset.filter(category__isnull=True)
        elif (category_id := int_param(params, "category")) is not None:
            queryset = queryset.filter(category_id=category_id)
        if status_ := params.get("status"):
            if status_ not in Sample.Status.values:
                raise serializers.ValidationError(
                    {"status": [f"Expected one of: {', '.join(Sample.Status.values)}."]}
                )
            queryset = queryset.filter(status=status_)
        if author := params.get("author"):
            match = Q(author__username=author)
            if author.isdigit():
                match |= Q(author_id=int(author))
            queryset = queryset.filter(match)
        if search := params.get("search", "").strip():
            queryset = queryset.search(search)
        return queryset

    def create(self, request, *args, **kwargs):
        data = self.validated(SampleCreateSerializer)
        sample = services.sample_create(user=request.user, **data)
        return Response(SampleSerializer(sample).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        sample = self.get_object()
        data = self.validated(
            SampleUpdateSerializer, instance=sample, partial=kwargs.get("partial", False)
        )
        saved = services.sample_update(
            sample_id=sample.pk,
            base_version=data["version"],
            question=data.get("question", sample.question),
            answer=data.get("answer", sample.answer),
            category=data.get("category", sample.category),
            user=request.user,
        )
        return Response(SampleSerializer(saved).data)

    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    def _transition(self, service, **extra):
        sample = self.get_object()
        data = self.validated(SampleActionSerializer)
        sample = service(sample=sample, user=self.request.user, body=data["body"], **extra)
        return Response(SampleSerializer(sample).data)

    @extend_schema(request=SampleActionSerializer, responses=SAMPLE_CHANGED)
    @action(detail=True, methods=["post"])
    def submit(self, request, pk=None):
        """Draft → in review."""
        return self._transition(services.sample_submit)

    @extend_schema(request=SampleActionSerializer, responses=SAMPLE_CHANGED)
    @action(detail=True, methods=["post"], url_path="request-changes")
    def request_changes(self, request, pk=None):
        """In review → draft; the comment saying what to change is required."""
        return self._transition(services.sample_request_changes)

    @extend_schema(request=SampleApproveSerializer, responses=SAMPLE_CHANGED)
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        """In review → approved, by a curator who neither wrote it nor saved a revision
        since it was submitted, within the word limits, with no unmerged edit waiting.
        Send ``version`` (the one you reviewed) to refuse approving a later change unseen."""
        sample = self.get_object()
        data = self.validated(SampleApproveSerializer)
        sample = services.sample_approve(
            sample=sample, user=request.user, body=data["body"], version=data["version"]
        )
        return Response(SampleSerializer(sample).data)

    @extend_schema(responses=ApprovalCheckSerializer)
    @action(detail=True, methods=["get"], url_path="approval-check")
    def approval_check(self, request, pk=None):
        """What approval would refuse now: the check shown beside *Submit for review*, and
        why you in particular may not approve."""
        sample = self.get_object()
        content = services.content_problems(sample)
        reviewer = services.reviewer_problems(sample, request.user)
        in_review = sample.status == Sample.Status.IN_REVIEW
        changes = review_changes(sample) if in_review else None
        revisers = sorted({r.author.username for r in changes.revisions if r.author}) if (
            changes
        ) else []
        body = {
            "status": sample.status,
            "version": sample.version,
            "content_problems": content,
            "reviewer_problems": reviewer,
            "can_approve": in_review and not content and not reviewer
            and has_role(request.user, Role.CURATOR),
            "review_base_version": changes.base_version if changes else None,
            "changed_since_submitted": bool(changes and changes.changed),
            "revised_since_submitted_by": revisers,
        }
        return Response(ApprovalCheckSerializer(body).data)

    @extend_schema(request=SampleActionSerializer, responses=SAMPLE_CHANGED)
    @action(detail=True, methods=["post"])
    def archive(self, request, pk=None):
        return self._transition(services.sample_archive)

    @extend_schema(request=SampleActionSerializer, responses=SAMPLE_CHANGED)
    @action(detail=True, methods=["post"])
    def reopen(self, request, pk=None):
        """Archived → draft."""
        return self._transition(services.sample_reopen)

    @extend_schema(
        request=BulkActionSerializer,
        responses={200: BulkResultSerializer, 400: CURATION_ERROR},
    )
    @action(detail=False, methods=["post"])
    def bulk(self, request):
        """Submit, approve or archive many samples. Each goes through the same rules as
        its single action, in its own transaction: ``done`` lists the samples changed,
        ``refused`` each other one with the reason."""
        data = self.validated(BulkActionSerializer)
        result = review.samples_bulk_action(
            action=data["action"],
            items=[(item["id"], item["version"]) for item in data["samples"]],
            user=request.user,
            body=data["body"],
        )
        body = {
            "done": [sample.pk for sample in result.done],
            "refused": [{"id": pk, "detail": why} for pk, why in result.refused],
        }
        return Response(BulkResultSerializer(body).data)

    @extend_schema(
        parameters=[OpenApiParameter("dataset", OpenApiTypes.INT, description="Dataset id.")],
        responses=SampleSerializer(many=True),
    )
    @action(detail=False, methods=["get"], url_path="review-queue")
    def review_queue(self, request):
        """Samples waiting for your review: in review, neither written nor revised by you
        since submission; oldest first. Curators and admins only."""
        if not has_role(request.user, Role.CURATOR):
            raise PermissionDenied("Only curators review samples.")
        dataset = None
        if (dataset_id := int_param(request.query_params, "dataset")) is not None:
            dataset = Dataset.objects.filter(pk=dataset_id).first()
            if dataset is None:
                raise serializers.ValidationError({"dataset": ["No such dataset."]})
        page = self.paginate_queryset(review.review_queue(request.user, dataset=dataset))
        return self.get_paginated_response(SampleSerializer(page, many=True).data)

    @extend_schema(
        request=CommentInputSerializer, responses={201: CommentSerializer, 400: CURATION_ERROR}
    )
    @action(detail=True, methods=["post"])
    def comment(self, request, pk=None):
        sample = self.get_object()
        data = self.validated(CommentInputSerializer)
        comment = services.comment_add(sample=sample, user=request.user, body=data["body"])
        return Response(CommentSerializer(comment).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=CommentSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)
    def comments(self, request, pk=None):
        sample = self.get_object()
        comments = sample.comments.select_related("author")
        return Response(CommentSerializer(comments, many=True).data)

    @extend_schema(responses=RevisionSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)
    def revisions(self, request, pk=None):
        """Every saved version, newest first."""
        sample = self.get_object()
        revisions = sample.revisions.select_related("author")
        return Response(RevisionSerializer(revisions, many=True).data)

    @extend_schema(
        request=RestoreSerializer,
        responses={200: SampleSerializer, 400: CURATION_ERROR, 409: STALE},
    )
    @action(detail=True, methods=["post"])
    def restore(self, request, pk=None):
        """Bring back an old revision's content as a new revision."""
        sample = self.get_object()
        data = self.validated(RestoreSerializer)
        if not SampleRevision.objects.filter(sample=sample, number=data["revision"]).exists():
            raise serializers.ValidationError({"revision": ["No such revision."]})
        saved = services.sample_restore(
            sample_id=sample.pk,
            revision_number=data["revision"],
            base_version=data["version"],
            user=request.user,
        )
        return Response(SampleSerializer(saved).data)


# --- snapshots -------------------------------------------------------------------------


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
        try:
            snapshot = services.snapshot_create(user=request.user, **data)
        except services.UnchangedSnapshotError as unchanged:
            existing = SnapshotSerializer(unchanged.snapshot).data
            body = {"detail": str(unchanged), "snapshot": existing}
            return Response(body, status=status.HTTP_409_CONFLICT)
        return Response(SnapshotSerializer(snapshot).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[OpenApiParameter(
            "fmt", OpenApiTypes.STR, OpenApiParameter.PATH, enum=["jsonl", "csv"]
        )],
        responses={
            (200, "application/jsonl"): OpenApiTypes.STR,
            (200, "text/csv"): OpenApiTypes.STR,
        },
    )
    @action(detail=True, methods=["get"], url_path=r"download/(?P<fmt>jsonl|csv)")
    def download(self, request, pk=None, fmt="jsonl"):
        """The snapshot as OpenAI chat-format JSONL or CSV.

        ``X-Content-SHA256`` is the sha256 of the body (what ``sha256sum`` of the saved file
        prints); ``X-Snapshot-SHA256`` is the snapshot's content hash (over its canonical
        JSON), as shown in listings. ``X-Snapshot-Hash`` is the older name of the latter.
        """
        snapshot = self.get_object()
        if fmt == "csv":
            body, content_type = services.snapshot_csv(snapshot), "text/csv; charset=utf-8"
        else:
            body, content_type = services.snapshot_jsonl(snapshot), "application/jsonl"
        response = HttpResponse(body.encode("utf-8"), content_type=content_type)
        filename = f"{slugify(snapshot.dataset.name) or 'dataset'}-{snapshot.short_hash}.{fmt}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["X-Content-SHA256"] = sha256_hex(body)
        response["X-Snapshot-SHA256"] = snapshot.content_hash
        response["X-Snapshot-Hash"] = snapshot.content_hash
        return response


# --- gap tickets -----------------------------------------------------------------------


class GapTicketAccess(BasePermission):
    """Reads and new tickets: curators, researchers (who file them from the study report)
    and admins. Resolving: curators and admins."""

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS or view.action == "create":
            self.message = "Gap tickets are open to curators, researchers and admins."
            return has_role(request.user, Role.CURATOR, Role.RESEARCHER)
        self.message = "Only curators and admins may resolve gap tickets."
        return has_role(request.user, Role.CURATOR)


@extend_schema_view(
    list=extend_schema(parameters=[
        OpenApiParameter("category", OpenApiTypes.INT, description="Category id."),
        OpenApiParameter("status", OpenApiTypes.STR, enum=GapTicket.Status.values),
    ]),
    create=extend_schema(
        request=GapTicketCreateSerializer,
        responses={201: GapTicketSerializer, 400: CURATION_ERROR},
    ),
)
class GapTicketViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, CurationViewSet
):
    """Gaps found in evaluation, filed on their category; never deleted."""

    serializer_class = GapTicketSerializer
    permission_classes = [GapTicketAccess]
    queryset = GapTicket.objects.select_related(
        "category", "created_by", "resolved_by"
    ).prefetch_related("samples")

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action != "list":
            return queryset
        params = self.request.query_params
        if (category := int_param(params, "category")) is not None:
            queryset = queryset.filter(category_id=category)
        if status_ := params.get("status"):
            if status_ not in GapTicket.Status.values:
                raise serializers.ValidationError(
                    {"status": [f"Expected one of: {', '.join(GapTicket.Status.values)}."]}
                )
            queryset = queryset.filter(status=status_)
        return queryset

    def create(self, request, *args, **kwargs):
        data = self.validated(GapTicketCreateSerializer)
        ticket = gaps.gap_ticket_create(user=request.user, **data)
        return Response(GapTicketSerializer(ticket).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: GapTicketSerializer, 400: CURATION_ERROR})
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk=None):
        """Resolve the ticket without a snapshot (to resolve with one, use
        ``POST /api/gap-tickets/resolve-snapshot/``)."""
        ticket = gaps.gap_ticket_resolve(ticket=self.get_object(), user=request.user)
        return Response(GapTicketSerializer(ticket).data)

    @extend_schema(
        request=GapTicketResolveSnapshotSerializer,
        responses={201: SnapshotSerializer, 400: CURATION_ERROR},
    )
    @action(detail=False, methods=["post"], url_path="resolve-snapshot")
    def resolve_snapshot(self, request):
        """Resolve the given open tickets and take a new snapshot of the dataset, in one
        transaction; each ticket needs an approved sample in that dataset."""
        data = self.validated(GapTicketResolveSnapshotSerializer)
        snapshot = gaps.tickets_resolve_and_snapshot(user=request.user, **data)
        return Response(SnapshotSerializer(snapshot).data, status=status.HTTP_201_CREATED)
