"""Curation workflows. Views, the API and commands call these; none re-implements them."""

from __future__ import annotations

import io
import json

from django.db import transaction
from django.db.models import F
from django.utils import timezone

# The category workflows live in curation.categories; their names stay importable from
# here, where views, the API and commands have always found them.
from curation.categories import (  # noqa: F401
    PALMS_CATEGORIES_FILE,
    PRESETS_DIR,
    category_archive,
    category_create,
    category_move,
    category_reorder,
    category_restore,
    category_update,
    load_palms_preset,
    position_records,
)
from curation.errors import CurationError
from curation.models import (
    MAX_TEXT_CHARS,
    Category,
    Comment,
    Dataset,
    GapTicket,
    Sample,
    SampleRevision,
    Snapshot,
    StaleEdit,
    canonical_json,
    count_words,
    sample_bytes,
    sha256_hex,
)
from curation.selectors import review_base_version
from palmsweb.lib import csvsafe
from palmsweb.models import Profile, profile_pk


class StaleEditError(CurationError):
    """Someone saved the sample after the version this edit started from."""

    def __init__(self, *, current: Sample, stale_edit: StaleEdit):
        super().__init__(
            f"This sample was changed by someone else (now version {current.version}, "
            f"your edit started from version {stale_edit.base_version}). "
            "Your text is kept below; compare both versions and save again."
        )
        self.current = current
        self.stale_edit = stale_edit


class TransitionError(CurationError):
    """The sample's status does not allow this step, or this user may not take it."""


class EmptySnapshotError(CurationError):
    pass


class UnchangedSnapshotError(CurationError):
    """The dataset's approved content is what its latest snapshot already holds."""

    def __init__(self, snapshot: Snapshot):
        label = f" ({snapshot.label})" if snapshot.label else ""
        taken = timezone.localtime(snapshot.created_at).strftime("%Y-%m-%d %H:%M")
        super().__init__(
            f"Nothing changed since the last snapshot, {snapshot.short_hash}{label} of "
            f"{taken}: it already holds these {snapshot.sample_count} approved samples. "
            "No new snapshot was taken."
        )
        self.snapshot = snapshot


# --- datasets --------------------------------------------------------------------------


def _validate_limits(min_words: int, max_words: int) -> None:
    if min_words < 1 or max_words < min_words:
        raise CurationError("Word limits need 1 ≤ minimum ≤ maximum.")


@transaction.atomic
def dataset_create(
    *,
    name: str,
    kind: str = Dataset.Kind.VALUES_TARGETED,
    description: str = "",
    min_words: int = 40,
    max_words: int = 340,
    system_message: str = "",
    allow_self_approval: bool = False,
    user=None,
    profile: Profile | int | None = None,
) -> Dataset:
    """A new dataset in ``profile`` (the default profile when None); its profile never
    changes, so its snapshots, and the fine-tunes trained on them, keep theirs."""
    if not name.strip():
        raise CurationError("A dataset needs a name.")
    profile_id = profile_pk(profile)
    in_profile = Dataset.objects.filter(profile_id=profile_id)
    if in_profile.filter(name__iexact=name.strip()).exists():
        raise CurationError(f"A dataset named {name.strip()!r} already exists in this profile.")
    _validate_limits(min_words, max_words)
    return Dataset.objects.create(
        profile_id=profile_id,
        name=name.strip(),
        kind=kind,
        description=description,
        min_words=min_words,
        max_words=max_words,
        system_message=system_message,
        allow_self_approval=allow_self_approval,
        created_by=user,
    )


@transaction.atomic
def dataset_update(*, dataset: Dataset, **fields) -> Dataset:
    allowed = {"name", "kind", "description", "min_words", "max_words", "system_message",
               "allow_self_approval"}
    unknown = set(fields) - allowed
    if unknown:
        raise CurationError(f"Unknown dataset fields: {', '.join(sorted(unknown))}.")
    for key, value in fields.items():
        setattr(dataset, key, value.strip() if key == "name" else value)
    _validate_limits(dataset.min_words, dataset.max_words)
    in_profile = Dataset.objects.filter(profile_id=dataset.profile_id)
    if in_profile.filter(name__iexact=dataset.name).exclude(pk=dataset.pk).exists():
        raise CurationError(f"A dataset named {dataset.name!r} already exists in this profile.")
    dataset.save(update_fields=list(fields))
    return dataset


# --- samples ---------------------------------------------------------------------------


def check_category_in_profile(category: Category | None, dataset: Dataset) -> None:
    """A sample's category must be one of its dataset's profile: a position from another
    application context would be trained on without anyone having written it for this one."""
    if category is not None and category.profile_id != dataset.profile_id:
        raise CurationError(
            f"The category {category.name!r} belongs to another value profile than this dataset."
        )


def validate_sample_text(question: str, answer: str) -> None:
    """Size rules that hold even for drafts (word limits only bind at approval)."""
    if not question.strip():
        raise CurationError("The question is empty.")
    if len(question) > MAX_TEXT_CHARS or len(answer) > MAX_TEXT_CHARS:
        raise CurationError(f"Question and answer are limited to {MAX_TEXT_CHARS:,} characters.")


def _record_revision(sample: Sample, *, user, note: str = "") -> SampleRevision:
    return SampleRevision.objects.create(
        sample=sample,
        number=sample.version,
        question=sample.question,
        answer=sample.answer,
        category=sample.category,
        author=user,
        note=note,
    )


@transaction.atomic
def sample_create(
    *,
    dataset: Dataset,
    question: str,
    answer: str,
    category: Category | None = None,
    user=None,
    status: str = Sample.Status.DRAFT,
    note: str = "",
    gap_ticket: GapTicket | None = None,
) -> Sample:
    """Create a sample and its first revision; ``gap_ticket`` records the evaluation gap
    it was written to close."""
    validate_sample_text(question, answer)
    check_category_in_profile(category, dataset)
    if gap_ticket is not None:
        check_category_in_profile(gap_ticket.category, dataset)
    sample = Sample.objects.create(
        dataset=dataset,
        category=category,
        gap_ticket=gap_ticket,
        question=question.strip(),
        answer=answer.strip(),
        status=status,
        author=user,
        updated_by=user,
    )
    _record_revision(sample, user=user, note=note or "created")
    return sample


def sample_update(
    *,
    sample_id: int,
    base_version: int,
    question: str,
    answer: str,
    category: Category | None,
    user,
    note: str = "",
) -> Sample:
    """Save new content if nobody saved since ``base_version``; otherwise keep it aside.

    The guarded UPDATE (``WHERE version = base_version``) is what makes two racing saves
    safe on every database: exactly one matches the row. The loser's text is stored as a
    :class:`StaleEdit` (outside the failed transaction, so it survives) and
    :class:`StaleEditError` carries both versions to the caller. An approved sample whose
    content changes goes back to review.
    """
    validate_sample_text(question, answer)
    check_category_in_profile(category, Dataset.objects.get(samples__pk=sample_id))
    question, answer = question.strip(), answer.strip()
    saved = _apply_update(sample_id, base_version, question, answer, category, user, note)
    if saved is not None:
        return saved
    stale = StaleEdit.objects.create(
        sample_id=sample_id,
        author=user,
        base_version=base_version,
        question=question,
        answer=answer,
        category=category,
    )
    current = Sample.objects.select_related("dataset", "category", "updated_by").get(
        pk=sample_id
    )
    raise StaleEditError(current=current, stale_edit=stale)


@transaction.atomic
def _apply_update(sample_id, base_version, question, answer, category, user, note):
    sample = Sample.objects.select_related("dataset").get(pk=sample_id)
    next_status = sample.status
    # An approval covers the content it saw: a changed text or category needs a new review
    # (as a code review dismisses a stale approval).
    if sample.status == Sample.Status.APPROVED and (
        question != sample.question
        or answer != sample.answer
        or (category.pk if category else None) != sample.category_id
    ):
        next_status = Sample.Status.IN_REVIEW
    won = Sample.objects.filter(pk=sample_id, version=base_version).update(
        question=question,
        answer=answer,
        category=category,
        status=next_status,
        version=F("version") + 1,
        updated_by=user,
        updated_at=timezone.now(),
    )
    if not won:
        return None
    sample.refresh_from_db()
    _record_revision(sample, user=user, note=note)
    return sample


def stale_edit_resolve(*, stale_edit: StaleEdit) -> None:
    if stale_edit.resolved_at is None:
        stale_edit.resolved_at = timezone.now()
        stale_edit.save(update_fields=["resolved_at"])


def sample_restore(*, sample_id: int, revision_number: int, base_version: int, user) -> Sample:
    """Bring back an old revision's content as a new revision."""
    revision = SampleRevision.objects.get(sample_id=sample_id, number=revision_number)
    return sample_update(
        sample_id=sample_id,
        base_version=base_version,
        question=revision.question,
        answer=revision.answer,
        category=revision.category,
        user=user,
        note=f"restored revision {revision_number}",
    )


def _locked(sample: Sample) -> Sample:
    return Sample.objects.select_for_update().select_related("dataset").get(pk=sample.pk)


def _transition(sample: Sample, *, allowed_from: set[str], to: str, user, kind: str, body: str):
    if sample.status not in allowed_from:
        raise TransitionError(
            f"A sample that is {sample.get_status_display().lower()} cannot be "
            f"{dict(Comment.Kind.choices)[kind].lower()}."
        )
    sample.status = to
    sample.updated_at = timezone.now()
    sample.save(update_fields=["status", "updated_at"])
    Comment.objects.create(
        sample=sample, author=user, kind=kind, body=body.strip(), sample_version=sample.version
    )
    return sample


@transaction.atomic
def sample_submit(*, sample: Sample, user, body: str = "") -> Sample:
    """Draft → in review."""
    sample = _locked(sample)
    validate_sample_text(sample.question, sample.answer)
    return _transition(
        sample, allowed_from={Sample.Status.DRAFT}, to=Sample.Status.IN_REVIEW,
        user=user, kind=Comment.Kind.SUBMITTED, body=body,
    )


@transaction.atomic
def sample_request_changes(*, sample: Sample, user, body: str) -> Sample:
    """In review → draft, with a comment saying what to change."""
    if not body.strip():
        raise TransitionError("Say what should change: the comment is required.")
    sample = _locked(sample)
    return _transition(
        sample, allowed_from={Sample.Status.IN_REVIEW}, to=Sample.Status.DRAFT,
        user=user, kind=Comment.Kind.CHANGES_REQUESTED, body=body,
    )


def content_problems(sample: Sample) -> list[str]:
    """What approval will refuse whoever reviews: the word limits, a missing category,
    unmerged edits. Shown before *Submit for review* so the author fixes them first."""
    problems = []
    dataset = sample.dataset
    words = count_words(sample.answer)
    if not dataset.words_within_limits(words):
        problems.append(
            f"The answer has {words} words; this dataset needs "
            f"{dataset.min_words}–{dataset.max_words}."
        )
    if dataset.kind == Dataset.Kind.VALUES_TARGETED and sample.category_id is None:
        problems.append("A values-targeted sample needs a category.")
    unmerged = sample.stale_edits.filter(resolved_at__isnull=True).count()
    if unmerged:
        problems.append(
            f"{unmerged} unmerged edit{'s wait' if unmerged > 1 else ' waits'} on this sample: "
            "merge or dismiss first."
        )
    return problems


def reviewer_problems(sample: Sample, user) -> list[str]:
    """Why ``user`` is not an independent reviewer of ``sample``: they wrote it, or saved a
    revision since it was submitted. A dataset that allows self-approval waives both."""
    if sample.dataset.allow_self_approval:
        return []
    problems = []
    if sample.author_id == user.pk:
        problems.append("You wrote this sample; another curator must approve it.")
    base = review_base_version(sample)
    revised = sample.revisions.filter(number__gt=base, author=user).order_by("number")
    numbers = list(revised.values_list("number", flat=True))
    if numbers:
        listed = ", ".join(str(number) for number in numbers)
        problems.append(
            f"You saved revision{'s' * (len(numbers) > 1)} {listed} after it was submitted "
            f"(version {base}); another curator must approve it."
        )
    return problems


def approval_problems(sample: Sample, user) -> list[str]:
    """Why ``user`` may not approve ``sample`` now (empty when they may)."""
    return reviewer_problems(sample, user) + content_problems(sample)


@transaction.atomic
def sample_approve(
    *, sample: Sample, user, body: str = "", version: int | None = None
) -> Sample:
    """In review → approved, by an independent reviewer, within the word limits, with no
    unmerged edit waiting. ``version`` is the version the reviewer read: if the sample
    changed since, the approval is refused (it would approve text nobody reviewed)."""
    sample = _locked(sample)
    in_review = sample.status == Sample.Status.IN_REVIEW
    if in_review and version is not None and version != sample.version:
        raise TransitionError(
            f"The sample changed while you reviewed it: you read version {version}, it is now "
            f"version {sample.version}. Review the changes, then approve again."
        )
    problems = approval_problems(sample, user)
    if problems:
        raise TransitionError(" ".join(problems))
    return _transition(
        sample, allowed_from={Sample.Status.IN_REVIEW}, to=Sample.Status.APPROVED,
        user=user, kind=Comment.Kind.APPROVED, body=body,
    )


@transaction.atomic
def sample_archive(*, sample: Sample, user, body: str = "") -> Sample:
    sample = _locked(sample)
    return _transition(
        sample,
        allowed_from={Sample.Status.DRAFT, Sample.Status.IN_REVIEW, Sample.Status.APPROVED},
        to=Sample.Status.ARCHIVED, user=user, kind=Comment.Kind.ARCHIVED, body=body,
    )


@transaction.atomic
def sample_reopen(*, sample: Sample, user, body: str = "") -> Sample:
    """Archived → draft."""
    sample = _locked(sample)
    return _transition(
        sample, allowed_from={Sample.Status.ARCHIVED}, to=Sample.Status.DRAFT,
        user=user, kind=Comment.Kind.REOPENED, body=body,
    )


def comment_add(*, sample: Sample, user, body: str) -> Comment:
    if not body.strip():
        raise CurationError("The comment is empty.")
    if len(body) > MAX_TEXT_CHARS:
        raise CurationError(f"Comments are limited to {MAX_TEXT_CHARS:,} characters.")
    return Comment.objects.create(
        sample=sample, author=user, body=body.strip(), sample_version=sample.version
    )


# --- snapshots -------------------------------------------------------------------------


def snapshot_payload(dataset: Dataset) -> dict:
    """The canonical content of a snapshot: only what a fine-tune uses, and the position
    versions its samples were written for, no database ids, in a stable order — so the same
    approved content under the same positions always hashes the same."""
    samples = (
        dataset.samples.approved()
        .select_related("category")
        .order_by("category__order", "category__name", "question", "answer")
    )
    items = [
        {
            "category": sample.category.name if sample.category else None,
            "question": sample.question,
            "answer": sample.answer,
        }
        for sample in samples
    ]
    return {
        "dataset": dataset.name,
        "kind": dataset.kind,
        "system_message": dataset.system_message,
        "items": items,
        "positions": position_records(s.category for s in samples if s.category),
    }


@transaction.atomic
def snapshot_create(*, dataset: Dataset, user=None, label: str = "") -> Snapshot:
    """Freeze the dataset's approved samples into an immutable, content-hashed snapshot.

    Refuses (:class:`UnchangedSnapshotError`, carrying it) when the content is what the
    dataset's latest snapshot already holds: a duplicate would only make two names for
    one training set.
    """
    payload = snapshot_payload(dataset)
    if not payload["items"]:
        raise EmptySnapshotError("This dataset has no approved samples to snapshot.")
    content = canonical_json(payload)
    content_hash = sha256_hex(content)
    latest = dataset.snapshots.defer("content").order_by("-created_at", "-pk").first()
    if latest is not None and latest.content_hash == content_hash:
        raise UnchangedSnapshotError(latest)
    return Snapshot.objects.create(
        dataset=dataset,
        label=label.strip(),
        content=content,
        content_hash=content_hash,
        sample_count=len(payload["items"]),
        word_count=sum(count_words(item["answer"]) for item in payload["items"]),
        byte_count=sum(sample_bytes(item["question"], item["answer"]) for item in payload["items"]),
        created_by=user,
    )


def snapshot_chat_examples(snapshot: Snapshot) -> list[dict]:
    """The snapshot as OpenAI chat-format examples (what fine-tunes consume)."""
    payload = snapshot.payload()
    system = payload.get("system_message") or ""
    examples = []
    for item in payload["items"]:
        messages = [{"role": "system", "content": system}] if system else []
        messages += [
            {"role": "user", "content": item["question"]},
            {"role": "assistant", "content": item["answer"]},
        ]
        examples.append({"messages": messages})
    return examples


def snapshot_jsonl(snapshot: Snapshot) -> str:
    return "".join(
        json.dumps(example, ensure_ascii=False) + "\n"
        for example in snapshot_chat_examples(snapshot)
    )


def snapshot_csv(snapshot: Snapshot) -> str:
    buffer = io.StringIO()
    writer = csvsafe.writer(buffer)
    writer.writerow(["category", "question", "answer", "words"])
    for item in snapshot.items():
        writer.writerow(
            [item["category"] or "", item["question"], item["answer"], count_words(item["answer"])]
        )
    return buffer.getvalue()
