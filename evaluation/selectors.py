"""Reads with some weight: progress counts, rater queues, per-arm results."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Avg, Count, Q, Sum
from django.utils import timezone

from curation.models import Category
from evaluation.models import Rating, Study, StudyOutput


@dataclass(frozen=True)
class StudyProgress:
    outputs: int  # everything sampled
    active: int  # in the pool
    held: int  # waiting for an admin
    excluded: int
    needed: int  # completed ratings the study needs (active + held outputs × quota)
    completed: int
    live_claims: int

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.completed / self.needed)) if self.needed else 0

    @property
    def done(self) -> bool:
        return self.needed > 0 and self.completed >= self.needed


def study_progress(study: Study, now=None) -> StudyProgress:
    """Counts over the study's outputs: two aggregate queries whatever the study's size."""
    now = now or timezone.now()
    Screening = StudyOutput.Screening
    counted = ~Q(screening=Screening.EXCLUDED)
    row = StudyOutput.objects.filter(study=study).aggregate(
        outputs=Count("pk"),
        active=Count("pk", filter=Q(screening=Screening.ACTIVE)),
        held=Count("pk", filter=Q(screening=Screening.HELD)),
        excluded=Count("pk", filter=Q(screening=Screening.EXCLUDED)),
        needed=Sum("quota", filter=counted),
        completed=Sum("completed_count", filter=counted),
    )
    live = Rating.objects.filter(
        study=study, status=Rating.Status.CLAIMED, expires_at__gt=now
    ).count()
    return StudyProgress(
        outputs=row["outputs"],
        active=row["active"],
        held=row["held"],
        excluded=row["excluded"],
        needed=row["needed"] or 0,
        completed=row["completed"] or 0,
        live_claims=live,
    )


@dataclass(frozen=True)
class RaterProgress:
    completed: int
    skipped: int
    share: int  # a fair share of the study's ratings for one rater of the pool

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.completed / self.share)) if self.share else 0


def rater_progress(study: Study, rater, *, study_needed: int | None = None) -> RaterProgress:
    """What one rater has done in a study. Never counts anyone else's ratings."""
    row = Rating.objects.filter(study=study, rater=rater).aggregate(
        completed=Count("pk", filter=Q(status=Rating.Status.COMPLETED)),
        skipped=Count("pk", filter=Q(status__in=[Rating.Status.SKIPPED, Rating.Status.FLAGGED])),
    )
    if study_needed is None:
        study_needed = study_progress(study).needed
    pool = study.raters.count() or 1
    return RaterProgress(
        completed=row["completed"], skipped=row["skipped"], share=-(-study_needed // pool)
    )


def rater_studies(user):
    """Studies open for rating whose pool includes ``user`` (none for admins: they can see
    which model wrote each output)."""
    from evaluation.services import can_see_generations

    if can_see_generations(user):
        return Study.objects.none()
    return Study.objects.filter(status=Study.Status.RATING, raters=user).order_by(
        "rating_opened_at", "pk"
    )


def held_outputs(study: Study):
    return (
        study.outputs.filter(screening=StudyOutput.Screening.HELD)
        .select_related("arm__model_version", "prompt__category")
        .order_by("prompt__order", "arm__order", "sample_index")
    )


def study_outputs(study: Study, *, screening: str = ""):
    outputs = study.outputs.select_related("arm__model_version", "prompt__category")
    if screening:
        outputs = outputs.filter(screening=screening)
    return outputs.order_by("prompt__order", "prompt_id", "arm__order", "sample_index")


def study_results(study: Study) -> dict:
    """Mean score per arm × category (and per arm overall) over completed ratings of
    outputs that were not excluded. Only for people allowed to see per-arm scores: check
    :func:`evaluation.services.can_see_arm_results` first."""
    rows = (
        Rating.objects.filter(study=study, status=Rating.Status.COMPLETED)
        .exclude(output__screening=StudyOutput.Screening.EXCLUDED)
        .values("output__arm_id", "output__prompt__category__name")
        .annotate(n=Count("pk"), mean=Avg("score"))
        .order_by()
    )
    arms = {arm.pk: arm for arm in study.arms.select_related("model_version")}
    # Every category of the study's prompts, in category order, rated or not yet.
    categories = list(
        Category.objects.filter(eval_prompts__prompt_set=study.prompt_set_id)
        .order_by("order", "name")
        .values_list("name", flat=True)
        .distinct()
    )
    cells = {
        (row["output__arm_id"], row["output__prompt__category__name"]): (row["n"], row["mean"])
        for row in rows
    }
    overall = dict(
        Rating.objects.filter(study=study, status=Rating.Status.COMPLETED)
        .exclude(output__screening=StudyOutput.Screening.EXCLUDED)
        .values("output__arm_id")
        .annotate(mean=Avg("score"))
        .order_by()
        .values_list("output__arm_id", "mean")
    )
    table = []
    for arm in arms.values():
        table.append(
            {
                "arm": arm,
                "cells": [
                    {
                        "category": c,
                        "ratings": cells.get((arm.pk, c), (0, None))[0],
                        "mean": cells.get((arm.pk, c), (0, None))[1],
                    }
                    for c in categories
                ],
                "overall": overall.get(arm.pk),
            }
        )
    return {"categories": categories, "rows": table}
