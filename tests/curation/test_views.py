"""The curator's browser pages, through the test client, with and without htmx."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from curation import services
from curation.models import (
    Category,
    Comment,
    Dataset,
    PendingImport,
    Sample,
    SampleRevision,
    Snapshot,
    StaleEdit,
)
from tests.factories import words

pytestmark = pytest.mark.django_db

S = Sample.Status
HTMX = {"HTTP_HX_REQUEST": "true"}


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def category():
    return services.category_create(name="Health", position="Suggest seeing a professional.")


@pytest.fixture
def other_category():
    return services.category_create(name="Relationships", position="Respect everyone.")


@pytest.fixture
def dataset(curator):
    return services.dataset_create(name="Values", user=curator)


def new_sample(dataset, user, *, category=None, question="How do I cope?", n_words=60, **kw):
    return services.sample_create(
        dataset=dataset,
        question=question,
        answer=words(n_words),
        category=category,
        user=user,
        **kw,
    )


def in_review(dataset, author, category, **kw):
    return services.sample_submit(
        sample=new_sample(dataset, author, category=category, **kw), user=author
    )


def approved(dataset, author, reviewer, category, **kw):
    return services.sample_approve(sample=in_review(dataset, author, category, **kw), user=reviewer)


@pytest.fixture
def sample(dataset, curator, category):
    return new_sample(dataset, curator, category=category)


@pytest.fixture
def snapshot(dataset, curator, curator2, category):
    approved(dataset, curator, curator2, category)
    return services.snapshot_create(dataset=dataset, user=curator, label="first")


def url(name, *args, **query):
    base = reverse(f"curation:{name}", args=args)
    if query:
        base += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return base


def texts(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def edit_data(sample, **overrides):
    data = {
        "question": sample.question,
        "answer": sample.answer,
        "category": sample.category_id or "",
        "version": sample.version,
        "note": "",
    }
    data.update(overrides)
    return data


# --- who may see and do what ------------------------------------------------------------


@pytest.fixture
def pages(dataset, sample, snapshot, category):
    """Every GET page, split into read pages (researchers too) and write pages (curators)."""
    stale = StaleEdit.objects.create(sample=sample, base_version=1, question="q", answer="a")
    read = [
        url("category-list"),
        url("dataset-list"),
        url("dataset-detail", dataset.pk),
        url("dataset-coverage", dataset.pk),
        url("sample-detail", sample.pk),
        url("sample-history", sample.pk),
        url("sample-diff", sample.pk, a=1, b=1),
        url("snapshot-list", dataset.pk),
        url("snapshot-detail", snapshot.pk),
        url("snapshot-download", snapshot.pk, format="jsonl"),
        url("snapshot-download", snapshot.pk, format="csv"),
        url("word-count", text="a+b", dataset=dataset.pk),
    ]
    write = [
        url("category-create"),
        url("category-edit", category.pk),
        url("dataset-create"),
        url("dataset-edit", dataset.pk),
        url("sample-create", dataset.pk),
        url("sample-edit", sample.pk),
        url("sample-edit", sample.pk, stale=stale.pk),
        url("dataset-import", dataset.pk),
    ]
    posts = [
        url("category-create"),
        url("category-edit", category.pk),
        url("category-move", category.pk),
        url("category-archive", category.pk),
        url("category-restore", category.pk),
        url("preset-load"),
        url("dataset-create"),
        url("dataset-edit", dataset.pk),
        url("sample-create", dataset.pk),
        url("sample-edit", sample.pk),
        url("sample-submit", sample.pk),
        url("sample-request-changes", sample.pk),
        url("sample-approve", sample.pk),
        url("sample-archive", sample.pk),
        url("sample-reopen", sample.pk),
        url("sample-comment", sample.pk),
        url("sample-restore", sample.pk),
        url("stale-edit-resolve", stale.pk),
        url("dataset-import", dataset.pk),
        url("snapshot-create", dataset.pk),
    ]
    return {"read": read, "write": write, "posts": posts}


def test_curator_can_open_every_page(curator_client, pages):
    for page in pages["read"] + pages["write"]:
        assert curator_client.get(page).status_code == 200, page


def test_admin_can_open_every_page(admin_client_, pages):
    for page in pages["read"] + pages["write"]:
        assert admin_client_.get(page).status_code == 200, page


def test_researcher_reads_but_changes_nothing(researcher_client, pages, sample):
    for page in pages["read"]:
        assert researcher_client.get(page).status_code == 200, page
    for page in pages["write"]:
        assert researcher_client.get(page).status_code == 403, page
    before = (Sample.objects.count(), Category.objects.count(), Snapshot.objects.count())
    for page in pages["posts"]:
        response = researcher_client.post(page, {"body": "x", "direction": "up"})
        assert response.status_code == 403, page
    assert (Sample.objects.count(), Category.objects.count(), Snapshot.objects.count()) == before
    assert Sample.objects.get(pk=sample.pk).status == S.DRAFT


def test_researcher_sees_no_write_controls(researcher_client, sample):
    html = researcher_client.get(url("sample-detail", sample.pk)).content.decode()
    assert "Submit for review" not in html
    assert url("sample-edit", sample.pk) not in html
    assert url("sample-comment", sample.pk) not in html


@pytest.mark.parametrize("persona", ["rater_client", "outsider_client"])
def test_raters_and_users_without_role_get_403(request, persona, pages):
    client = request.getfixturevalue(persona)
    for page in pages["read"] + pages["write"]:
        assert client.get(page).status_code == 403, page
    for page in pages["posts"]:
        assert client.post(page).status_code == 403, page


def test_anonymous_is_sent_to_login(client, pages):
    for page in pages["read"] + pages["write"]:
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"].startswith("/accounts/login/?next="), page
    for page in pages["posts"]:
        assert client.post(page).status_code == 302, page


def test_mutations_refuse_get(curator_client, sample, dataset):
    for page in [
        url("sample-approve", sample.pk),
        url("snapshot-create", dataset.pk),
        url("preset-load"),
    ]:
        assert curator_client.get(page).status_code == 405


# --- categories -------------------------------------------------------------------------


def test_category_list_shows_order_and_targets(curator_client, category, other_category):
    html = curator_client.get(url("category-list")).content.decode()
    assert html.index("Health") < html.index("Relationships")
    assert ">10<" in html
    assert "Load PALMS preset" in html


def test_create_category(curator_client):
    response = curator_client.post(
        url("category-create"),
        {
            "name": "Terrorism",
            "position": "Oppose it.",
            "guidance": "",
            "target_count": 12,
        },
    )
    assert response.status_code == 302
    category = Category.objects.get(name="Terrorism")
    assert category.target_count == 12


def test_duplicate_category_name_is_an_inline_error(curator_client, category):
    response = curator_client.post(
        url("category-create"),
        {
            "name": "health",
            "position": "x",
            "target_count": 3,
        },
    )
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert Category.objects.count() == 1


def test_edit_category(curator_client, category):
    response = curator_client.post(
        url("category-edit", category.pk),
        {
            "name": "Health, Physical and Mental",
            "position": "Care.",
            "guidance": "Be kind.",
            "target_count": 7,
        },
    )
    assert response.status_code == 302
    category.refresh_from_db()
    assert (category.name, category.guidance, category.target_count) == (
        "Health, Physical and Mental",
        "Be kind.",
        7,
    )


def test_edit_form_is_prefilled(curator_client, category):
    html = curator_client.get(url("category-edit", category.pk)).content.decode()
    assert 'value="Health"' in html


def test_move_category_down_and_up(curator_client, category, other_category):
    curator_client.post(url("category-move", category.pk), {"direction": "down"})
    assert list(Category.objects.values_list("name", flat=True)) == ["Relationships", "Health"]
    response = curator_client.post(url("category-move", category.pk), {"direction": "up"}, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="categories"')
    assert "<html" not in html
    assert list(Category.objects.values_list("name", flat=True)) == ["Health", "Relationships"]


def test_move_needs_a_direction(curator_client, category):
    assert (
        curator_client.post(url("category-move", category.pk), {"direction": "left"}).status_code
        == 400
    )


def test_archive_and_restore_category(curator_client, category):
    response = curator_client.post(url("category-archive", category.pk))
    assert response.status_code == 302
    category.refresh_from_db()
    assert category.is_archived
    assert "Archived Health" in " ".join(texts(response))
    response = curator_client.post(url("category-restore", category.pk), **HTMX)
    assert response.status_code == 200 and "Archive</button>" in response.content.decode()
    category.refresh_from_db()
    assert not category.is_archived


def test_preset_load_is_idempotent_and_says_how_many(curator_client):
    first = curator_client.post(url("preset-load"), follow=True)
    assert "Added 8 PALMS categories" in first.content.decode()
    assert Category.objects.count() == 8
    second = curator_client.post(url("preset-load"), follow=True)
    assert "nothing added" in second.content.decode()
    assert Category.objects.count() == 8


# --- datasets ---------------------------------------------------------------------------


def test_create_dataset_with_default_limits(curator_client, curator):
    form = curator_client.get(url("dataset-create")).content.decode()
    assert 'value="40"' in form and 'value="340"' in form
    response = curator_client.post(
        url("dataset-create"),
        {
            "name": "Control",
            "kind": "control",
            "min_words": 40,
            "max_words": 340,
            "system_message": "Be helpful.",
        },
    )
    dataset = Dataset.objects.get(name="Control")
    assert response["Location"] == url("dataset-detail", dataset.pk)
    assert (dataset.kind, dataset.created_by, dataset.system_message) == (
        "control",
        curator,
        "Be helpful.",
    )


def test_only_admins_set_self_approval(curator_client, admin_client_, dataset):
    assert "allow_self_approval" not in curator_client.get(url("dataset-create")).content.decode()
    curator_client.post(
        url("dataset-create"),
        {
            "name": "Sneaky",
            "kind": "values_targeted",
            "min_words": 40,
            "max_words": 340,
            "allow_self_approval": "on",
        },
    )
    assert Dataset.objects.get(name="Sneaky").allow_self_approval is False
    admin_client_.post(
        url("dataset-edit", dataset.pk),
        {
            "name": "Values",
            "kind": "values_targeted",
            "min_words": 40,
            "max_words": 340,
            "allow_self_approval": "on",
        },
    )
    dataset.refresh_from_db()
    assert dataset.allow_self_approval is True
    # A curator saving the settings keeps the admin's choice.
    curator_client.post(
        url("dataset-edit", dataset.pk),
        {
            "name": "Values 2",
            "kind": "values_targeted",
            "min_words": 30,
            "max_words": 300,
        },
    )
    dataset.refresh_from_db()
    assert (dataset.name, dataset.min_words, dataset.allow_self_approval) == ("Values 2", 30, True)


def test_dataset_limits_must_be_ordered(curator_client):
    response = curator_client.post(
        url("dataset-create"),
        {
            "name": "Bad",
            "kind": "control",
            "min_words": 300,
            "max_words": 40,
        },
    )
    assert response.status_code == 200
    assert "at least the minimum" in response.content.decode()
    assert not Dataset.objects.filter(name="Bad").exists()


def test_dataset_list_shows_kind_and_counts(curator_client, dataset, curator, curator2, category):
    approved(dataset, curator, curator2, category)
    new_sample(dataset, curator, question="Another?")
    html = curator_client.get(url("dataset-list")).content.decode()
    assert "Values-targeted" in html
    assert re.search(r"<td>2</td>\s*<td>1</td>\s*<td>0</td>\s*<td>1</td>", html)


# --- dataset detail: filters and search -------------------------------------------------


@pytest.fixture
def mixed_samples(dataset, curator, curator2, category, other_category):
    return {
        "draft": new_sample(dataset, curator, category=category, question="Sleep trouble?"),
        "review": in_review(dataset, curator2, other_category, question="A friend ghosted me"),
        "approved": approved(dataset, curator, curator2, category, question="Feeling low?"),
    }


def questions(response) -> set[str]:
    html = response.content.decode()
    return {q for q in ("Sleep trouble?", "A friend ghosted me", "Feeling low?") if q in html}


def test_dataset_detail_lists_and_counts(curator_client, dataset, mixed_samples):
    response = curator_client.get(url("dataset-detail", dataset.pk))
    html = response.content.decode()
    assert questions(response) == {"Sleep trouble?", "A friend ghosted me", "Feeling low?"}
    assert "1 draft · 1 in review · 1 approved · 0 archived" in html
    for name in ("dataset-coverage", "dataset-import", "snapshot-list", "sample-create"):
        assert url(name, dataset.pk) in html


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "draft"}, {"Sleep trouble?"}),
        ({"q": "ghosted"}, {"A friend ghosted me"}),
        ({"q": "WORD", "status": "approved"}, {"Feeling low?"}),
    ],
)
def test_dataset_detail_filters(curator_client, dataset, mixed_samples, params, expected):
    response = curator_client.get(url("dataset-detail", dataset.pk), params)
    assert questions(response) == expected


def test_filter_by_category_and_author(curator_client, dataset, mixed_samples, category, curator2):
    by_category = curator_client.get(url("dataset-detail", dataset.pk), {"category": category.pk})
    assert questions(by_category) == {"Sleep trouble?", "Feeling low?"}
    by_author = curator_client.get(url("dataset-detail", dataset.pk), {"author": curator2.pk})
    assert questions(by_author) == {"A friend ghosted me"}


def test_unknown_filter_values_are_ignored(curator_client, dataset, mixed_samples):
    response = curator_client.get(
        url("dataset-detail", dataset.pk), {"category": "999", "status": "bogus", "q": "ghosted"}
    )
    assert response.status_code == 200
    assert questions(response) == {"A friend ghosted me"}


def test_htmx_filter_returns_only_the_table(curator_client, dataset, mixed_samples):
    response = curator_client.get(url("dataset-detail", dataset.pk), {"status": "draft"}, **HTMX)
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="samples">')
    # Only the table (with its bulk-action form), not the page or the filter form.
    assert "<html" not in html and 'role="search"' not in html
    assert questions(response) == {"Sleep trouble?"}
    assert "HX-Request" in response["Vary"]


def test_htmx_history_restore_gets_the_whole_page(curator_client, dataset, mixed_samples):
    response = curator_client.get(
        url("dataset-detail", dataset.pk), **HTMX, HTTP_HX_HISTORY_RESTORE_REQUEST="true"
    )
    assert "<html" in response.content.decode()


def test_filter_form_works_without_js(curator_client, dataset):
    html = curator_client.get(url("dataset-detail", dataset.pk)).content.decode()
    form = re.search(r'<form method="get" action="([^"]+)"[^>]*hx-get="([^"]+)"', html)
    assert form and form.group(1) == form.group(2) == url("dataset-detail", dataset.pk)
    assert 'hx-push-url="true"' in html


def test_dataset_detail_query_count_is_flat(
    curator_client, dataset, curator, category, django_assert_max_num_queries
):
    for n in range(30):
        new_sample(dataset, curator, category=category, question=f"Question {n}?")
    with django_assert_max_num_queries(10):
        response = curator_client.get(url("dataset-detail", dataset.pk), {"q": "Question"})
    assert response.status_code == 200
    assert "30 samples match" in response.content.decode()


def test_dataset_detail_paginates(curator_client, dataset, curator, monkeypatch):
    monkeypatch.setattr("curation.views.SAMPLES_PER_PAGE", 2)
    for n in range(3):
        new_sample(dataset, curator, question=f"Paged {n}?")
    html = curator_client.get(url("dataset-detail", dataset.pk), {"q": "Paged"}).content.decode()
    assert "Page 1 of 2" in html
    assert "?q=Paged&amp;page=2" in html


# --- the sample editor ------------------------------------------------------------------


def test_editor_has_live_word_count_and_save_shortcut(curator_client, dataset):
    html = curator_client.get(url("sample-create", dataset.pk)).content.decode()
    assert 'data-wordcount="id_answer"' in html
    assert 'data-wordcount-for="id_answer" data-min="40" data-max="340"' in html
    assert "0 words — needs 40–340" in html
    assert "js/curation.js" in html
    assert "<kbd>Ctrl</kbd>+<kbd>S</kbd>" in html and "data-save-shortcut" in html


def test_editor_shows_the_chosen_categorys_position_and_the_word_limits(
    curator_client, sample, category, other_category
):
    html = curator_client.get(url("sample-edit", sample.pk)).content.decode()
    brief = html[html.index('id="editor-brief"'):]
    assert "<strong>40–340 words</strong>" in brief
    # Every category's position is there for the script; only the chosen one shows.
    assert f'<section data-category-brief="{category.pk}" >' in brief
    assert f'<section data-category-brief="{other_category.pk}" hidden>' in brief
    assert "Suggest seeing a professional." in brief and "Respect everyone." in brief
    assert 'data-category-brief="" hidden' in brief


def test_new_sample_editor_asks_for_a_category_beside_the_form(curator_client, dataset, category):
    html = curator_client.get(url("sample-create", dataset.pk)).content.decode()
    assert "Choose a category to see its position here (values-targeted samples need one)" in html
    assert f'<section data-category-brief="{category.pk}" hidden>' in html


def test_create_a_short_draft(curator_client, dataset, category, curator):
    response = curator_client.post(
        url("sample-create", dataset.pk),
        {
            "question": "Is it ok to be sad?",
            "answer": "Yes.",
            "category": category.pk,
        },
    )
    sample = Sample.objects.get()
    assert response["Location"] == url("sample-detail", sample.pk)
    assert (sample.status, sample.version, sample.author) == (S.DRAFT, 1, curator)
    assert sample.revisions.count() == 1
    detail = curator_client.get(url("sample-detail", sample.pk)).content.decode()
    assert "1 word — needs 40–340" in detail
    assert 'class="wordcount out"' in detail


def test_empty_question_is_an_inline_error(curator_client, dataset):
    response = curator_client.post(
        url("sample-create", dataset.pk), {"question": " ", "answer": "x"}
    )
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    assert not Sample.objects.exists()


def test_editor_is_prefilled_with_the_version(curator_client, sample):
    html = curator_client.get(url("sample-edit", sample.pk)).content.decode()
    assert f'name="version" value="{sample.version}"' in html
    assert "60 words — within 40–340" in html
    assert 'class="wordcount in"' in html


def test_save_makes_a_new_revision(curator_client, sample, curator):
    response = curator_client.post(
        url("sample-edit", sample.pk), edit_data(sample, answer=words(70), note="longer")
    )
    assert response.status_code == 302
    sample.refresh_from_db()
    assert sample.version == 2 and sample.word_count == 70
    revision = sample.revisions.get(number=2)
    assert (revision.author, revision.note) == (curator, "longer")
    assert "Saved revision 2." in texts(response)


def test_stale_save_is_refused_with_both_versions_and_text_kept(
    curator_client, curator2_client, sample, curator2
):
    # Both open version 1; curator 2 saves first.
    theirs = words(50, "theirs")
    curator2_client.post(url("sample-edit", sample.pk), edit_data(sample, answer=theirs))
    mine = words(45, "mine")
    response = curator_client.post(
        url("sample-edit", sample.pk), edit_data(sample, answer=mine, question="My question?")
    )
    assert response.status_code == 409
    html = response.content.decode()
    assert 'data-version="theirs"' in html and 'data-version="yours"' in html
    assert theirs in html and mine in html
    # The curator's text is still in the editor, now based on the current version.
    assert re.search(r'<textarea name="answer"[^>]*>\s*' + mine, html)
    assert re.search(r'<textarea name="question"[^>]*>\s*My question\?', html)
    assert 'name="version" value="2"' in html
    stale = StaleEdit.objects.get()
    assert (stale.base_version, stale.answer, stale.resolved_at) == (1, mine, None)
    assert f'name="stale_edit" value="{stale.pk}"' in html
    sample.refresh_from_db()
    assert (sample.version, sample.answer, sample.updated_by) == (2, theirs, curator2)
    assert sample.revisions.count() == 2


def test_unmerged_edit_is_listed_until_merged(curator_client, curator2_client, sample):
    curator2_client.post(url("sample-edit", sample.pk), edit_data(sample, answer=words(50, "b")))
    curator_client.post(url("sample-edit", sample.pk), edit_data(sample, answer=words(45, "a")))
    stale = StaleEdit.objects.get()
    detail = curator_client.get(url("sample-detail", sample.pk)).content.decode()
    assert "Unmerged edit" in detail
    assert url("sample-edit", sample.pk) + f"?stale={stale.pk}" in detail
    # Reopening it later puts the kept text back in the editor with the conflict shown.
    reopened = curator_client.get(url("sample-edit", sample.pk), {"stale": stale.pk})
    assert 'data-version="yours"' in reopened.content.decode()
    # Saving the merge (based on the current version) resolves it.
    merged = words(48, "merged")
    response = curator_client.post(
        url("sample-edit", sample.pk),
        edit_data(sample, answer=merged, version=2, stale_edit=stale.pk),
    )
    assert response.status_code == 302
    stale.refresh_from_db()
    assert stale.resolved_at is not None
    sample.refresh_from_db()
    assert (sample.version, sample.answer) == (3, merged)
    assert (
        "Unmerged edit" not in curator_client.get(url("sample-detail", sample.pk)).content.decode()
    )


def test_stale_edit_can_be_dismissed(curator_client, sample):
    stale = StaleEdit.objects.create(sample=sample, base_version=1, question="q", answer="a")
    response = curator_client.post(url("stale-edit-resolve", stale.pk))
    assert response["Location"] == url("sample-detail", sample.pk)
    stale.refresh_from_db()
    assert stale.resolved_at is not None


def test_editing_an_approved_sample_sends_it_back_to_review(
    curator_client, dataset, curator, curator2, category
):
    sample = approved(dataset, curator2, curator, category)
    response = curator_client.post(
        url("sample-edit", sample.pk), edit_data(sample, answer=words(61))
    )
    sample.refresh_from_db()
    assert sample.status == S.IN_REVIEW
    assert any("back in review" in text for text in texts(response))


# --- review -----------------------------------------------------------------------------


def test_submit_then_another_curator_approves(curator_client, curator2_client, sample):
    response = curator_client.post(url("sample-submit", sample.pk))
    assert response["Location"] == url("sample-detail", sample.pk)
    sample.refresh_from_db()
    assert sample.status == S.IN_REVIEW
    page = curator2_client.get(url("sample-detail", sample.pk)).content.decode()
    assert re.search(r'<button type="submit" class="primary">Approve</button>', page)
    curator2_client.post(url("sample-approve", sample.pk))
    sample.refresh_from_db()
    assert sample.status == S.APPROVED
    assert list(sample.comments.values_list("kind", flat=True)) == ["submitted", "approved"]


def test_self_approval_is_refused_in_page_and_view(curator_client, dataset, curator, category):
    sample = in_review(dataset, curator, category)
    page = curator_client.get(url("sample-detail", sample.pk)).content.decode()
    assert "another curator must approve it" in page
    assert re.search(r"<button[^>]*disabled>Approve</button>", page)
    response = curator_client.post(url("sample-approve", sample.pk), follow=True)
    assert "another curator must approve it" in response.content.decode()
    sample.refresh_from_db()
    assert sample.status == S.IN_REVIEW


def test_self_approval_allowed_when_the_dataset_allows_it(
    curator_client, dataset, curator, category
):
    services.dataset_update(dataset=dataset, allow_self_approval=True)
    sample = in_review(dataset, curator, category)
    curator_client.post(url("sample-approve", sample.pk))
    sample.refresh_from_db()
    assert sample.status == S.APPROVED


def test_out_of_limit_approval_is_refused_with_reason(curator2_client, dataset, curator, category):
    sample = in_review(dataset, curator, category, n_words=12)
    page = curator2_client.get(url("sample-detail", sample.pk)).content.decode()
    assert "The answer has 12 words; this dataset needs 40–340." in page
    response = curator2_client.post(url("sample-approve", sample.pk))
    assert "The answer has 12 words; this dataset needs 40–340." in " ".join(texts(response))
    sample.refresh_from_db()
    assert sample.status == S.IN_REVIEW


def test_request_changes_needs_a_comment(curator2_client, dataset, curator, category):
    sample = in_review(dataset, curator, category)
    response = curator2_client.post(url("sample-request-changes", sample.pk), {"body": " "})
    assert "the comment is required" in " ".join(texts(response))
    sample.refresh_from_db()
    assert sample.status == S.IN_REVIEW
    curator2_client.post(url("sample-request-changes", sample.pk), {"body": "Shorter please."})
    sample.refresh_from_db()
    assert sample.status == S.DRAFT
    assert sample.comments.last().body == "Shorter please."


def test_archive_and_reopen(curator_client, sample):
    curator_client.post(url("sample-archive", sample.pk))
    sample.refresh_from_db()
    assert sample.status == S.ARCHIVED
    assert "Reopen as draft" in curator_client.get(url("sample-detail", sample.pk)).content.decode()
    curator_client.post(url("sample-reopen", sample.pk))
    sample.refresh_from_db()
    assert sample.status == S.DRAFT


def test_wrong_transition_is_a_message_not_a_crash(curator_client, sample):
    response = curator_client.post(url("sample-reopen", sample.pk))
    assert response.status_code == 302
    assert "cannot be reopened" in " ".join(texts(response))


def test_comment_without_htmx_redirects(curator_client, sample):
    response = curator_client.post(url("sample-comment", sample.pk), {"body": "Nice one."})
    assert response["Location"] == url("sample-detail", sample.pk) + "#comments"
    assert Comment.objects.get().body == "Nice one."


def test_comment_with_htmx_returns_the_thread(curator_client, sample):
    response = curator_client.post(url("sample-comment", sample.pk), {"body": "Nice one."}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section class="panel" id="comments">')
    assert "Nice one." in html and "<html" not in html


def test_empty_comment_is_refused(curator_client, sample):
    response = curator_client.post(url("sample-comment", sample.pk), {"body": ""}, **HTMX)
    assert "This field is required." in response.content.decode()
    assert not Comment.objects.exists()


# --- history, diff, restore -------------------------------------------------------------


@pytest.fixture
def revised(sample, curator):
    services.sample_update(
        sample_id=sample.pk,
        base_version=1,
        question=sample.question,
        answer=words(60) + " extra",
        category=sample.category,
        user=curator,
    )
    return Sample.objects.get(pk=sample.pk)


def test_history_lists_every_revision(curator_client, revised):
    html = curator_client.get(url("sample-history", revised.pk)).content.decode()
    assert html.count('class="revision"') == 2
    assert url("sample-diff", revised.pk) + "?a=1&amp;b=2" in html
    assert 'name="a" value="1" form="diff-form"' in html


def test_diff_highlights_word_changes(curator_client, sample, curator):
    services.sample_update(
        sample_id=sample.pk,
        base_version=1,
        question="How can I cope?",
        answer="word " * 59 + "phrase",
        category=sample.category,
        user=curator,
    )
    html = curator_client.get(url("sample-diff", sample.pk), {"a": 2, "b": 1}).content.decode()
    assert "Revision 1 → revision 2" in html
    assert "How <del>do</del><ins>can</ins> I cope?" in html
    assert "<del>word</del><ins>phrase</ins>" in html


def test_diff_needs_revision_numbers(curator_client, sample):
    assert curator_client.get(url("sample-diff", sample.pk), {"a": "x"}).status_code == 400
    assert curator_client.get(url("sample-diff", sample.pk), {"a": 1, "b": 9}).status_code == 404


def test_restore_makes_a_new_revision(curator_client, revised, curator):
    response = curator_client.post(url("sample-restore", revised.pk), {"revision": 1, "version": 2})
    assert response["Location"] == url("sample-history", revised.pk)
    revised.refresh_from_db()
    assert revised.version == 3
    assert revised.answer == words(60)
    assert revised.revisions.get(number=3).note == "restored revision 1"
    assert SampleRevision.objects.filter(sample=revised).count() == 3


def test_stale_restore_is_refused_like_an_edit(curator_client, revised):
    response = curator_client.post(url("sample-restore", revised.pk), {"revision": 1, "version": 1})
    stale = StaleEdit.objects.get()
    assert response["Location"] == url("sample-edit", revised.pk) + f"?stale={stale.pk}"
    assert "changed by someone else" in " ".join(texts(response))
    revised.refresh_from_db()
    assert revised.version == 2


def test_restore_of_unknown_revision_is_404(curator_client, sample):
    assert (
        curator_client.post(
            url("sample-restore", sample.pk), {"revision": 7, "version": 1}
        ).status_code
        == 404
    )


# --- coverage ---------------------------------------------------------------------------


def test_coverage_numbers(curator_client, dataset, curator, curator2, category, other_category):
    approved(dataset, curator, curator2, category, question="a?", n_words=50)
    approved(dataset, curator, curator2, category, question="b?", n_words=40)
    in_review(dataset, curator, category, question="c?")
    new_sample(dataset, curator, category=other_category, question="d?")
    Category.objects.filter(pk=category.pk).update(target_count=2)
    response = curator_client.get(url("dataset-coverage", dataset.pk))
    html = response.content.decode()
    health = re.search(r'<tr class="" data-category="Health">(.*?)</tr>', html, re.S).group(1)
    assert '<td class="approved">2</td>' in health
    assert '<td class="in-review">1</td>' in health
    assert '<td class="words">90</td>' in health
    size = len("a?") + len(words(50)) + len("b?") + len(words(40))
    assert f'<td class="bytes">{size}</td>' in health
    assert "UTF-8 bytes of question + answer" in html  # the column says what it counts
    assert 'class="below-target" data-category="Relationships"' in html
    assert '<th class="approved">2</th>' in html and "<th>12</th>" in html
    assert '<th class="draft">1</th>' in html


def test_coverage_query_count_is_flat(
    curator_client,
    dataset,
    curator,
    curator2,
    category,
    other_category,
    django_assert_max_num_queries,
):
    for n in range(12):
        approved(
            dataset, curator, curator2, category if n % 2 else other_category, question=f"Q{n}?"
        )
    # session, user, admin group, profile memberships, dataset, counts: flat in the rows.
    with django_assert_max_num_queries(7):
        assert curator_client.get(url("dataset-coverage", dataset.pk)).status_code == 200


# --- import -----------------------------------------------------------------------------


def upload(name: str, body: str):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, body.encode("utf-8"))


def test_import_jsonl_previews_then_imports_on_confirm(
    curator_client, dataset, category, other_category, curator
):
    lines = [
        {
            "messages": [
                {"role": "user", "content": "First?"},
                {"role": "assistant", "content": words(50)},
            ],
            "category": "Relationships",
        },
        {"prompt": "Second?", "completion": words(45)},
    ]
    body = "\n".join(json.dumps(line) for line in lines) + "\n"
    response = curator_client.post(
        url("dataset-import", dataset.pk),
        {"file": upload("x.jsonl", body), "status": "draft", "default_category": category.pk},
    )
    pending = PendingImport.objects.get()
    assert response["Location"] == url("import-preview", pending.pk)
    assert not dataset.samples.exists()  # nothing yet: the preview comes first

    html = curator_client.get(url("import-preview", pending.pk)).content.decode()
    assert "<tr><td>Health</td><td>1</td></tr>" in html
    assert "<tr><td>Relationships</td><td>1</td></tr>" in html
    assert "rows without a category get <strong>Health</strong>" in html
    assert "Import 2 samples" in html

    response = curator_client.post(url("import-preview", pending.pk), {"confirm": "1"})
    assert response["Location"] == url("dataset-detail", dataset.pk)
    assert "Imported 2 samples" in " ".join(texts(response))
    assert set(dataset.samples.values_list("category__name", flat=True)) == {
        "Health", "Relationships"
    }
    assert set(dataset.samples.values_list("author", flat=True)) == {curator.pk}
    assert not PendingImport.objects.exists()


def test_bad_import_shows_every_problem_and_keeps_nothing(curator_client, dataset, category):
    body = "question,answer,category\nFine?,yes,Health\nBad?,no,Nope\n,empty,\n"
    response = curator_client.post(
        url("dataset-import", dataset.pk), {"file": upload("x.csv", body), "status": "draft"}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "Nothing was imported." in html
    assert "<td>3</td><td>Unknown category &#x27;Nope&#x27;.</td>" in html
    # Line 4 has two problems; both are listed.
    assert "<td>4</td><td>The question is empty.</td>" in html
    assert "<td>4</td><td>No category: a values-targeted sample needs a category." in html
    # What the file holds, per category as written.
    assert "<tr><td>Nope (unknown)</td><td>1</td></tr>" in html
    assert "<tr><td>(no category)</td><td>1</td></tr>" in html
    assert not dataset.samples.exists() and not PendingImport.objects.exists()


def test_import_preview_is_its_uploaders_alone(
    curator_client, curator2_client, dataset, category
):
    curator_client.post(
        url("dataset-import", dataset.pk),
        {"file": upload("x.jsonl", '{"prompt": "Q?", "completion": "A.", "category": "Health"}'),
         "status": "draft"},
    )
    pending = PendingImport.objects.get()
    assert curator2_client.get(url("import-preview", pending.pk)).status_code == 404
    assert curator2_client.post(url("import-preview", pending.pk), {"confirm": "1"}).status_code \
        == 404
    assert not dataset.samples.exists()


def test_import_preview_cancel_drops_the_upload(curator_client, dataset, category):
    curator_client.post(
        url("dataset-import", dataset.pk),
        {"file": upload("x.jsonl", '{"prompt": "Q?", "completion": "A.", "category": "Health"}'),
         "status": "in_review"},
    )
    pending = PendingImport.objects.get()
    response = curator_client.post(url("import-preview", pending.pk), {"cancel": "1"})
    assert response["Location"] == url("dataset-import", dataset.pk)
    assert not PendingImport.objects.exists() and not dataset.samples.exists()


def test_import_confirm_checks_again(curator_client, curator, dataset, category):
    curator_client.post(
        url("dataset-import", dataset.pk),
        {"file": upload("x.jsonl", '{"prompt": "Q?", "completion": "A.", "category": "Health"}'),
         "status": "draft"},
    )
    pending = PendingImport.objects.get()
    new_sample(dataset, curator, question="Q?")  # a colleague added it meanwhile
    response = curator_client.post(url("import-preview", pending.pk), {"confirm": "1"})
    assert response.status_code == 400
    assert "The question is already in this dataset" in response.content.decode()
    assert dataset.samples.count() == 1


# --- snapshots --------------------------------------------------------------------------


def test_take_snapshot(curator_client, dataset, curator, curator2, category):
    approved(dataset, curator, curator2, category)
    response = curator_client.post(url("snapshot-create", dataset.pk), {"label": "v1"})
    snapshot = Snapshot.objects.get()
    assert response["Location"] == url("snapshot-detail", snapshot.pk)
    assert (snapshot.label, snapshot.sample_count, snapshot.created_by) == ("v1", 1, curator)


def test_snapshot_with_no_change_says_so_and_shows_the_existing_one(
    curator_client, dataset, curator, curator2, category
):
    approved(dataset, curator, curator2, category)
    first = services.snapshot_create(dataset=dataset, user=curator, label="v1")
    response = curator_client.post(url("snapshot-create", dataset.pk), {"label": "v2"})
    assert response["Location"] == url("snapshot-detail", first.pk)
    assert "Nothing changed since the last snapshot" in " ".join(texts(response))
    assert Snapshot.objects.count() == 1


def test_empty_snapshot_is_refused(curator_client, dataset):
    response = curator_client.post(url("snapshot-create", dataset.pk), {"label": ""}, follow=True)
    assert "no approved samples" in response.content.decode()
    assert not Snapshot.objects.exists()


def test_snapshot_list_shows_short_and_full_hash(curator_client, snapshot, curator):
    html = curator_client.get(url("snapshot-list", snapshot.dataset_id)).content.decode()
    assert snapshot.short_hash in html and snapshot.content_hash in html
    assert "first" in html and curator.username in html


def page_hash(client, snapshot) -> str:
    html = client.get(url("snapshot-detail", snapshot.pk)).content.decode()
    return re.search(r'id="snapshot-hash">([0-9a-f]{64})<', html).group(1)


def test_jsonl_download_matches_the_page_hash(researcher_client, snapshot, dataset):
    response = researcher_client.get(url("snapshot-download", snapshot.pk, format="jsonl"))
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="values-')
    assert response["Content-Disposition"].endswith(f'{snapshot.short_hash}.jsonl"')
    shown = page_hash(researcher_client, snapshot)
    stored = Snapshot.objects.get(pk=snapshot.pk)
    # The file's own hash (what sha256sum prints), and the snapshot's under its own name.
    assert response["X-Content-SHA256"] == hashlib.sha256(response.content).hexdigest()
    assert response["X-Content-SHA256"] != shown
    assert response["X-Snapshot-SHA256"] == shown == stored.content_hash
    assert hashlib.sha256(stored.content.encode()).hexdigest() == shown
    lines = response.content.decode().splitlines()
    assert len(lines) == 1
    example = json.loads(lines[0])
    assert [m["role"] for m in example["messages"]] == ["user", "assistant"]
    assert example["messages"][1]["content"] == stored.items()[0]["answer"]


def test_jsonl_puts_the_system_message_first(curator_client, dataset, curator, curator2, category):
    services.dataset_update(dataset=dataset, system_message="You are careful.")
    approved(dataset, curator, curator2, category)
    snapshot = services.snapshot_create(dataset=dataset, user=curator)
    body = curator_client.get(url("snapshot-download", snapshot.pk, format="jsonl")).content
    messages = json.loads(body.decode().splitlines()[0])["messages"]
    assert messages[0] == {"role": "system", "content": "You are careful."}


def test_canonical_download_hashes_to_the_snapshot_hash(curator_client, snapshot):
    response = curator_client.get(url("snapshot-download", snapshot.pk, format="json"))
    assert hashlib.sha256(response.content).hexdigest() == snapshot.content_hash
    assert response["X-Content-SHA256"] == snapshot.content_hash
    assert response["X-Snapshot-SHA256"] == snapshot.content_hash


def test_csv_download(curator_client, snapshot):
    response = curator_client.get(url("snapshot-download", snapshot.pk, format="csv"))
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["category", "question", "answer", "words"]
    assert rows[1][0] == "Health" and rows[1][3] == "60"
    assert response["X-Content-SHA256"] == hashlib.sha256(response.content).hexdigest()
    assert response["X-Snapshot-SHA256"] == snapshot.content_hash
    assert response["Content-Disposition"].endswith('.csv"')


def test_unknown_download_format_is_400(curator_client, snapshot):
    assert (
        curator_client.get(url("snapshot-download", snapshot.pk, format="xml")).status_code == 400
    )


def test_snapshot_detail_lists_items(curator_client, snapshot):
    html = curator_client.get(url("snapshot-detail", snapshot.pk)).content.decode()
    assert "How do I cope?" in html
    assert "?format=jsonl" in html and "?format=csv" in html


# --- word count fragment ----------------------------------------------------------------


def test_word_count_fragment(curator_client, dataset):
    response = curator_client.get(
        url("word-count"), {"text": "one two three", "dataset": dataset.pk}
    )
    assert "3 words — needs 40–340" in response.content.decode()
    services.dataset_update(dataset=dataset, min_words=2, max_words=5)
    response = curator_client.get(
        url("word-count"), {"text": "one two three", "dataset": dataset.pk}
    )
    assert "3 words — within 2–5" in response.content.decode()
    assert 'class="wordcount in"' in response.content.decode()
