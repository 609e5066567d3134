"""Preference sets built from a closed study, and the frozen preference snapshots made from
them (imported by ``evaluation/models.py``: the same app, one set of migrations).

A :class:`PreferenceSet` is the curators' working copy: pairs of outputs of one prompt, the
preferred one and the other, each with the evidence that made it (votes of a pairwise study,
or the two mean scores of a 1–5 study). Curators drop pairs they do not trust. *Freeze*
writes a :class:`PreferenceSnapshot`: the kept pairs and their provenance as canonical JSON,
addressed by its SHA-256, immutable like a dataset snapshot."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from curation.models import ImmutableError

__all__ = ["PreferenceAnswerRevision", "PreferencePair", "PreferenceSet", "PreferenceSnapshot"]


class PreferenceSet(models.Model):
    class Source(models.TextChoices):
        PAIRWISE = "pairwise", "Pairwise judgments"
        RATINGS = "ratings", "1–5 ratings with a margin"

    study = models.ForeignKey(
        "evaluation.Study", on_delete=models.PROTECT, related_name="preference_sets"
    )
    source = models.CharField(max_length=20, choices=Source.choices)
    # ratings: the least difference of mean scores; pairwise: unused (majority of raters).
    margin = models.FloatField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Preferences from {self.study} #{self.pk}"

    @property
    def profile_id(self) -> int:
        return self.study.profile_id

    def get_absolute_url(self) -> str:
        return reverse("evaluation:preference-set-detail", args=[self.pk])


class PreferencePair(models.Model):
    """Two outputs of one prompt: ``chosen`` was preferred over ``rejected``."""

    preference_set = models.ForeignKey(
        PreferenceSet, on_delete=models.CASCADE, related_name="pairs"
    )
    prompt = models.ForeignKey("evaluation.Prompt", on_delete=models.PROTECT, related_name="+")
    chosen = models.ForeignKey("evaluation.StudyOutput", on_delete=models.PROTECT, related_name="+")
    rejected = models.ForeignKey(
        "evaluation.StudyOutput", on_delete=models.PROTECT, related_name="+"
    )
    votes_for = models.PositiveSmallIntegerField(default=0)  # pairwise: raters preferring chosen
    votes_total = models.PositiveSmallIntegerField(default=0)  # pairwise: judgments of the pair
    chosen_mean = models.FloatField(null=True, blank=True)  # ratings: the two mean scores
    rejected_mean = models.FloatField(null=True, blank=True)
    dropped = models.BooleanField(default=False)
    dropped_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A curator's own better answer, used as the chosen side instead of the ``chosen``
    # output when not blank. ``answer_version`` guards against silent overwrites, as a
    # sample's ``version`` does; every saved version is a PreferenceAnswerRevision.
    answer = models.TextField(blank=True)
    answer_version = models.PositiveIntegerField(default=0)
    answer_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["prompt_id", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(chosen=models.F("rejected")), name="pref_two_sides"
            ),
            models.UniqueConstraint(
                fields=["preference_set", "chosen", "rejected"], name="pref_pair_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.chosen_id} > {self.rejected_id}"


class PreferenceAnswerRevision(models.Model):
    """Every saved version of a curator's answer to a pair; ``number`` equals the pair's
    ``answer_version``. A blank answer is a revision too: back to the raters' choice."""

    pair = models.ForeignKey(PreferencePair, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    answer = models.TextField(blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["pair", "number"], name="pref_answer_revision_unique")
        ]

    def __str__(self) -> str:
        return f"{self.pair_id} r{self.number}"


class PreferenceSnapshotQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise ImmutableError("Preference snapshots are immutable.")

    def delete(self):
        raise ImmutableError("Preference snapshots are immutable.")


class PreferenceSnapshot(models.Model):
    """The kept pairs of a preference set, frozen. ``content`` is the canonical JSON (pairs
    and provenance) the hash is taken over, so it can be re-checked without other tables."""

    preference_set = models.ForeignKey(
        PreferenceSet, on_delete=models.PROTECT, related_name="snapshots"
    )
    content = models.TextField(editable=False)
    content_hash = models.CharField(max_length=64, editable=False, db_index=True)
    pair_count = models.PositiveIntegerField(editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = PreferenceSnapshotQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Preference snapshot {self.content_hash[:12]}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise ImmutableError("Preference snapshots are immutable.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableError("Preference snapshots are immutable.")
