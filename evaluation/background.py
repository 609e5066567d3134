"""The abstract base of evaluation's background runs (scoring runs, exports, misalignment
evaluations, re-alignment runs): who started it, when it ended, why it failed, and the
phase and ETA its worker last wrote. Abstract: its fields live in each run's own table."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from palmsweb.lib.progress import seconds_left


class BackgroundRun(models.Model):
    """What every background run keeps: who started it and when, when it ended, and why
    it failed (scoring runs, exports, misalignment evaluations, re-alignment runs)."""

    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    # What the worker does now, in words, and its estimate of the time left when it wrote
    # progress last (``progress_at``): the page counts the ETA down from there.
    phase = models.CharField(max_length=200, blank=True)
    eta_seconds = models.FloatField(null=True, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-pk"]

    @property
    def eta_left(self) -> float | None:
        """Seconds left of the worker's last estimate, counted down to now."""
        if self.finished_at is not None:
            return None
        return seconds_left(self.eta_seconds, self.progress_at, timezone.now())
