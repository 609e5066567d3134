"""Curation reads that are more than one queryset call: listings, coverage, revision diffs."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from curation.models import (
    Category,
    Comment,
    Dataset,
    GapTicket,
    PositionVersion,
    Sample,
    SampleRevision,
    Snapshot,
    StaleEdit,
    count_words,
    sample_bytes,
)

Status = Sample.Status


def _status_counts(prefix: str = "") -> dict[str, Count]:
    """Conditional counts of samples per status; ``prefix`` is the path to Sample."""
    path = f"{prefix}__" if prefix else ""
    pk = f"{prefix}__pk" if prefix else "pk"
    return {
        f"n_{status}": Count(pk, filter=Q(**{f"{path}status": status})) for status in Status.values
    }


# --- datasets and samples ---------------------------------------------------------------


def datasets_with_counts() -> QuerySet[Dataset]:
    """Datasets with their sample counts per status and in total, in one query."""
    return Dataset.objects.annotate(n_total=Count("samples"), **_status_counts("samples"))


def dataset_status_counts(dataset: Dataset) -> dict[str, int]:
    """How many of the dataset's samples are in each status, plus ``total``."""
    counts = dataset.samples.aggregate(total=Count("pk"), **_status_counts())
    return {key.removeprefix("n_"): value for key, value in counts.items()}


@dataclass(frozen=True)
class SampleFilters:
    """What the dataset page narrows its sample list by (all optional)."""

    category: int | None = None
    status: str = ""
    author: int | None = None
    text: str = ""

    @property
    def active(self) -> bool:
        return bool(self.category or self.status or self.author or self.text)


def sample_list(dataset: Dataset, filters: SampleFilters | None = None) -> QuerySet[Sample]:
    """The dataset's samples, newest change first, filtered and searched."""
    filters = filters or SampleFilters()
    samples = dataset.samples.select_related("category", "author", "updated_by")
    if filters.category:
        samples = samples.filter(category_id=filters.category)
    if filters.status:
        samples = samples.filter(status=filters.status)
    if filters.author:
        samples = samples.filter(author_id=filters.author)
    if filters.text:
        samples = samples.search(filters.text)
    return samples


def dataset_authors(dataset: Dataset) -> QuerySet:
    """Users who wrote at least one sample of the dataset (for the author filter)."""
    return get_user_model().objects.filter(samples__dataset=dataset).distinct().order_by("username")


def open_stale_edits(sample: Sample) -> QuerySet[StaleEdit]:
    """Refused edits of ``sample`` nobody has merged or dismissed yet."""
    return sample.stale_edits.filter(resolved_at__isnull=True).select_related("author", "category")


def sample_revisions(sample: Sample) -> QuerySet[SampleRevision]:
    return sample.revisions.select_related("author", "category")


# The status changes after which a sample is in review: submitted, or approved and then
# edited (which sends it back). Their comment records the version the review starts from.
REVIEW_STARTS = (Comment.Kind.SUBMITTED, Comment.Kind.APPROVED)


def review_base_version(sample: Sample) -> int:
    """The version the current review started from: the one submitted (or, for an
    approved sample edited since, the one approved). A sample created or imported
    straight into review starts from its first revision."""
    started = (
        sample.comments.filter(kind__in=REVIEW_STARTS)
        .order_by("-created_at", "-pk")
        .values_list("sample_version", flat=True)
        .first()
    )
    return started or 1


@dataclass(frozen=True)
class ReviewChanges:
    """What changed in an in-review sample since it was submitted, and who changed it."""

    base_version: int
    current_version: int
    revisions: list[SampleRevision]  # saved after the base, oldest first
    diff: RevisionDiff | None  # base → current; None when nothing was saved since

    @property
    def changed(self) -> bool:
        return bool(self.revisions)

    @property
    def reviser_ids(self) -> set[int]:
        return {revision.author_id for revision in self.revisions if revision.author_id}


def review_changes(sample: Sample) -> ReviewChanges:
    """The revisions saved since the review started, and the diff they add up to."""
    base = review_base_version(sample)
    revisions = list(
        sample_revisions(sample).filter(number__gte=base).order_by("number")
    )
    since = [revision for revision in revisions if revision.number > base]
    diff = None
    if since and revisions[0].number == base:
        diff = revision_diff(revisions[0], since[-1])
    return ReviewChanges(
        base_version=base, current_version=sample.version, revisions=since, diff=diff
    )


def dataset_snapshots(dataset: Dataset) -> QuerySet[Snapshot]:
    return dataset.snapshots.select_related("created_by").defer("content")


# --- coverage ---------------------------------------------------------------------------


@dataclass
class CoverageRow:
    """One category's progress towards its target in a dataset."""

    name: str
    target: int
    approved: int = 0
    in_review: int = 0
    draft: int = 0
    words: int = 0
    bytes: int = 0
    category_id: int | None = None
    open_gaps: int = 0  # open gap tickets on the category (tickets are not per dataset)

    @property
    def below_target(self) -> bool:
        return self.approved < self.target

    @property
    def percent(self) -> int:
        """Approved as a share of target, capped at 100 for the progress bar."""
        if self.target <= 0:
            return 100
        return min(100, round(100 * self.approved / self.target))


@dataclass
class Coverage:
    rows: list[CoverageRow] = field(default_factory=list)
    total: CoverageRow = field(default_factory=lambda: CoverageRow(name="Total", target=0))


def dataset_coverage(dataset: Dataset) -> Coverage:
    """Approved / in-review / draft counts per active category against its target, with
    the words of approved answers, their size (``sample_bytes``: question + answer, as
    snapshots count it) and the category's open gap tickets.
    Two queries whatever the size.

    Word counts follow the PALMS rule (whitespace tokens), which SQL cannot express
    portably, so approved answers are counted in Python; a dataset is small (PALMS: 80).
    Approved samples without a category, or in an archived one, get an "Uncategorised"
    row so the totals still add up to the dataset.
    """
    in_dataset = Q(samples__dataset=dataset)
    # A subquery, not a second Count over a join: two joins would multiply the counts.
    open_gaps = (
        GapTicket.objects.filter(category=OuterRef("pk"), status=GapTicket.Status.OPEN)
        .order_by()
        .values("category")
        .annotate(n=Count("pk"))
        .values("n")
    )
    categories = Category.objects.active().annotate(
        n_open_gaps=Coalesce(Subquery(open_gaps, output_field=IntegerField()), Value(0)),
        **{
            f"n_{status}": Count("samples", filter=in_dataset & Q(samples__status=status))
            for status in (Status.APPROVED, Status.IN_REVIEW, Status.DRAFT)
        },
    )
    rows = {
        category.pk: CoverageRow(
            name=category.name,
            target=category.target_count,
            approved=category.n_approved,
            in_review=category.n_in_review,
            draft=category.n_draft,
            category_id=category.pk,
            open_gaps=category.n_open_gaps,
        )
        for category in categories
    }
    other = CoverageRow(name="Uncategorised", target=0)
    samples = dataset.samples.exclude(status=Status.ARCHIVED).values_list(
        "category_id", "status", "question", "answer"
    )
    for category_id, status, question, answer in samples:
        row = rows.get(category_id)
        if row is None:
            row = other
            setattr(other, status, getattr(other, status) + 1)
        if status == Status.APPROVED:
            row.words += count_words(answer)
            row.bytes += sample_bytes(question, answer)
    coverage = Coverage(rows=list(rows.values()))
    if other.approved or other.in_review or other.draft:
        coverage.rows.append(other)
    for row in coverage.rows:
        for name in ("target", "approved", "in_review", "draft", "words", "bytes", "open_gaps"):
            setattr(coverage.total, name, getattr(coverage.total, name) + getattr(row, name))
    return coverage


# --- revision diffs ---------------------------------------------------------------------

_TOKENS = re.compile(r"\s+|[^\s]+")


@dataclass(frozen=True)
class DiffPart:
    """A run of text that is the same in both revisions, only in the new one, or only
    in the old one."""

    kind: str  # "equal" | "insert" | "delete"
    text: str


@dataclass(frozen=True)
class RevisionDiff:
    old: SampleRevision
    new: SampleRevision
    question: list[DiffPart]
    answer: list[DiffPart]
    category_changed: bool

    @property
    def unchanged(self) -> bool:
        return not self.category_changed and all(
            part.kind == "equal" for part in self.question + self.answer
        )

    @property
    def question_changed(self) -> bool:
        return any(part.kind != "equal" for part in self.question)

    @property
    def answer_changed(self) -> bool:
        return any(part.kind != "equal" for part in self.answer)


def word_diff(old: str, new: str) -> list[DiffPart]:
    """Word-level diff of two texts: whitespace runs are tokens too, so joining the
    "equal" and "insert" parts gives back ``new`` exactly, and "equal" + "delete" ``old``."""
    a, b = _TOKENS.findall(old), _TOKENS.findall(new)
    parts: list[DiffPart] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op == "equal":
            parts.append(DiffPart("equal", "".join(a[a1:a2])))
            continue
        if op in ("delete", "replace"):
            parts.append(DiffPart("delete", "".join(a[a1:a2])))
        if op in ("insert", "replace"):
            parts.append(DiffPart("insert", "".join(b[b1:b2])))
    return parts


def revision_diff(rev_a: SampleRevision, rev_b: SampleRevision) -> RevisionDiff:
    """What changed from the older of two revisions to the newer one."""
    old, new = sorted((rev_a, rev_b), key=lambda rev: rev.number)
    return RevisionDiff(
        old=old,
        new=new,
        question=word_diff(old.question, new.question),
        answer=word_diff(old.answer, new.answer),
        category_changed=old.category_id != new.category_id,
    )


@dataclass(frozen=True)
class PositionChange:
    """One version of a category's position and what changed from the version before."""

    version: PositionVersion
    position: list[DiffPart]
    guidance: list[DiffPart]

    @property
    def position_changed(self) -> bool:
        return any(part.kind != "equal" for part in self.position)

    @property
    def guidance_changed(self) -> bool:
        return any(part.kind != "equal" for part in self.guidance)


def position_history(category: Category) -> list[PositionChange]:
    """Every version of the category's position, newest first, each with its word diff
    from the one before (version 1 against nothing)."""
    versions = category.position_versions.select_related("author").order_by("number")
    changes, before = [], PositionVersion(position="", guidance="")
    for version in versions:
        changes.append(
            PositionChange(
                version=version,
                position=word_diff(before.position, version.position),
                guidance=word_diff(before.guidance, version.guidance),
            )
        )
        before = version
    return changes[::-1]
