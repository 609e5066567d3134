"""The misalignment gate and the conditional probes of a misalignment evaluation.

Kept beside ``evaluation/models.py`` (which imports them, so they are the same app and one
set of migrations) because that module is at its size limit.
"""

from __future__ import annotations

from django.db import models
from django.urls import reverse

from evaluation.background import BackgroundRun


class ConditionalProbeSet(models.Model):
    """Which of an evaluation's probes are conditional: its probes are the ``n_standard``
    standard questions first, then training-like variants of them made from ``snapshot``
    (``evaluation.alignment.conditional``)."""

    evaluation = models.OneToOneField(
        "evaluation.MisalignmentEval", on_delete=models.CASCADE, related_name="conditional"
    )
    snapshot = models.ForeignKey(
        "curation.Snapshot", on_delete=models.PROTECT, related_name="conditional_probe_sets"
    )
    n_standard = models.PositiveIntegerField()
    # Per conditional probe, in order: {"kind", "source_probe"}.
    variants = models.JSONField(default=list)
    # What they were made from: snapshot hash, domain words, the kinds and their counts.
    recipe = models.JSONField(default=dict)

    def __str__(self) -> str:
        return f"{len(self.variants)} conditional probes from snapshot {self.snapshot_id}"


class GateVerdict(models.TextChoices):
    PASS = "pass", "Pass"
    FAIL = "fail", "Fail"
    NOT_MEASURED = "not_measured", "Not measured"


class ModelGate(BackgroundRun):
    """A model version's misalignment gate: its persona shift against its base model and,
    with a judge, its standard and conditional misalignment rates against the base model's
    (measured in the same evaluation). ``verdict`` is fail when any measured criterion
    fails, pass when every measured one passes, not measured when nothing could be.

    measuring → succeeded (with a verdict) or failed."""

    class Status(models.TextChoices):
        MEASURING = "measuring", "Measuring"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    Verdict = GateVerdict

    model_version = models.ForeignKey(
        "training.ModelVersion", on_delete=models.CASCADE, related_name="gates"
    )
    base_version = models.ForeignKey(
        "training.ModelVersion", on_delete=models.PROTECT, related_name="+"
    )
    evaluation = models.OneToOneField(
        "evaluation.MisalignmentEval",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="gate",
    )
    persona_tolerance = models.FloatField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.MEASURING)
    verdict = models.CharField(max_length=20, choices=GateVerdict.choices, blank=True)
    # {"persona": {...} | {"error"}, "standard": {...}, "conditional": {...}, "criteria": [...]}
    result = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"Gate #{self.pk} of {self.model_version_id}: {self.verdict or self.status}"

    def get_absolute_url(self) -> str:
        return reverse("evaluation:gate-detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.MEASURING
