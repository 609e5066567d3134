"""REST API for samples: listing with filters, the editor (edits need the version they
started from; a stale one is 409 with both versions), review transitions, bulk actions,
the review queue, comments, revisions and restore."""

from __future__ import annotations

from django.db.models import Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from curation import access, review, services
from curation.api_base import CURATION_ERROR, CurationViewSet
from curation.models import Dataset, Sample, SampleRevision
from curation.selectors import review_changes
from curation.serializers import (
    ApprovalCheckSerializer,
    BulkActionSerializer,
    BulkResultSerializer,
    CommentInputSerializer,
    CommentSerializer,
    RestoreSerializer,
    RevisionSerializer,
    SampleActionSerializer,
    SampleApproveSerializer,
    SampleCreateSerializer,
    SampleSerializer,
    SampleUpdateSerializer,
    StaleEditConflictSerializer,
)
from palmsweb.lib.drf import int_param

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
    profile_path = "dataset__profile"

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
        self.check_write_profile(data["dataset"].profile_id)
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
            and access.can_write(request.user),
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
        if not access.can_write(request.user):
            raise PermissionDenied("Only curators review samples.")
        dataset = None
        if (dataset_id := int_param(request.query_params, "dataset")) is not None:
            dataset = self.readable(Dataset.objects, "profile").filter(pk=dataset_id).first()
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
