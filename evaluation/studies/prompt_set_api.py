"""REST API of prompt sets: list, read, create one with its prompts, and copy one (within
its value profile, or into another profile the user curates in)."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response

from curation.models import Category
from evaluation import access
from evaluation.drf import ERROR, EvaluationViewSet
from evaluation.errors import EvaluationError
from evaluation.models import PromptSet
from evaluation.studies import prompt_sets
from evaluation.studies.serializers import (
    PromptSetCopySerializer,
    PromptSetCreateSerializer,
    PromptSetSerializer,
)
from palmsweb.profiles import in_profiles, profile_for_create


def _category_named(profile, name: str) -> Category:
    """The active category of that name in ``profile``; names are unique per profile only."""
    category = Category.objects.active().filter(profile=profile, name=name).first()
    if category is None:
        raise EvaluationError(f"No active category named {name!r} in this value profile.")
    return category


class PromptSetAccess(BasePermission):
    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return access.can_read_prompt_set(request.user)
        return access.can_edit_prompt_set(request.user)

    def has_object_permission(self, request, view, obj) -> bool:
        # A copy reads its source; where it may go is checked against the target profile.
        if request.method in SAFE_METHODS or view.action == "copy":
            return access.can_read_prompt_set(request.user, obj)
        return access.can_edit_prompt_set(request.user, obj)


@extend_schema_view(
    create=extend_schema(
        request=PromptSetCreateSerializer, responses={201: PromptSetSerializer, 400: ERROR}
    ),
    copy=extend_schema(
        request=PromptSetCopySerializer, responses={201: PromptSetSerializer, 400: ERROR}
    ),
)
class PromptSetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, EvaluationViewSet):
    """Evaluation prompt sets. Create one with its prompts in one request; change it in the
    browser (a locked set is copied on edit)."""

    permission_classes = [PromptSetAccess]
    serializer_class = PromptSetSerializer
    queryset = PromptSet.objects.prefetch_related("prompts__category")

    def get_queryset(self):
        """The prompt sets of the profiles the user reads in (``?profile=<id>``: one)."""
        return in_profiles(self, super().get_queryset(), access.PROMPT_READ_ROLES, "profile")

    def _created(self, prompt_set: PromptSet) -> Response:
        prompt_set = self.get_queryset().get(pk=prompt_set.pk)
        return Response(PromptSetSerializer(prompt_set).data, status=status.HTTP_201_CREATED)

    def create(self, request, *args, **kwargs):
        data = self.validated(PromptSetCreateSerializer).validated_data
        profile = profile_for_create(request.user, data.get("profile"), access.PROMPT_WRITE_ROLES)
        with transaction.atomic():
            prompt_set = prompt_sets.prompt_set_create(
                name=data["name"], description=data["description"], user=request.user,
                profile=profile,
            )  # fmt: skip
            for prompt in data["prompts"]:
                prompt_sets.prompt_add(
                    prompt_set=prompt_set, user=request.user, text=prompt["text"],
                    category=_category_named(profile, prompt["category"]),
                )  # fmt: skip
        return self._created(prompt_set)

    @action(detail=True, methods=["post"])
    def copy(self, request, pk=None):
        """An unlocked copy of the set with all its prompts: in its own profile, or in
        ``profile``, where each prompt takes that profile's category of the same name. A
        category with no counterpart there is a 400 naming it, and nothing is created."""
        source = self.get_object()
        data = self.validated(PromptSetCopySerializer).validated_data
        target = data.get("profile") or source.profile
        if not access.can_edit_prompt_set(request.user, profile=target.pk):
            raise PermissionDenied("Copying a prompt set is for the target profile's curators.")
        copy = prompt_sets.prompt_set_copy(
            prompt_set=source, user=request.user, name=data["name"], profile=target
        )
        return self._created(copy)
