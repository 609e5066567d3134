"""REST API for gap tickets: filed by curators and researchers, resolved by curators,
alone or in one step with a new snapshot."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response

from curation import access, gaps
from curation.api_base import CURATION_ERROR, CurationViewSet
from curation.models import GapTicket
from curation.serializers import (
    GapTicketCreateSerializer,
    GapTicketResolveSnapshotSerializer,
    GapTicketSerializer,
    SnapshotSerializer,
)
from palmsweb.lib.drf import int_param

# --- gap tickets -----------------------------------------------------------------------


class GapTicketAccess(BasePermission):
    """Reads and new tickets: curators, researchers (who file them from the study report)
    and admins. Resolving: curators and admins (the policy in :mod:`curation.access`)."""

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS or view.action == "create":
            self.message = "Gap tickets are open to curators, researchers and admins."
            if view.action == "create":
                return access.can_file_gap_ticket(request.user)
            return access.can_read(request.user)
        self.message = "Only curators and admins may resolve gap tickets."
        return access.can_resolve_gap_ticket(request.user)

    def has_object_permission(self, request, view, obj) -> bool:
        if request.method in SAFE_METHODS:
            return access.can_read(request.user, obj.profile_id)
        self.message = "Only curators of this profile may resolve its gap tickets."
        return access.can_write(request.user, obj.profile_id)


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
    profile_path = "category__profile"
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
        self.check_write_profile(data["dataset"].profile_id)
        snapshot = gaps.tickets_resolve_and_snapshot(user=request.user, **data)
        return Response(SnapshotSerializer(snapshot).data, status=status.HTTP_201_CREATED)
