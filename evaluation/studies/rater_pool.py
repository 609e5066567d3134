"""A study's rater pool: who may be in it (the raters of the study's value profile who
cannot see which model wrote an output) and the check a pool passes when a study is
created or edited."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db.models import Q

from evaluation.access import can_see_generations, has_rater_role
from evaluation.errors import EvaluationError
from palmsweb.roles import Role


def clean_raters(raters: Iterable, profile_id: int) -> list:
    """The pool, checked: raters of the study's profile only (a rater of another profile
    was never briefed on these positions), and nobody who can see generations."""
    raters = list(raters)
    not_raters = [u.get_username() for u in raters if not has_rater_role(u, profile_id)]
    if not_raters:
        raise EvaluationError(
            "Only raters of this study's value profile can be in the pool: "
            f"{', '.join(not_raters)}."
        )
    sighted = [u.get_username() for u in raters if can_see_generations(u)]
    if sighted:
        raise EvaluationError(
            f"Admins can see which model wrote each output, so they cannot rate: "
            f"{', '.join(sighted)}. Take them out of the pool (or out of the admins)."
        )
    return raters


def rater_pool_candidates(profile_id: int | None = None):
    """Users who may join a rater pool: the raters of the study's profile (of any profile
    when None) who are not admins (see :func:`can_see_generations`)."""
    admins = get_user_model().objects.filter(
        Q(is_staff=True) | Q(is_superuser=True) | Q(groups__name=Role.ADMIN.value)
    )
    raters = Q(memberships__role=Role.RATER.value)
    if profile_id is not None:
        raters &= Q(memberships__profile_id=profile_id)
    return (
        get_user_model()
        .objects.filter(raters, is_active=True)
        .exclude(pk__in=admins.values("pk"))
        .order_by("username")
        .distinct()
    )
