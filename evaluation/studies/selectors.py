"""Reads with some weight: progress counts, rater queues, per-arm results."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from django.conf import settings
from django.db.models import Avg, Count, F, Q, Sum
from django.utils import timezone

from curation.models import Category
from evaluation.access import can_see_generations
from evaluation.models import Rating, Study, StudyArm, StudyOutput
from evaluation.studies import pairwise_selectors
from evaluation.studies.arm_pairs import arm_pair_count
from palmsweb.roles import Role, profile_ids_with_role
from training.models import BaseModel, ModelVersion
from training.selectors import local_sampling_speed, packaged_model_needs_conversion
from training.services import hosted_dates


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
    if study.mode == Study.Mode.PAIRWISE:  # judgments of pairs, not ratings of outputs
        pairs = pairwise_selectors.pair_totals(study, now)
        row.update(needed=pairs["needed"], completed=pairs["completed"])
        live = pairs["live"]
    return StudyProgress(
        outputs=row["outputs"],
        active=row["active"],
        held=row["held"],
        excluded=row["excluded"],
        needed=row["needed"] or 0,
        completed=row["completed"] or 0,
        live_claims=live,
    )


CONVERSION_SECONDS = 15  # the packaged model's one-off conversion (training.engine.loading)


@dataclass(frozen=True)
class StudyEstimate:
    """What opening a study will cost: outputs, ratings and sampling time."""

    n_prompts: int
    n_arms: int
    samples_per_prompt: int
    raters_per_output: int
    n_raters: int
    max_new_tokens: int
    local_outputs: int
    tokens_per_second: float
    speed_measured: bool
    converts: bool
    n_arm_pairs: int | None = None  # pairwise: arm pairs judged per prompt × sample

    @property
    def outputs(self) -> int:
        return self.n_prompts * self.n_arms * self.samples_per_prompt

    @property
    def pairwise(self) -> bool:
        return self.n_arm_pairs is not None

    @property
    def tasks(self) -> int:
        """What raters do: one rating per output, or one judgment per pair (per rater)."""
        if self.pairwise:
            return self.n_prompts * self.samples_per_prompt * self.n_arm_pairs
        return self.outputs

    @property
    def judgments_per_arm_pair(self) -> int:
        return self.n_prompts * self.samples_per_prompt * self.raters_per_output

    @property
    def win_rate_half_width(self) -> float:
        from evaluation.studies.planning import win_rate_half_width

        return win_rate_half_width(self.n_prompts)

    @property
    def remote_outputs(self) -> int:
        return self.outputs - self.local_outputs

    @property
    def ratings(self) -> int:
        return self.tasks * self.raters_per_output

    @property
    def per_rater(self) -> int | None:
        """Ratings each rater gives if the pool shares the work evenly."""
        return -(-self.ratings // self.n_raters) if self.n_raters else None

    @property
    def pool_too_small(self) -> bool:
        # Nobody rates an output twice, so every output needs that many distinct raters.
        return self.n_raters < self.raters_per_output

    @property
    def sampling_seconds(self) -> float:
        """At most this long for the local arms: every output may run to max_new_tokens."""
        tokens = self.local_outputs * self.max_new_tokens
        return tokens / self.tokens_per_second + (CONVERSION_SECONDS if self.converts else 0)


def study_estimate(
    *,
    n_prompts: int,
    versions: list[ModelVersion],
    samples_per_prompt: int,
    raters_per_output: int,
    max_new_tokens: int,
    n_raters: int,
    n_arm_pairs: int | None = None,
) -> StudyEstimate:
    """The estimate the study form and a draft study's page show before *Open*
    (``n_arm_pairs``: a pairwise study's arm pairs; its raters judge pairs)."""
    local = [v for v in versions if v.base_model.is_local]
    speed = local_sampling_speed()
    converts = any(v.base_model.kind == BaseModel.Kind.PACKAGED for v in local) and (
        packaged_model_needs_conversion()
    )
    return StudyEstimate(
        n_prompts=n_prompts,
        n_arms=len(versions),
        samples_per_prompt=samples_per_prompt,
        raters_per_output=raters_per_output,
        n_raters=n_raters,
        max_new_tokens=max_new_tokens,
        local_outputs=n_prompts * len(local) * samples_per_prompt,
        tokens_per_second=speed.tokens_per_second,
        speed_measured=speed.measured,
        converts=converts,
        n_arm_pairs=n_arm_pairs,
    )


def draft_study_estimate(study: Study) -> StudyEstimate:
    versions = [arm.model_version for arm in study.arms.select_related("model_version__base_model")]
    return study_estimate(
        n_prompts=study.prompt_set.prompts.count(),
        versions=versions,
        samples_per_prompt=study.samples_per_prompt,
        raters_per_output=study.raters_per_output,
        max_new_tokens=study.max_new_tokens,
        n_raters=study.raters.count(),
        n_arm_pairs=arm_pair_count(study, len(versions))
        if study.mode == Study.Mode.PAIRWISE
        else None,
    )


@dataclass(frozen=True)
class RaterProgress:
    completed: int
    skipped: int
    open_to_me: int  # outputs still needing ratings that this rater may yet get

    @property
    def percent(self) -> int:
        """How much of what this rater can still do is done: rated / (rated + open)."""
        reachable = self.completed + self.open_to_me
        return round(100 * self.completed / reachable) if reachable else 0


def rater_progress(study: Study, rater) -> RaterProgress:
    """What one rater has done in a study, and what is still open to them (outputs with
    room that they have not answered; their current claim counts as open). Never counts
    anyone else's ratings. Pairwise studies count pairs."""
    if study.mode == Study.Mode.PAIRWISE:
        return RaterProgress(**pairwise_selectors.rater_pair_counts(study, rater))
    row = Rating.objects.filter(study=study, rater=rater).aggregate(
        completed=Count("pk", filter=Q(status=Rating.Status.COMPLETED)),
        skipped=Count("pk", filter=Q(status__in=[Rating.Status.SKIPPED, Rating.Status.FLAGGED])),
    )
    answered = Rating.objects.filter(study=study, rater=rater).exclude(status=Rating.Status.CLAIMED)
    open_to_me = (
        StudyOutput.objects.filter(
            study=study, screening=StudyOutput.Screening.ACTIVE, completed_count__lt=F("quota")
        )
        .exclude(pk__in=answered.values("output_id"))
        .count()
    )
    return RaterProgress(completed=row["completed"], skipped=row["skipped"], open_to_me=open_to_me)


def rater_studies(user):
    """Studies open for rating whose pool includes ``user`` (none for admins: they can see
    which model wrote each output)."""
    if can_see_generations(user):
        return Study.objects.none()
    in_rater_profiles = profile_ids_with_role(user, Role.RATER)
    rating = Study.objects.filter(status=Study.Status.RATING, raters=user)
    return rating.filter(prompt_set__profile__in=in_rater_profiles).order_by(
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
    :func:`evaluation.access.can_see_arm_results` first."""
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


# --- hosted models that shut down ---------------------------------------------------------


@dataclass(frozen=True)
class ShutdownWarning:
    """An arm whose hosted model shuts down soon (or has). ``arm``, ``size_tag`` and
    ``model_version`` are None for readers who may not link arms to models yet."""

    shutdown_date: date
    source: str
    days_left: int
    message: str
    arm: str | None = None
    size_tag: str | None = None
    model_version: int | None = None


def shutdown_warnings(
    study: Study, *, reveal_models: bool, arms: Iterable[StudyArm] | None = None
) -> list[ShutdownWarning]:
    """Warnings for the arms whose models shut down before the study's rating closes.

    "Before it closes": on or before the study's planned ``rating_closes_on``; a study
    without one (or past it, running late) falls back to within
    ``HOSTED_SHUTDOWN_WARNING_DAYS`` of today. A model already shut down always warns while
    the study is not closed. Without ``reveal_models`` the warning does not say which arm
    (that would link an arm to a model family before unblinding). ``arms``: the study's arms
    with their model versions and base models already loaded, when the caller has them."""
    if study.status == Study.Status.CLOSED:
        return []
    if arms is None:
        arms = study.arms.select_related("model_version__base_model")
    today = hosted_dates.today()
    closes_on = study.rating_closes_on if _plans_to_close(study, today) else None
    last_day = closes_on or today + timedelta(days=settings.HOSTED_SHUTDOWN_WARNING_DAYS)
    # Keyed by message: without reveal_models, arms on one date make one warning.
    warnings: dict[str, ShutdownWarning] = {}
    for arm in arms:
        shutdown = hosted_dates.version_shutdown(arm.model_version)
        if shutdown is None or shutdown.on > last_day:
            continue
        who = (
            f"The {arm.get_arm_display().lower()} arm's model ({arm.model_version.name})"
            if reveal_models
            else "A model in this study"
        )
        days_left = shutdown.days_left(today)
        message = _shutdown_message(study, who, shutdown.on, days_left, closes_on)
        which = (
            {"arm": arm.arm, "size_tag": arm.size_tag, "model_version": arm.model_version_id}
            if reveal_models
            else {}
        )
        warnings.setdefault(message, ShutdownWarning(
            shutdown_date=shutdown.on, source=shutdown.source, days_left=days_left,
            message=message, **which,
        ))  # fmt: skip
    return sorted(warnings.values(), key=lambda warning: warning.shutdown_date)


def _plans_to_close(study: Study, today: date) -> bool:
    """Whether the study's planned close date is still ahead (or today)."""
    return study.rating_closes_on is not None and study.rating_closes_on >= today


def _shutdown_message(
    study: Study, who: str, on: date, days_left: int, closes_on: date | None
) -> str:
    rating = study.status == Study.Status.RATING
    if days_left < 0:
        advice = (
            "Its outputs are sampled already and stay ratable."
            if rating
            else "It can no longer be sampled: give that arm another model."
        )
        return f"{who} shut down on {on.isoformat()}. {advice}"
    days = "today" if days_left == 0 else f"in {days_left} day{'s' if days_left > 1 else ''}"
    advice = (
        "Its outputs are sampled already and stay ratable, but it cannot be sampled again "
        "after that day."
        if rating
        else "Let sampling finish before then."
    )
    before = f", before rating closes on {closes_on.isoformat()}" if closes_on else ""
    return f"{who} shuts down on {on.isoformat()} ({days}{before}). {advice}"
