"""The review queue ("waiting for my review") and bulk review actions.

The queue holds the samples in review that a curator may approve as an independent
reviewer: not written by them, not revised by them since submission (a dataset that allows
self-approval waives both, as :func:`curation.services.reviewer_problems` does). Bulk
actions run the single-sample services one sample at a time, so every rule holds and each
refusal is reported for its own sample.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from curation import services
from curation.models import Comment, Dataset, Sample, SampleRevision
from curation.selectors import REVIEW_STARTS
from palmsweb.roles import Role, profile_ids_with_role

MAX_BULK_SAMPLES = 200

# The bulk actions and the service each runs, one sample at a time.
BULK_ACTIONS = {
    "submit": services.sample_submit,
    "approve": services.sample_approve,
    "archive": services.sample_archive,
}
BULK_DONE = {"submit": "Submitted", "approve": "Approved", "archive": "Archived"}


def curated_profile_ids(user) -> list[int]:
    """The profiles whose samples ``user`` may review and change."""
    return profile_ids_with_role(user, Role.CURATOR)


def review_queue(user, *, dataset: Dataset | None = None) -> QuerySet[Sample]:
    """Samples in review that ``user`` may approve as an independent reviewer, waiting
    longest first. Content problems (word limits, unmerged edits) do not hide a sample:
    the reviewer sees them and requests changes."""
    started = (
        Comment.objects.filter(sample=OuterRef("pk"), kind__in=REVIEW_STARTS)
        .order_by("-created_at", "-pk")
        .values("sample_version")[:1]
    )
    samples = Sample.objects.filter(
        status=Sample.Status.IN_REVIEW, dataset__profile__in=curated_profile_ids(user)
    ).annotate(
        review_base=Coalesce(Subquery(started), Value(1))
    )
    revised = SampleRevision.objects.filter(
        sample=OuterRef("pk"), number__gt=OuterRef("review_base"), author=user
    )
    samples = samples.annotate(revised_by_me=Exists(revised)).exclude(
        (Q(author=user) | Q(revised_by_me=True)) & Q(dataset__allow_self_approval=False)
    )
    if dataset is not None:
        samples = samples.filter(dataset=dataset)
    return samples.select_related("dataset", "category", "author").order_by("updated_at", "pk")


@dataclass(frozen=True)
class QueuePosition:
    """Where a sample sits in a reviewer's queue (``index`` is None when it is not in it)."""

    ids: list[int]
    index: int | None

    @property
    def total(self) -> int:
        return len(self.ids)

    @property
    def number(self) -> int | None:
        return None if self.index is None else self.index + 1

    @property
    def previous_id(self) -> int | None:
        if self.index is None or self.index == 0:
            return None
        return self.ids[self.index - 1]

    @property
    def next_id(self) -> int | None:
        if self.index is None:
            return self.ids[0] if self.ids else None
        return self.ids[self.index + 1] if self.index + 1 < len(self.ids) else None


def queue_position(user, sample: Sample, *, dataset: Dataset | None = None) -> QueuePosition:
    ids = list(review_queue(user, dataset=dataset).values_list("pk", flat=True))
    return QueuePosition(ids=ids, index=ids.index(sample.pk) if sample.pk in ids else None)


def queue_next_after(user, ids_before: list[int], sample_id: int, *, dataset=None) -> int | None:
    """After acting on ``sample_id``, the sample to review next: the one that followed it in
    the queue as it was (``ids_before``) if still waiting, else the queue's first."""
    now = list(review_queue(user, dataset=dataset).values_list("pk", flat=True))
    if not now:
        return None
    waiting = set(now)
    after = ids_before[ids_before.index(sample_id) + 1:] if sample_id in ids_before else []
    return next((pk for pk in after if pk in waiting), now[0])


@dataclass
class BulkResult:
    done: list[Sample] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (sample id, why)


def samples_bulk_action(
    *, action: str, items: Iterable[tuple[int, int | None]], user, body: str = ""
) -> BulkResult:
    """Run one review action (submit, approve or archive) on many samples.

    ``items`` are (sample id, version read or None). Each sample goes through the same
    service as a single action, in its own transaction, so one refusal neither stops nor
    undoes the others; the result lists what was done and why each refusal happened.
    ``version`` guards approvals exactly as on the sample page.
    """
    if action not in BULK_ACTIONS:
        raise services.CurationError(f"Bulk actions are {', '.join(BULK_ACTIONS)}.")
    items = list(dict(items).items())  # one entry per sample, in the order given
    if not items:
        raise services.CurationError("Select at least one sample.")
    if len(items) > MAX_BULK_SAMPLES:
        raise services.CurationError(f"At most {MAX_BULK_SAMPLES} samples at a time.")
    # Samples of profiles the user does not curate in are "no such sample", as in the API.
    writable = Sample.objects.filter(dataset__profile__in=curated_profile_ids(user))
    found = writable.select_related("dataset").in_bulk([pk for pk, _ in items])
    result = BulkResult()
    for pk, version in items:
        sample = found.get(pk)
        if sample is None:
            result.refused.append((pk, "No such sample."))
            continue
        extra = {"version": version} if action == "approve" else {}
        try:
            result.done.append(BULK_ACTIONS[action](sample=sample, user=user, body=body, **extra))
        except services.CurationError as error:
            result.refused.append((pk, str(error)))
    return result
