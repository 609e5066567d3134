"""Curation: value categories, datasets of question–answer samples, revisions, snapshots."""

from __future__ import annotations

import hashlib
import json

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from palmsweb.models import default_profile_pk

DEFAULT_MIN_WORDS = 40
DEFAULT_MAX_WORDS = 340
MAX_TEXT_CHARS = 20_000  # far above 340 words; refuses pasted books


def count_words(text: str) -> int:
    """Words as the PALMS limits count them: whitespace-separated tokens."""
    return len(text.split())


# Coverage and snapshots both report sizes; these are the one definition they share, and
# the words the pages label their columns with.
WORDS_DEFINITION = "words of the answers"
BYTES_DEFINITION = "UTF-8 bytes of question + answer"


def sample_bytes(question: str, answer: str) -> int:
    """A sample's size in bytes, as coverage and snapshots count it (``BYTES_DEFINITION``)."""
    return len(question.encode("utf-8")) + len(answer.encode("utf-8"))


class CategoryQuerySet(models.QuerySet):
    def active(self):
        return self.filter(archived_at__isnull=True)


class Category(models.Model):
    """A sensitive topic and the behaviour the model should show in it."""

    profile = models.ForeignKey(
        "palmsweb.Profile", on_delete=models.PROTECT, related_name="categories",
        default=default_profile_pk,
    )  # fmt: skip
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=120)
    position = models.TextField(help_text="The desired behaviour, in full.")
    guidance = models.TextField(blank=True, help_text="Advice for people writing samples.")
    target_count = models.PositiveIntegerField(default=10)
    order = models.PositiveIntegerField(default=0)
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CategoryQuerySet.as_manager()

    class Meta:
        ordering = ["order", "name"]
        verbose_name_plural = "categories"
        constraints = [
            # Two profiles may both have a "Health" category, with different positions.
            models.UniqueConstraint(fields=["profile", "name"], name="category_name_per_profile"),
            models.UniqueConstraint(fields=["profile", "slug"], name="category_slug_per_profile"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    def get_absolute_url(self) -> str:
        return reverse("curation:category-edit", args=[self.pk])


class PositionVersion(models.Model):
    """One saved text of a category's position and guidance; ``number`` counts from 1.

    Snapshots and studies point at a version, never at the live text, so what a dataset was
    written for and what raters judged against can always be told later.
    """

    category = models.ForeignKey(
        Category, on_delete=models.PROTECT, related_name="position_versions"
    )
    number = models.PositiveIntegerField()
    position = models.TextField()
    guidance = models.TextField(blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["category_id", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["category", "number"], name="position_version_number_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.category.name} v{self.number}"

    @property
    def position_sha256(self) -> str:
        return sha256_hex(self.position)


class Dataset(models.Model):
    class Kind(models.TextChoices):
        VALUES_TARGETED = "values_targeted", "Values-targeted"
        CONTROL = "control", "Control"
        VALIDATION = "validation", "Validation"

    # Fixed at creation: a snapshot's profile, and so a fine-tune's, is its dataset's.
    profile = models.ForeignKey(
        "palmsweb.Profile", on_delete=models.PROTECT, related_name="datasets",
        default=default_profile_pk,
    )  # fmt: skip
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.VALUES_TARGETED)
    description = models.TextField(blank=True)
    min_words = models.PositiveIntegerField(default=DEFAULT_MIN_WORDS)
    max_words = models.PositiveIntegerField(default=DEFAULT_MAX_WORDS)
    system_message = models.TextField(
        blank=True, help_text="Optional system message put first in every exported example."
    )
    allow_self_approval = models.BooleanField(
        default=False, help_text="Let authors approve their own samples (admins only set this)."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(min_words__lte=models.F("max_words")), name="dataset_word_limits_order"
            ),
            models.UniqueConstraint(fields=["profile", "name"], name="dataset_name_per_profile"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("curation:dataset-detail", args=[self.pk])

    def words_within_limits(self, words: int) -> bool:
        return self.min_words <= words <= self.max_words


class SampleQuerySet(models.QuerySet):
    def approved(self):
        return self.filter(status=Sample.Status.APPROVED)

    def search(self, text: str):
        return self.filter(Q(question__icontains=text) | Q(answer__icontains=text))


class GapTicket(models.Model):
    """A shortcoming found in evaluation ("the model still ranks looks"), filed on the
    category it belongs to. Samples written to close it link back to it.

    ``source`` records where it came from (study, output public id, scores) as plain data:
    curation knows nothing of evaluation's tables.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"

    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="gap_tickets")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    source = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_in_snapshot = models.ForeignKey(
        "Snapshot", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["status", "-created_at"]

    @property
    def profile_id(self) -> int:
        """A ticket belongs to its category's profile."""
        return self.category.profile_id

    def __str__(self) -> str:
        return self.title


class Sample(models.Model):
    """One question–answer pair. ``version`` guards against silent overwrites."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        IN_REVIEW = "in_review", "In review"
        APPROVED = "approved", "Approved"
        ARCHIVED = "archived", "Archived"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="samples")
    category = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.PROTECT, related_name="samples"
    )
    question = models.TextField()
    answer = models.TextField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    version = models.PositiveIntegerField(default=1)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="samples"
    )
    gap_ticket = models.ForeignKey(
        GapTicket, null=True, blank=True, on_delete=models.SET_NULL, related_name="samples",
        help_text="The evaluation gap this sample was written to close.",
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = SampleQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at", "-pk"]
        indexes = [models.Index(fields=["dataset", "status", "category"])]

    @property
    def profile_id(self) -> int:
        """A sample belongs to its dataset's profile."""
        return self.dataset.profile_id

    def __str__(self) -> str:
        return self.question[:80]

    def get_absolute_url(self) -> str:
        return reverse("curation:sample-detail", args=[self.pk])

    @property
    def word_count(self) -> int:
        return count_words(self.answer)

    @property
    def within_limits(self) -> bool:
        return self.dataset.words_within_limits(self.word_count)


class SampleRevision(models.Model):
    """Every saved version of a sample's content; ``number`` equals the sample version."""

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    question = models.TextField()
    answer = models.TextField()
    category = models.ForeignKey(Category, null=True, on_delete=models.PROTECT, related_name="+")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["sample", "number"], name="revision_number_unique")
        ]

    def __str__(self) -> str:
        return f"{self.sample_id} r{self.number}"


class StaleEdit(models.Model):
    """An edit refused because someone saved first; kept so the author's text is never lost."""

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="stale_edits")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    base_version = models.PositiveIntegerField()
    question = models.TextField()
    answer = models.TextField()
    category = models.ForeignKey(Category, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Unmerged edit of sample {self.sample_id} (from v{self.base_version})"


class Comment(models.Model):
    """Review discussion; status changes are recorded here too, with the version they saw."""

    class Kind(models.TextChoices):
        COMMENT = "comment", "Comment"
        SUBMITTED = "submitted", "Submitted for review"
        CHANGES_REQUESTED = "changes_requested", "Requested changes"
        APPROVED = "approved", "Approved"
        ARCHIVED = "archived", "Archived"
        REOPENED = "reopened", "Reopened"

    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.COMMENT)
    body = models.TextField(blank=True)
    sample_version = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on sample {self.sample_id}"


class PendingImport(models.Model):
    """An uploaded import file waiting for its uploader to confirm the preview.

    The file is checked at upload (the preview) and checked again when confirmed, since
    the dataset may have changed in between. Kept for a day at most.
    """

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="+")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    filename = models.CharField(max_length=255)
    data = models.BinaryField()
    status = models.CharField(max_length=20, choices=Sample.Status.choices)
    default_category = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"Pending import of {self.filename} into {self.dataset_id}"


class ImmutableError(Exception):
    """Raised on any attempt to change or delete a snapshot."""


class SnapshotQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise ImmutableError("Snapshots are immutable.")

    def delete(self):
        raise ImmutableError("Snapshots are immutable.")


def canonical_json(value) -> str:
    """The one serialisation that snapshot hashes are taken over."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Snapshot(models.Model):
    """A frozen copy of a dataset's approved samples, addressed by the hash of its content.

    ``content`` holds the canonical JSON text itself, so the hash can be re-checked at any
    time without trusting other tables, which keep changing.
    """

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="snapshots")
    label = models.CharField(max_length=200, blank=True)
    content = models.TextField(editable=False)
    content_hash = models.CharField(max_length=64, editable=False, db_index=True)
    sample_count = models.PositiveIntegerField(editable=False)
    word_count = models.PositiveIntegerField(editable=False)
    byte_count = models.PositiveIntegerField(editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = SnapshotQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]

    @property
    def profile_id(self) -> int:
        """A snapshot belongs to its dataset's profile (fixed: a dataset never moves)."""
        return self.dataset.profile_id

    def __str__(self) -> str:
        return f"{self.dataset.name} @ {self.short_hash}"

    def get_absolute_url(self) -> str:
        return reverse("curation:snapshot-detail", args=[self.pk])

    @property
    def short_hash(self) -> str:
        return self.content_hash[:12]

    @property
    def choice_label(self) -> str:
        """How every snapshot dropdown names it: dataset, label, date, short hash, size and
        kind, so two snapshots of one dataset are told apart at a glance."""
        taken = timezone.localtime(self.created_at).strftime("%Y-%m-%d %H:%M")
        return (
            f"{self.dataset.name} · {self.label or 'no label'} · {taken} · {self.short_hash} · "
            f"{self.sample_count} samples · {self.dataset.get_kind_display()}"
        )

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise ImmutableError("Snapshots are immutable.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableError("Snapshots are immutable.")

    def payload(self) -> dict:
        return json.loads(self.content)

    def items(self) -> list[dict]:
        return self.payload()["items"]

    def hash_matches_content(self) -> bool:
        return sha256_hex(self.content) == self.content_hash
