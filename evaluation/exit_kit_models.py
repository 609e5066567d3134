"""The hosted exit kit as a background run (``evaluation.report.exit_kit_jobs``).

Kept beside ``evaluation/models.py`` (which imports it, so it is the same app and one set of
migrations) because that module is at its size limit.
"""

from __future__ import annotations

from django.db import models

from evaluation import choices
from evaluation.background import BackgroundRun


class ExitKitRun(BackgroundRun):
    """One exit kit written on the default queue: which hosted models it covers (every one,
    or the fine-tunes or the base model asked for), and the zip once it is written."""

    Status = choices.RunStatus

    # What was asked for: fine-tune ids (empty: no such filter) and a base model id (null:
    # none). Ids, not foreign keys: the kit is a record of a request, kept if a job goes.
    finetune_ids = models.JSONField(default=list, blank=True)
    base_model_id = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    started_at = models.DateTimeField(null=True, blank=True)
    path = models.CharField(max_length=500, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    # What the kit holds, once written.
    finetunes = models.PositiveIntegerField(null=True, blank=True)
    model_versions = models.PositiveIntegerField(null=True, blank=True)
    outputs = models.PositiveIntegerField(null=True, blank=True)
    studies = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Exit kit #{self.pk}"

    @property
    def scope(self) -> str:
        """What the kit covers, in words."""
        if self.finetune_ids:
            return "fine-tune " + ", ".join(f"#{pk}" for pk in self.finetune_ids)
        if self.base_model_id is not None:
            return f"base model #{self.base_model_id}"
        return "every hosted model"
