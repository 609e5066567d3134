"""REST API for value profiles and memberships: everyone lists the profiles they belong
to (admins: all); admins create and edit profiles and manage their members."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated
from rest_framework.response import Response

from palmsweb import profile_services
from palmsweb.lib.drf import RejectUnknownFieldsMixin, TokenAuthentication
from palmsweb.models import Membership, Profile
from palmsweb.profiles import member_profile_ids
from palmsweb.roles import PROFILE_ROLES, is_site_admin, memberships

PROFILE_ERROR = OpenApiResponse(
    inline_serializer("ProfileErrorResponse", {"detail": serializers.CharField()}),
    description="A profile rule refused the change (the message says which).",
)


class ProfileSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    my_roles = serializers.SerializerMethodField()

    class Meta:
        model = Profile
        fields = ["id", "name", "slug", "description", "audience", "my_roles", "created_at"]
        read_only_fields = ["slug", "created_at"]
        extra_kwargs = {"name": {"validators": []}}

    def get_my_roles(self, profile: Profile) -> list[str]:
        request = self.context.get("request")
        held = memberships(request.user) if request else {}
        return sorted(held.get(profile.pk, ()))


class MembershipSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", max_length=150)
    role = serializers.ChoiceField(choices=[role.value for role in PROFILE_ROLES])

    class Meta:
        model = Membership
        fields = ["id", "username", "role", "created_at"]
        read_only_fields = ["created_at"]


class ProfileAccess(BasePermission):
    message = "Only admins manage value profiles and their members."

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS and view.action in {"list", "retrieve"}:
            return True
        return is_site_admin(request.user)


class ProfileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Value profiles. Curator, rater and researcher are roles held per profile."""

    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated, ProfileAccess]
    serializer_class = ProfileSerializer
    queryset = Profile.objects.all()

    def get_queryset(self):
        return super().get_queryset().filter(pk__in=member_profile_ids(self.request.user))

    def handle_exception(self, exc):
        if isinstance(exc, profile_services.ProfileError):
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return super().handle_exception(exc)

    def _validated(self, serializer_class, **kwargs) -> dict:
        serializer = serializer_class(
            data=self.request.data, context=self.get_serializer_context(), **kwargs
        )
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    @extend_schema(responses={201: ProfileSerializer, 400: PROFILE_ERROR})
    def create(self, request):
        data = self._validated(ProfileSerializer)
        profile = profile_services.profile_create(
            name=data["name"], description=data.get("description", ""),
            audience=data.get("audience", ""),
        )  # fmt: skip
        body = ProfileSerializer(profile, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: ProfileSerializer, 400: PROFILE_ERROR})
    def partial_update(self, request, pk=None):
        profile = self.get_object()
        data = self._validated(ProfileSerializer, partial=True)
        profile = profile_services.profile_update(
            profile=profile,
            name=data.get("name", profile.name),
            description=data.get("description", profile.description),
            audience=data.get("audience", profile.audience),
        )
        return Response(ProfileSerializer(profile, context=self.get_serializer_context()).data)

    @extend_schema(
        request=MembershipSerializer,
        responses={200: MembershipSerializer(many=True), 201: MembershipSerializer,
                   400: PROFILE_ERROR},
    )  # fmt: skip
    @action(detail=True, methods=["get", "post"])
    def members(self, request, pk=None):
        """GET: the profile's members, one row per role held (paginated). POST
        ``{username, role}``:
        give a user a role here (idempotent)."""
        profile = self.get_object()
        if request.method == "GET":  # paginated like every list of the API
            rows = profile.memberships.select_related("user").order_by("user__username", "role")
            page = self.paginate_queryset(rows)
            return self.get_paginated_response(MembershipSerializer(page, many=True).data)
        data = self._validated(MembershipSerializer)
        membership = profile_services.membership_add(
            profile=profile, username=data["user"]["username"], role=data["role"]
        )
        return Response(MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["delete"], url_path=r"members/(?P<membership_pk>[0-9]{1,18})")
    def remove_member(self, request, pk=None, membership_pk=None):
        """Take one role away from one user in this profile."""
        profile = self.get_object()
        membership = profile.memberships.filter(pk=int(membership_pk)).first()
        if membership is None:
            raise NotFound("No such membership in this profile.")
        profile_services.membership_remove(membership=membership)
        return Response(status=status.HTTP_204_NO_CONTENT)
