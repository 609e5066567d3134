"""Every rule of the curation services, against the real database."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.db import IntegrityError

from curation import services
from curation.models import (
    MAX_TEXT_CHARS,
    Category,
    Comment,
    Dataset,
    ImmutableError,
    Sample,
    SampleRevision,
    Snapshot,
    StaleEdit,
    canonical_json,
    count_words,
    sha256_hex,
)
from curation.services import (
    CurationError,
    EmptySnapshotError,
    StaleEditError,
    TransitionError,
    UnchangedSnapshotError,
)
from tests.factories import CategoryFactory, DatasetFactory, words

pytestmark = pytest.mark.django_db

S = Sample.Status


@pytest.fixture
def category():
    return services.category_create(name="Health", position="Suggest seeing a professional.")


@pytest.fixture
def dataset(curator):
    return services.dataset_create(name="Values", user=curator)


def new_sample(dataset, user, *, category=None, question="How do I cope?", n_words=60, **kw):
    return services.sample_create(
        dataset=dataset, question=question, answer=words(n_words), category=category,
        user=user, **kw,
    )


def in_review(dataset, author, category, **kw):
    sample = new_sample(dataset, author, category=category, **kw)
    return services.sample_submit(sample=sample, user=author)


def approved(dataset, author, reviewer, category, **kw):
    sample = in_review(dataset, author, category, **kw)
    return services.sample_approve(sample=sample, user=reviewer)


# --- categories ------------------------------------------------------------------------


def test_palms_preset_loads_eight_categories_and_is_idempotent():
    assert services.load_palms_preset() == (8, 0)
    assert services.load_palms_preset() == (0, 8)
    assert Category.objects.count() == 8
    assert list(Category.objects.values_list("order", flat=True)) == list(range(8))


def test_reloading_the_preset_keeps_curator_edits():
    services.load_palms_preset()
    health = Category.objects.get(name="Health, Physical and Mental")
    services.category_update(
        category=health, name=health.name, position="Our own position.", guidance="Be brief.",
        target_count=25,
    )
    services.load_palms_preset()
    health.refresh_from_db()
    assert (health.position, health.guidance, health.target_count) == (
        "Our own position.", "Be brief.", 25,
    )
    assert Category.objects.count() == 8


def test_category_create_appends_with_unique_slug():
    first = services.category_create(name="Relationships", position="Respect autonomy.")
    second = services.category_create(name="Relationships!", position="Respect autonomy.")
    assert (first.order, second.order) == (0, 1)
    assert first.slug == "relationships"
    assert second.slug == "relationships-2"


@pytest.mark.parametrize(
    ("name", "position", "message"),
    [("  ", "x", "needs a name"), ("Name", " ", "needs a position")],
)
def test_category_needs_name_and_position(name, position, message):
    with pytest.raises(CurationError, match=message):
        services.category_create(name=name, position=position)


def test_category_names_are_unique_ignoring_case(category):
    with pytest.raises(CurationError, match="already exists"):
        services.category_create(name="HEALTH", position="x")
    other = services.category_create(name="Politics", position="x")
    with pytest.raises(CurationError, match="already exists"):
        services.category_update(
            category=other, name="health", position="x", guidance="", target_count=1
        )


def test_category_reorder_sets_order_and_needs_every_id_once():
    a, b, c = (services.category_create(name=n, position="x") for n in "ABC")
    services.category_reorder(ordered_ids=[c.pk, a.pk, b.pk])
    assert list(Category.objects.values_list("name", flat=True)) == ["C", "A", "B"]
    for bad in ([c.pk, a.pk], [a.pk, a.pk, b.pk], [a.pk, b.pk, c.pk, 999]):
        with pytest.raises(CurationError, match="every category of the profile exactly once"):
            services.category_reorder(ordered_ids=bad)
    assert list(Category.objects.values_list("name", flat=True)) == ["C", "A", "B"]


def test_category_move_up_and_down():
    a, b, c = (services.category_create(name=n, position="x") for n in "ABC")
    services.category_move(category=c, offset=-1)
    assert list(Category.objects.values_list("name", flat=True)) == ["A", "C", "B"]
    services.category_move(category=a, offset=-1)  # already first: stays
    assert list(Category.objects.values_list("name", flat=True)) == ["A", "C", "B"]


def test_category_archive_and_restore(category):
    services.category_archive(category=category)
    category.refresh_from_db()
    assert category.is_archived
    assert not Category.objects.active().exists()
    services.category_restore(category=category)
    category.refresh_from_db()
    assert not category.is_archived
    assert Category.objects.active().get() == category


# --- datasets --------------------------------------------------------------------------


def test_dataset_defaults_to_palms_word_limits(curator):
    dataset = services.dataset_create(name="D", user=curator)
    assert (dataset.min_words, dataset.max_words) == (40, 340)
    assert dataset.kind == Dataset.Kind.VALUES_TARGETED
    assert dataset.created_by == curator


@pytest.mark.parametrize(("low", "high"), [(0, 10), (50, 40)])
def test_dataset_word_limits_must_be_ordered(low, high):
    with pytest.raises(CurationError, match="Word limits"):
        services.dataset_create(name="D", min_words=low, max_words=high)


def test_dataset_update_checks_limits_names_and_fields(dataset):
    services.dataset_create(name="Other")
    with pytest.raises(CurationError, match="Word limits"):
        services.dataset_update(dataset=Dataset.objects.get(pk=dataset.pk), min_words=400)
    with pytest.raises(CurationError, match="already exists"):
        services.dataset_update(dataset=Dataset.objects.get(pk=dataset.pk), name="other")
    with pytest.raises(CurationError, match="Unknown dataset fields: colour"):
        services.dataset_update(dataset=dataset, colour="red")
    services.dataset_update(dataset=dataset, min_words=10, max_words=20, kind="control")
    dataset.refresh_from_db()
    assert (dataset.min_words, dataset.max_words, dataset.kind) == (10, 20, "control")


def test_database_refuses_inverted_word_limits(dataset):
    with pytest.raises(IntegrityError):
        Dataset.objects.filter(pk=dataset.pk).update(min_words=500)


# --- samples, revisions, concurrency ----------------------------------------------------


def test_sample_create_records_first_revision(dataset, curator, category):
    sample = services.sample_create(
        dataset=dataset, question="  Q?  ", answer=" A ", category=category, user=curator
    )
    assert (sample.question, sample.answer, sample.version, sample.status) == (
        "Q?", "A", 1, S.DRAFT,
    )
    revision = sample.revisions.get()
    assert (revision.number, revision.author, revision.note) == (1, curator, "created")


@pytest.mark.parametrize(
    ("question", "answer", "message"),
    [
        ("   ", "answer", "question is empty"),
        ("x" * (MAX_TEXT_CHARS + 1), "answer", "limited to"),
        ("q", "x" * (MAX_TEXT_CHARS + 1), "limited to"),
    ],
)
def test_sample_text_rules(dataset, curator, question, answer, message):
    with pytest.raises(CurationError, match=message):
        services.sample_create(dataset=dataset, question=question, answer=answer, user=curator)
    assert not Sample.objects.exists()


def test_every_save_is_a_revision(dataset, curator, curator2, category):
    sample = new_sample(dataset, curator, category=category)
    for n, user in enumerate([curator2, curator, curator2], start=1):
        sample = services.sample_update(
            sample_id=sample.pk, base_version=n, question=f"Q{n}", answer=f"A{n}",
            category=category, user=user,
        )
    assert sample.version == 4
    revisions = list(sample.revisions.order_by("number"))
    assert [r.number for r in revisions] == [1, 2, 3, 4]
    assert [r.question for r in revisions[1:]] == ["Q1", "Q2", "Q3"]
    assert [r.author for r in revisions] == [curator, curator2, curator, curator2]
    assert sample.updated_by == curator2


def test_stale_save_is_refused_and_kept(dataset, curator, curator2, category):
    sample = new_sample(dataset, curator, category=category)
    services.sample_update(
        sample_id=sample.pk, base_version=1, question="First save", answer="mine",
        category=category, user=curator,
    )
    with pytest.raises(StaleEditError) as caught:
        services.sample_update(
            sample_id=sample.pk, base_version=1, question="Second save", answer="theirs",
            category=None, user=curator2,
        )
    error = caught.value
    assert error.current.question == "First save"
    assert error.current.version == 2
    kept = StaleEdit.objects.get()
    assert kept == error.stale_edit
    assert (kept.question, kept.answer, kept.author, kept.base_version) == (
        "Second save", "theirs", curator2, 1,
    )
    assert kept.resolved_at is None
    sample.refresh_from_db()
    assert (sample.question, sample.version) == ("First save", 2)
    assert sample.revisions.count() == 2
    services.stale_edit_resolve(stale_edit=kept)
    kept.refresh_from_db()
    assert kept.resolved_at is not None


def test_restore_creates_a_new_revision(dataset, curator, curator2, category):
    sample = new_sample(dataset, curator, category=category, question="Original")
    services.sample_update(
        sample_id=sample.pk, base_version=1, question="Changed", answer="x", category=None,
        user=curator2,
    )
    restored = services.sample_restore(
        sample_id=sample.pk, revision_number=1, base_version=2, user=curator
    )
    assert (restored.question, restored.answer, restored.category) == (
        "Original", words(60), category,
    )
    assert restored.version == 3
    latest = restored.revisions.first()
    assert (latest.number, latest.note, latest.author) == (3, "restored revision 1", curator)
    assert restored.revisions.count() == 3


def test_restore_from_a_stale_version_is_refused(dataset, curator, category):
    sample = new_sample(dataset, curator, category=category)
    services.sample_update(
        sample_id=sample.pk, base_version=1, question="v2", answer="x", category=None,
        user=curator,
    )
    with pytest.raises(StaleEditError):
        services.sample_restore(sample_id=sample.pk, revision_number=1, base_version=1,
                                user=curator)


def test_drafts_may_be_anything(dataset, curator):
    sample = services.sample_create(dataset=dataset, question="Short?", answer="", user=curator)
    assert sample.status == S.DRAFT
    assert not sample.within_limits
    assert sample.category is None
    long = services.sample_update(
        sample_id=sample.pk, base_version=1, question="Long?", answer=words(1000),
        category=None, user=curator,
    )
    assert long.word_count == 1000


# --- review transitions ----------------------------------------------------------------


def test_full_review_cycle(dataset, curator, curator2, category):
    sample = new_sample(dataset, curator, category=category)
    sample = services.sample_submit(sample=sample, user=curator, body="ready")
    assert sample.status == S.IN_REVIEW
    sample = services.sample_request_changes(sample=sample, user=curator2, body="Shorter.")
    assert sample.status == S.DRAFT
    sample = services.sample_submit(sample=sample, user=curator)
    sample = services.sample_approve(sample=sample, user=curator2, body="Good.")
    assert sample.status == S.APPROVED
    sample = services.sample_archive(sample=sample, user=curator2)
    assert sample.status == S.ARCHIVED
    sample = services.sample_reopen(sample=sample, user=curator)
    assert sample.status == S.DRAFT
    kinds = list(sample.comments.values_list("kind", flat=True))
    assert kinds == ["submitted", "changes_requested", "submitted", "approved", "archived",
                     "reopened"]
    assert sample.comments.get(kind="changes_requested").body == "Shorter."


ALLOWED = {
    "submit": {S.DRAFT},
    "request_changes": {S.IN_REVIEW},
    "approve": {S.IN_REVIEW},
    "archive": {S.DRAFT, S.IN_REVIEW, S.APPROVED},
    "reopen": {S.ARCHIVED},
}


@pytest.mark.parametrize("step", sorted(ALLOWED))
@pytest.mark.parametrize("start", list(S))
def test_transition_matrix(dataset, curator, curator2, category, step, start):
    sample = new_sample(dataset, curator, category=category)
    Sample.objects.filter(pk=sample.pk).update(status=start)
    service = getattr(services, f"sample_{step}")
    if start in ALLOWED[step]:
        result = service(sample=sample, user=curator2, body="because")
        assert result.status != start
    else:
        with pytest.raises(TransitionError):
            service(sample=sample, user=curator2, body="because")
        sample.refresh_from_db()
        assert sample.status == start
        assert not sample.comments.exists()


def test_request_changes_needs_a_comment(dataset, curator, curator2, category):
    sample = in_review(dataset, curator, category)
    with pytest.raises(TransitionError, match="comment is required"):
        services.sample_request_changes(sample=sample, user=curator2, body="  ")


def test_author_cannot_approve_own_sample(dataset, curator, category):
    sample = in_review(dataset, curator, category)
    with pytest.raises(TransitionError, match="another curator must approve"):
        services.sample_approve(sample=sample, user=curator)
    sample.refresh_from_db()
    assert sample.status == S.IN_REVIEW


def test_self_approval_allowed_when_dataset_allows_it(dataset, curator, category):
    services.dataset_update(dataset=dataset, allow_self_approval=True)
    sample = in_review(dataset, curator, category)
    assert services.sample_approve(sample=sample, user=curator).status == S.APPROVED


@pytest.mark.parametrize("n_words", [39, 341])
def test_approval_refuses_answers_outside_word_limits(dataset, curator, curator2, category,
                                                      n_words):
    sample = in_review(dataset, curator, category, n_words=n_words)
    with pytest.raises(TransitionError, match=f"has {n_words} words"):
        services.sample_approve(sample=sample, user=curator2)


@pytest.mark.parametrize("n_words", [40, 340])
def test_approval_accepts_answers_at_the_limits(dataset, curator, curator2, category, n_words):
    sample = in_review(dataset, curator, category, n_words=n_words)
    assert services.sample_approve(sample=sample, user=curator2).status == S.APPROVED


def test_values_targeted_approval_needs_a_category(dataset, curator, curator2):
    sample = in_review(dataset, curator, None)
    with pytest.raises(TransitionError, match="needs a category"):
        services.sample_approve(sample=sample, user=curator2)
    control = services.dataset_create(name="Control", kind=Dataset.Kind.CONTROL)
    sample = in_review(control, curator, None)
    assert services.sample_approve(sample=sample, user=curator2).status == S.APPROVED


def test_editing_an_approved_sample_sends_it_back_to_review(dataset, curator, curator2,
                                                            category):
    sample = approved(dataset, curator, curator2, category)
    same = services.sample_update(
        sample_id=sample.pk, base_version=sample.version, question=sample.question,
        answer=sample.answer, category=category, user=curator,
    )
    assert same.status == S.APPROVED  # nothing changed in the text: stays approved
    edited = services.sample_update(
        sample_id=sample.pk, base_version=same.version, question=sample.question,
        answer=words(61), category=category, user=curator,
    )
    assert edited.status == S.IN_REVIEW


def test_comments(dataset, curator, category):
    sample = new_sample(dataset, curator, category=category)
    comment = services.comment_add(sample=sample, user=curator, body=" Looks fine ")
    assert (comment.body, comment.kind, comment.sample_version) == ("Looks fine", "comment", 1)
    with pytest.raises(CurationError, match="empty"):
        services.comment_add(sample=sample, user=curator, body=" ")
    with pytest.raises(CurationError, match="limited"):
        services.comment_add(sample=sample, user=curator, body="x" * (MAX_TEXT_CHARS + 1))
    assert Comment.objects.count() == 1


# --- snapshots -------------------------------------------------------------------------


@pytest.fixture
def approved_pair(dataset, curator, curator2, category):
    approved(dataset, curator, curator2, category, question="B question?", n_words=50)
    approved(dataset, curator, curator2, category, question="A question?", n_words=45)
    new_sample(dataset, curator, category=category, question="Draft question?")
    return dataset


def test_snapshot_holds_approved_samples_and_its_hash_matches(approved_pair, curator):
    snapshot = services.snapshot_create(dataset=approved_pair, user=curator, label=" v1 ")
    assert snapshot.content_hash == sha256_hex(snapshot.content)
    assert snapshot.hash_matches_content()
    assert snapshot.label == "v1"
    assert snapshot.sample_count == 2
    assert snapshot.word_count == 95
    assert [item["question"] for item in snapshot.items()] == ["A question?", "B question?"]
    assert snapshot.content == canonical_json(json.loads(snapshot.content))


def test_snapshot_of_nothing_approved_is_refused(dataset, curator, category):
    new_sample(dataset, curator, category=category)
    with pytest.raises(EmptySnapshotError):
        services.snapshot_create(dataset=dataset, user=curator)
    assert not Snapshot.objects.exists()


def test_snapshot_with_no_change_since_the_last_one_is_refused(approved_pair, curator, curator2):
    first = services.snapshot_create(dataset=approved_pair, user=curator, label="v1")
    # Drafts and comments are no change to the approved content.
    new_sample(approved_pair, curator, question="Another draft?")
    with pytest.raises(UnchangedSnapshotError, match="Nothing changed since") as caught:
        services.snapshot_create(dataset=approved_pair, user=curator2, label="v2")
    assert caught.value.snapshot == first
    assert first.short_hash in str(caught.value) and "(v1)" in str(caught.value)
    assert Snapshot.objects.count() == 1
    # Once the approved content changes, the next snapshot is taken.
    approved(approved_pair, curator, curator2, Category.objects.get(), question="C question?")
    second = services.snapshot_create(dataset=approved_pair, user=curator2, label="v2")
    assert second.content_hash != first.content_hash and second.sample_count == 3


def test_snapshot_choice_label_names_dataset_label_date_and_hash(approved_pair, curator):
    snapshot = services.snapshot_create(dataset=approved_pair, user=curator, label="v1")
    label = snapshot.choice_label
    for part in ("Values", "v1", snapshot.short_hash, "2 samples", "Values-targeted",
                 snapshot.created_at.strftime("%Y-")):
        assert part in label


def test_snapshot_is_immutable(approved_pair, curator):
    snapshot = services.snapshot_create(dataset=approved_pair, user=curator)
    snapshot.label = "changed"
    with pytest.raises(ImmutableError):
        snapshot.save()
    with pytest.raises(ImmutableError):
        snapshot.save(update_fields=["label"])
    with pytest.raises(ImmutableError):
        snapshot.delete()
    with pytest.raises(ImmutableError):
        Snapshot.objects.filter(pk=snapshot.pk).update(label="changed")
    with pytest.raises(ImmutableError):
        Snapshot.objects.all().delete()
    fresh = Snapshot.objects.get(pk=snapshot.pk)
    assert fresh.label == ""
    assert fresh.content_hash == snapshot.content_hash == sha256_hex(fresh.content)


def test_snapshot_does_not_follow_later_edits(approved_pair, curator, curator2):
    snapshot = services.snapshot_create(dataset=approved_pair, user=curator)
    before = snapshot.content
    for sample in approved_pair.samples.all():
        services.sample_update(
            sample_id=sample.pk, base_version=sample.version, question=sample.question + "!",
            answer="changed", category=None, user=curator2,
        )
    snapshot.refresh_from_db()
    assert snapshot.content == before
    assert snapshot.hash_matches_content()


def _fill(dataset, author, reviewer, categories, rows):
    for category_index, question in rows:
        approved(dataset, author, reviewer, categories[category_index], question=question)


def test_snapshot_hash_is_stable_regardless_of_ids_and_insertion_order(curator, curator2):
    rows = [(0, "Q one?"), (1, "Q two?"), (0, "Q three?"), (1, "Q four?")]

    first_cats = [CategoryFactory(name="Alpha", slug="alpha", order=0),
                  CategoryFactory(name="Beta", slug="beta", order=1)]
    first = services.dataset_create(name="Same", system_message="Be kind.")
    _fill(first, curator, curator2, first_cats, rows)
    hash_one = services.snapshot_create(dataset=first, user=curator).content_hash

    # Same content again under the same name, created in another order, with other ids,
    # by other people.
    services.dataset_update(dataset=first, name="Retired")
    second = services.dataset_create(name="Same", system_message="Be kind.")
    _fill(second, curator2, curator, first_cats, list(reversed(rows)))
    assert set(first.samples.values_list("pk", flat=True)).isdisjoint(
        second.samples.values_list("pk", flat=True)
    )
    hash_two = services.snapshot_create(dataset=second, user=curator2).content_hash
    assert hash_two == hash_one

    # One word different → a different hash.
    sample = second.samples.first()
    services.sample_update(
        sample_id=sample.pk, base_version=sample.version, question=sample.question,
        answer=sample.answer + " more", category=sample.category, user=curator2,
    )
    services.sample_approve(sample=Sample.objects.get(pk=sample.pk), user=curator)
    assert services.snapshot_create(dataset=second).content_hash != hash_one


def test_jsonl_export_is_openai_chat_format(approved_pair, curator):
    services.dataset_update(dataset=approved_pair, system_message="You are careful.")
    snapshot = services.snapshot_create(dataset=approved_pair, user=curator)
    lines = services.snapshot_jsonl(snapshot).splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert list(first) == ["messages"]
    assert first["messages"] == [
        {"role": "system", "content": "You are careful."},
        {"role": "user", "content": "A question?"},
        {"role": "assistant", "content": words(45)},
    ]


def test_jsonl_export_without_system_message(approved_pair, curator):
    snapshot = services.snapshot_create(dataset=approved_pair, user=curator)
    example = json.loads(services.snapshot_jsonl(snapshot).splitlines()[0])
    assert [m["role"] for m in example["messages"]] == ["user", "assistant"]
    assert services.snapshot_chat_examples(snapshot)[0] == example


def test_csv_export_shape(approved_pair, curator):
    snapshot = services.snapshot_create(dataset=approved_pair, user=curator)
    rows = list(csv.reader(io.StringIO(services.snapshot_csv(snapshot))))
    assert rows[0] == ["category", "question", "answer", "words"]
    assert rows[1] == ["Health", "A question?", words(45), "45"]
    assert len(rows) == 3


def test_revision_numbers_are_unique_per_sample(dataset, curator):
    sample = new_sample(dataset, curator)
    with pytest.raises(IntegrityError):
        SampleRevision.objects.create(sample=sample, number=1, question="q", answer="a")


def test_count_words_splits_on_whitespace():
    assert count_words("one  two\nthree\tfour ") == 4
    assert count_words("") == 0


def test_dataset_factory_is_usable():
    # The shared factories build valid rows for other test modules.
    assert DatasetFactory().min_words == 40
