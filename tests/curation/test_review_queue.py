"""Waiting for my review: the queue, moving through it, and bulk submit / approve / archive
through the single-sample rules (pages and API)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from curation import review, services
from curation.models import Comment, Sample
from tests.conftest import client_for
from tests.factories import words

pytestmark = pytest.mark.django_db

S = Sample.Status


@pytest.fixture
def category():
    return services.category_create(name="Health", position="Suggest seeing a professional.")


@pytest.fixture
def dataset(curator):
    return services.dataset_create(name="Values", user=curator)


def write(dataset, author, category, question, *, submit=True, n_words=60):
    sample = services.sample_create(
        dataset=dataset, question=question, answer=words(n_words), category=category, user=author
    )
    return services.sample_submit(sample=sample, user=author) if submit else sample


def url(name, *args):
    return reverse(f"curation:{name}", args=args)


# --- the queue -----------------------------------------------------------------------------


def test_queue_holds_what_i_may_approve_oldest_first(
    dataset, category, curator, curator2, curator3
):
    first = write(dataset, curator, category, "First?")
    mine = write(dataset, curator2, category, "Mine?")
    second = write(dataset, curator3, category, "Second?")
    revised = write(dataset, curator, category, "Revised by me?")
    services.sample_update(
        sample_id=revised.pk, base_version=1, question="Revised by me?", answer=words(61),
        category=category, user=curator2,
    )
    write(dataset, curator, category, "Draft?", submit=False)
    queue = list(review.review_queue(curator2))
    assert queue == [first, second]
    assert mine not in review.review_queue(curator2)
    # Curator 3 may review what curator 2 revised.
    assert [s.question for s in review.review_queue(curator3)] == [
        "First?", "Mine?", "Revised by me?"
    ]


def test_queue_position_and_next_after_acting(dataset, category, curator, curator2):
    a, b, c = (write(dataset, curator, category, q) for q in ("A?", "B?", "C?"))
    position = review.queue_position(curator2, b)
    assert (position.number, position.total) == (2, 3)
    assert (position.previous_id, position.next_id) == (a.pk, c.pk)
    before = [a.pk, b.pk, c.pk]
    services.sample_approve(sample=b, user=curator2)
    assert review.queue_next_after(curator2, before, b.pk) == c.pk
    services.sample_approve(sample=c, user=curator2)
    assert review.queue_next_after(curator2, before, c.pk) == a.pk  # wraps to the first
    services.sample_approve(sample=a, user=curator2)
    assert review.queue_next_after(curator2, before, a.pk) is None


def test_queue_page_lists_and_links_one_by_one(dataset, category, curator, curator2):
    a = write(dataset, curator, category, "Waiting?")
    write(dataset, curator2, category, "Not for me?")
    html = client_for(curator2).get(url("review-queue")).content.decode()
    assert "Waiting?" in html and "Not for me?" not in html
    assert f'href="{url("sample-detail", a.pk)}?queue=1"' in html
    assert f'value="{a.pk}:{a.version}"' in html  # a bulk checkbox carries the version read


def test_sample_page_in_queue_mode_moves_through_the_queue(dataset, category, curator, curator2):
    a, b = write(dataset, curator, category, "A?"), write(dataset, curator, category, "B?")
    client = client_for(curator2)
    html = client.get(url("sample-detail", a.pk) + "?queue=1").content.decode()
    assert "Waiting for your review: <strong>1 of 2</strong>" in html
    assert f'href="{url("sample-detail", b.pk)}?queue=1" rel="next" data-key="j"' in html
    assert "data-review-keys" in html
    assert '<input type="hidden" name="queue" value="1">' in html
    # Approving from the queue goes straight on to the next sample.
    response = client.post(url("sample-approve", a.pk), {"version": a.version, "queue": "1"})
    assert response["Location"] == url("sample-detail", b.pk) + "?queue=1"
    response = client.post(
        url("sample-request-changes", b.pk), {"body": "Say more.", "queue": "1"}
    )
    assert response["Location"] == url("review-queue")
    assert Sample.objects.get(pk=b.pk).status == S.DRAFT


def test_a_refused_approval_from_the_queue_stays_on_the_sample(
    dataset, category, curator, curator2
):
    short = write(dataset, curator, category, "Short?", n_words=5)
    response = client_for(curator2).post(
        url("sample-approve", short.pk), {"version": 1, "queue": "1"}, follow=True
    )
    assert response.redirect_chain[-1][0] == url("sample-detail", short.pk) + "?queue=1"
    assert "The answer has 5 words" in response.content.decode()


def test_queue_narrowed_to_a_dataset(dataset, category, curator, curator2):
    other = services.dataset_create(name="Other", user=curator)
    write(dataset, curator, category, "Here?")
    there = write(other, curator, category, "There?")
    html = client_for(curator2).get(url("review-queue") + f"?dataset={other.pk}").content
    assert b"There?" in html and b"Here?" not in html
    assert list(review.review_queue(curator2, dataset=other)) == [there]


def test_dataset_list_counts_my_queue(dataset, category, curator, curator2):
    write(dataset, curator, category, "A?")
    html = client_for(curator2).get(url("dataset-list")).content.decode()
    assert "Waiting for my review (1)" in html


# --- bulk ----------------------------------------------------------------------------------


def test_bulk_approve_goes_through_the_rules_and_reports_each_refusal(
    dataset, category, curator, curator2
):
    fine = write(dataset, curator, category, "Fine?")
    own = write(dataset, curator2, category, "Own?")
    short = write(dataset, curator, category, "Short?", n_words=3)
    draft = write(dataset, curator, category, "Draft?", submit=False)
    result = review.samples_bulk_action(
        action="approve",
        items=[(fine.pk, fine.version), (own.pk, None), (short.pk, None), (draft.pk, None),
               (999_999, None)],
        user=curator2,
        body="batch",
    )
    assert [s.pk for s in result.done] == [fine.pk]
    refused = dict(result.refused)
    assert "another curator must approve" in refused[own.pk]
    assert "has 3 words" in refused[short.pk]
    assert "draft cannot be approved" in refused[draft.pk]
    assert refused[999_999] == "No such sample."
    assert Sample.objects.get(pk=fine.pk).status == S.APPROVED
    assert Comment.objects.get(sample=fine, kind="approved").body == "batch"
    assert Sample.objects.get(pk=own.pk).status == S.IN_REVIEW


def test_bulk_approve_refuses_a_sample_changed_since_it_was_ticked(
    dataset, category, curator, curator2
):
    sample = write(dataset, curator, category, "Changing?")
    services.sample_update(
        sample_id=sample.pk, base_version=1, question="Changing?", answer=words(62),
        category=category, user=curator,
    )
    result = review.samples_bulk_action(action="approve", items=[(sample.pk, 1)], user=curator2)
    assert "it is now version 2" in result.refused[0][1]


def test_bulk_submit_and_archive(dataset, category, curator):
    drafts = [write(dataset, curator, category, f"D{n}?", submit=False) for n in range(3)]
    result = review.samples_bulk_action(
        action="submit", items=[(s.pk, None) for s in drafts], user=curator
    )
    assert len(result.done) == 3 and not result.refused
    result = review.samples_bulk_action(
        action="archive", items=[(s.pk, None) for s in drafts[:2]], user=curator
    )
    statuses = [Sample.objects.get(pk=s.pk).status for s in drafts]
    assert statuses == [S.ARCHIVED, S.ARCHIVED, S.IN_REVIEW]


def test_bulk_refuses_unknown_actions_and_empty_selections(curator):
    with pytest.raises(services.CurationError, match="Bulk actions are"):
        review.samples_bulk_action(action="delete", items=[(1, None)], user=curator)
    with pytest.raises(services.CurationError, match="Select at least one"):
        review.samples_bulk_action(action="archive", items=[], user=curator)


def test_bulk_page_reports_per_sample_and_returns(dataset, category, curator, curator2):
    fine = write(dataset, curator, category, "Fine?")
    own = write(dataset, curator2, category, "Own?")
    back = url("dataset-detail", dataset.pk) + "?status=in_review"
    response = client_for(curator2).post(
        url("sample-bulk"),
        {"action": "approve", "sample": [f"{fine.pk}:1", f"{own.pk}:1"], "next": back},
        follow=True,
    )
    assert response.redirect_chain[0][0] == back
    html = response.content.decode()
    assert "Approved 1 sample." in html
    assert f"Sample #{own.pk} refused: You wrote this sample" in html


def test_bulk_page_refuses_bad_input_and_foreign_next(dataset, category, curator):
    sample = write(dataset, curator, category, "A?", submit=False)
    client = client_for(curator)
    back = url("dataset-detail", dataset.pk)
    response = client.post(
        url("sample-bulk"), {"action": "", "sample": [f"{sample.pk}:1"], "next": back},
        follow=True,
    )
    assert "Choose what to do with the selected samples." in response.content.decode()
    response = client.post(
        url("sample-bulk"), {"action": "submit", "sample": ["abc"], "next": "https://evil.test/"}
    )
    assert response["Location"] == url("dataset-list")
    assert Sample.objects.get(pk=sample.pk).status == S.DRAFT


def test_dataset_page_has_bulk_checkboxes_for_writers_only(
    dataset, category, curator, researcher
):
    sample = write(dataset, curator, category, "A?", submit=False)
    html = client_for(curator).get(url("dataset-detail", dataset.pk)).content.decode()
    assert f'value="{sample.pk}:1"' in html and 'id="bulk-form"' in html
    html = client_for(researcher).get(url("dataset-detail", dataset.pk)).content.decode()
    assert 'id="bulk-form"' not in html


# --- API -----------------------------------------------------------------------------------


def api(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def test_api_bulk(dataset, category, curator, curator2):
    fine = write(dataset, curator, category, "Fine?")
    own = write(dataset, curator2, category, "Own?")
    response = api(curator2).post(
        "/api/samples/bulk/",
        {"action": "approve", "samples": [{"id": fine.pk, "version": 1}, {"id": own.pk}]},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["done"] == [fine.pk]
    assert body["refused"][0]["id"] == own.pk
    assert "another curator must approve" in body["refused"][0]["detail"]


def test_api_bulk_refuses_bad_input(curator):
    client = api(curator)
    for body in ({"action": "delete", "samples": [{"id": 1}]},
                 {"action": "archive", "samples": []},
                 {"action": "archive", "samples": [{"id": 1, "extra": 2}]}):
        assert client.post("/api/samples/bulk/", body, format="json").status_code == 400


def test_api_review_queue(dataset, category, curator, curator2, researcher):
    waiting = write(dataset, curator, category, "Waiting?")
    write(dataset, curator2, category, "Mine?")
    response = api(curator2).get("/api/samples/review-queue/")
    assert [item["id"] for item in response.json()["results"]] == [waiting.pk]
    assert api(curator2).get("/api/samples/review-queue/?dataset=999999").status_code == 400
    assert api(researcher).get("/api/samples/review-queue/").status_code == 403
