"""Curation reads: revision diffs, coverage, sample filters, dataset counts."""

from __future__ import annotations

import pytest

from curation import services
from curation.models import Sample, SampleRevision
from curation.selectors import (
    DiffPart,
    SampleFilters,
    dataset_coverage,
    dataset_status_counts,
    datasets_with_counts,
    open_stale_edits,
    revision_diff,
    sample_list,
    word_diff,
)
from tests.factories import words

pytestmark = pytest.mark.django_db

S = Sample.Status


@pytest.fixture
def health():
    return services.category_create(name="Health", position="Care.", target_count=2)


@pytest.fixture
def politics():
    return services.category_create(name="Politics", position="Balance.", target_count=3)


@pytest.fixture
def dataset(curator):
    return services.dataset_create(name="Values", user=curator)


def make(dataset, user, category=None, *, question, n_words=50, status=S.DRAFT, reviewer=None):
    sample = services.sample_create(
        dataset=dataset, question=question, answer=words(n_words), category=category, user=user
    )
    if status in (S.IN_REVIEW, S.APPROVED, S.ARCHIVED):
        sample = services.sample_submit(sample=sample, user=user)
    if status == S.APPROVED:
        sample = services.sample_approve(sample=sample, user=reviewer)
    if status == S.ARCHIVED:
        sample = services.sample_archive(sample=sample, user=user)
    return sample


# --- word_diff / revision_diff ----------------------------------------------------------


def rebuild(parts, keep):
    return "".join(part.text for part in parts if part.kind in ("equal", keep))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("the quick brown fox", "the slow brown fox jumps"),
        ("", "all new text"),
        ("all gone", ""),
        ("line one\nline two", "line one\n\nline 2"),
        ("same", "same"),
    ],
)
def test_word_diff_rebuilds_both_texts(old, new):
    parts = word_diff(old, new)
    assert rebuild(parts, "delete") == old
    assert rebuild(parts, "insert") == new


def test_word_diff_marks_whole_words():
    assert word_diff("a b c", "a x c") == [
        DiffPart("equal", "a "),
        DiffPart("delete", "b"),
        DiffPart("insert", "x"),
        DiffPart("equal", " c"),
    ]


def test_identical_texts_have_only_equal_parts():
    assert all(part.kind == "equal" for part in word_diff("one two", "one two"))


def revision(number, question, answer, category=None):
    return SampleRevision(number=number, question=question, answer=answer, category=category)


def test_revision_diff_goes_from_older_to_newer_whatever_the_order():
    old = revision(1, "Why?", "because it is")
    new = revision(3, "Why not?", "because it is so")
    diff = revision_diff(new, old)
    assert (diff.old.number, diff.new.number) == (1, 3)
    assert rebuild(diff.question, "delete") == "Why?"
    assert rebuild(diff.question, "insert") == "Why not?"
    assert diff.answer[-1] == DiffPart("insert", " so")
    assert not diff.category_changed and not diff.unchanged


def test_revision_diff_notices_a_category_change(health, politics):
    diff = revision_diff(revision(1, "q", "a", health), revision(2, "q", "a", politics))
    assert diff.category_changed and not diff.unchanged


def test_revision_diff_of_equal_revisions_is_unchanged():
    assert revision_diff(revision(1, "q", "a"), revision(2, "q", "a")).unchanged


# --- coverage ---------------------------------------------------------------------------


def test_coverage_counts_per_category(dataset, curator, curator2, health, politics):
    make(dataset, curator, health, question="a", n_words=40, status=S.APPROVED, reviewer=curator2)
    make(dataset, curator, health, question="b", n_words=60, status=S.APPROVED, reviewer=curator2)
    make(dataset, curator, health, question="c", status=S.IN_REVIEW)
    make(dataset, curator, politics, question="d", status=S.DRAFT)
    make(dataset, curator, politics, question="e", status=S.ARCHIVED)
    coverage = dataset_coverage(dataset)
    rows = {row.name: row for row in coverage.rows}
    assert list(rows) == ["Health", "Politics"]
    health_row, politics_row = rows["Health"], rows["Politics"]
    assert (health_row.approved, health_row.in_review, health_row.draft) == (2, 1, 0)
    assert (health_row.words, health_row.bytes) == (
        100, len("a") + len(words(40)) + len("b") + len(words(60))
    )
    assert not health_row.below_target and health_row.percent == 100
    assert (politics_row.approved, politics_row.draft, politics_row.words) == (0, 1, 0)
    assert politics_row.below_target and politics_row.percent == 0
    total = coverage.total
    assert (total.target, total.approved, total.in_review, total.draft, total.words) == (
        5,
        2,
        1,
        1,
        100,
    )


def test_coverage_ignores_other_datasets_and_archived_categories(
    dataset, curator, curator2, health, politics
):
    other = services.dataset_create(name="Other", user=curator)
    make(other, curator, health, question="x", status=S.APPROVED, reviewer=curator2)
    services.category_archive(category=politics)
    coverage = dataset_coverage(dataset)
    assert [row.name for row in coverage.rows] == ["Health"]
    assert coverage.rows[0].approved == 0


def test_coverage_counts_bytes_not_characters(dataset, curator, curator2, health):
    sample = services.sample_create(
        dataset=dataset, question="q", answer=words(40, "été"), category=health, user=curator
    )
    services.sample_submit(sample=sample, user=curator)
    services.sample_approve(sample=sample, user=curator2)
    row = dataset_coverage(dataset).rows[0]
    assert row.bytes == 1 + len(words(40, "été").encode("utf-8")) > 1 + len(words(40, "été"))


def test_coverage_and_snapshots_count_words_and_bytes_the_same_way(
    dataset, curator, curator2, health
):
    for n, question in enumerate(["Où dormir ?", "Wie schläft man?"]):
        sample = services.sample_create(
            dataset=dataset, question=question, answer=words(40 + n, "naïve"), category=health,
            user=curator,
        )
        services.sample_submit(sample=sample, user=curator)
        services.sample_approve(sample=sample, user=curator2)
    snapshot = services.snapshot_create(dataset=dataset, user=curator)
    total = dataset_coverage(dataset).total
    assert (total.words, total.bytes) == (snapshot.word_count, snapshot.byte_count)
    assert snapshot.byte_count == sum(
        len(item["question"].encode()) + len(item["answer"].encode()) for item in snapshot.items()
    )


def test_coverage_has_a_row_for_uncategorised_samples(dataset, curator, health):
    control = services.dataset_create(name="Control", kind="control", user=curator)
    make(control, curator, None, question="free", status=S.DRAFT)
    coverage = dataset_coverage(control)
    assert [row.name for row in coverage.rows] == ["Health", "Uncategorised"]
    assert coverage.rows[1].draft == 1 and coverage.total.draft == 1


def test_coverage_takes_two_queries(
    dataset, curator, curator2, health, politics, django_assert_num_queries
):
    for n in range(6):
        make(
            dataset,
            curator,
            health if n % 2 else politics,
            question=f"q{n}",
            status=S.APPROVED,
            reviewer=curator2,
        )
    with django_assert_num_queries(2):
        dataset_coverage(dataset)


# --- listings ---------------------------------------------------------------------------


@pytest.fixture
def samples(dataset, curator, curator2, health, politics):
    return [
        make(dataset, curator, health, question="Sleep trouble?"),
        make(dataset, curator2, politics, question="Who should I vote for?", status=S.IN_REVIEW),
        make(
            dataset, curator, health, question="Feeling low", status=S.APPROVED, reviewer=curator2
        ),
    ]


def found(dataset, **filters):
    return {sample.question for sample in sample_list(dataset, SampleFilters(**filters))}


def test_sample_list_filters(dataset, samples, health, curator2):
    assert len(found(dataset)) == 3
    assert found(dataset, category=health.pk) == {"Sleep trouble?", "Feeling low"}
    assert found(dataset, status=S.IN_REVIEW) == {"Who should I vote for?"}
    assert found(dataset, author=curator2.pk) == {"Who should I vote for?"}
    assert found(dataset, text="vote") == {"Who should I vote for?"}
    assert found(dataset, text="WORD", category=health.pk, status=S.APPROVED) == {"Feeling low"}


def test_filters_know_when_they_are_active():
    assert not SampleFilters().active
    assert SampleFilters(text="x").active


def test_dataset_counts(dataset, samples):
    assert dataset_status_counts(dataset) == {
        "total": 3,
        "draft": 1,
        "in_review": 1,
        "approved": 1,
        "archived": 0,
    }
    listed = datasets_with_counts().get(pk=dataset.pk)
    assert (listed.n_total, listed.n_draft, listed.n_in_review, listed.n_approved) == (3, 1, 1, 1)


def test_open_stale_edits_leaves_out_resolved_ones(samples, curator):
    sample = samples[0]
    first = sample.stale_edits.create(base_version=1, question="q", answer="a", author=curator)
    second = sample.stale_edits.create(base_version=1, question="q", answer="b", author=curator)
    services.stale_edit_resolve(stale_edit=first)
    assert list(open_stale_edits(sample)) == [second]
