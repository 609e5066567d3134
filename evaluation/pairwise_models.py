"""Pairwise rating: the pairs of a pairwise study and the raters' judgments of them.

Kept beside ``evaluation/models.py`` (which imports them, so they are the same app and one
set of migrations) because that module is at its size limit. The rules the database
enforces, as for 1–5 ratings:

- a rater judges a pair at most once: ``UniqueConstraint(pair, rater)``;
- a pair never has more completed judgments than its quota: ``completed_count <= quota``;
- a rater holds at most one open claim per study;
- a completed judgment has a verdict, anything else has none.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from evaluation import choices
from evaluation.identifiers import new_public_id

__all__ = ["ComparedArmPair", "PairJudgment", "PairJudgmentRevision", "StudyPair"]

VERDICTS = tuple(choices.PairVerdict.values)


class StudyPair(models.Model):
    """Two outputs of the same prompt and sample index from two arms, in the order raters
    see them: ``left`` is "A", ``right`` is "B". The order is drawn at random when the pair
    is made and stored, so every rater sees the same A and B and nothing in the order says
    which arm is which. Only ``public_id`` ever leaves for a rater."""

    study = models.ForeignKey("evaluation.Study", on_delete=models.CASCADE, related_name="pairs")
    prompt = models.ForeignKey("evaluation.Prompt", on_delete=models.PROTECT, related_name="+")
    sample_index = models.PositiveSmallIntegerField()
    left = models.ForeignKey(
        "evaluation.StudyOutput", on_delete=models.CASCADE, related_name="pairs_as_left"
    )
    right = models.ForeignKey(
        "evaluation.StudyOutput", on_delete=models.CASCADE, related_name="pairs_as_right"
    )
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id)
    quota = models.PositiveSmallIntegerField()
    completed_count = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["prompt_id", "sample_index", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(completed_count__lte=F("quota")), name="pair_completed_within_quota"
            ),
            models.CheckConstraint(condition=~Q(left=F("right")), name="pair_two_outputs"),
            models.UniqueConstraint(fields=["study", "left", "right"], name="pair_unique_outputs"),
        ]
        indexes = [models.Index(fields=["study", "completed_count"])]

    def __str__(self) -> str:
        return self.public_id


class PairJudgment(models.Model):
    """A rater's claim on a pair, then its outcome: one row per (pair, rater), ever."""

    Status = choices.RatingStatus
    Verdict = choices.PairVerdict

    study = models.ForeignKey(
        "evaluation.Study", on_delete=models.CASCADE, related_name="pair_judgments"
    )
    pair = models.ForeignKey(StudyPair, on_delete=models.CASCADE, related_name="judgments")
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="pair_judgments"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CLAIMED)
    verdict = models.CharField(max_length=10, choices=Verdict.choices, blank=True)
    reason = models.TextField(blank=True)
    claimed_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["claimed_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["pair", "rater"], name="judgment_one_per_rater"),
            models.UniqueConstraint(
                fields=["study", "rater"],
                condition=Q(status="claimed"),
                name="judgment_one_open_claim_per_study",
            ),
            models.CheckConstraint(
                condition=(
                    Q(status="completed", verdict__in=VERDICTS)
                    | (~Q(status="completed") & Q(verdict=""))
                ),
                name="judgment_verdict_iff_completed",
            ),
        ]
        indexes = [
            models.Index(fields=["pair", "status", "expires_at"]),
            models.Index(fields=["study", "rater", "status"]),
        ]

    def __str__(self) -> str:
        return f"{self.pair.public_id} · {self.rater_id} · {self.status}"

    def is_live(self, now) -> bool:
        return self.status == self.Status.CLAIMED and self.expires_at > now


class PairJudgmentRevision(models.Model):
    """A rater changed a judgment they had submitted (their last one, while the study was
    open). The judgment row holds the current verdict; this log keeps what it replaced."""

    judgment = models.ForeignKey(PairJudgment, on_delete=models.CASCADE, related_name="revisions")
    previous_verdict = models.CharField(max_length=10, choices=choices.PairVerdict.choices)
    previous_reason = models.TextField(blank=True)
    verdict = models.CharField(max_length=10, choices=choices.PairVerdict.choices)
    reason = models.TextField(blank=True)
    revised_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["revised_at", "pk"]

    def __str__(self) -> str:
        return f"{self.judgment_id}: {self.previous_verdict} → {self.verdict}"


class ComparedArmPair(models.Model):
    """One arm pair a pairwise study compares, when the study compares a chosen subset
    rather than every pair of its arms (no rows: every pair). Arms are named by their
    ``StudyArm.order`` (the row number on the study form, from 0), which survives a draft's
    arms being written again; ``first < second``."""

    study = models.ForeignKey(
        "evaluation.Study", on_delete=models.CASCADE, related_name="compared_arm_pairs"
    )
    first = models.PositiveSmallIntegerField()
    second = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["first", "second"]
        constraints = [
            models.CheckConstraint(condition=Q(first__lt=F("second")), name="arm_pair_ordered"),
            models.UniqueConstraint(fields=["study", "first", "second"], name="arm_pair_once"),
        ]

    def __str__(self) -> str:
        return f"{self.study_id}: arms {self.first + 1}–{self.second + 1}"
