"""The iteration loop: gap tickets, samples written for them, and resolving them together
with a new snapshot — services, pages by role, the sample editor's provenance, coverage and
the API."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from curation import gaps, services
from curation.gaps import GapTicketError
from curation.models import GapTicket, Sample, Snapshot
from curation.selectors import dataset_coverage
from tests.factories import words

pytestmark = pytest.mark.django_db

S = Sample.Status
OPEN, RESOLVED = GapTicket.Status.OPEN, GapTicket.Status.RESOLVED
HTMX = {"HTTP_HX_REQUEST": "true"}


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def category():
    return services.category_create(name="Appearance", position="Do not rank people by looks.")


@pytest.fixture
def other_category():
    return services.category_create(name="Health", position="Suggest seeing a professional.")


@pytest.fixture
def dataset(curator):
    return services.dataset_create(name="Values", user=curator)


@pytest.fixture
def other_dataset(curator):
    return services.dataset_create(name="Values v2", user=curator)


@pytest.fixture
def ticket(category, researcher):
    return gaps.gap_ticket_create(
        category=category,
        title="Still ranks looks",
        description="Asked who is most beautiful, the model picked one.",
        source={"study": 3, "output": "ab12cd34", "score": 2},
        user=researcher,
    )


def approved_for(ticket, dataset, author, reviewer, question="Who is the most beautiful?"):
    sample = services.sample_create(
        dataset=dataset,
        question=question,
        answer=words(60),
        category=ticket.category,
        user=author,
        gap_ticket=ticket,
    )
    sample = services.sample_submit(sample=sample, user=author)
    return services.sample_approve(sample=sample, user=reviewer)


# --- services: create -------------------------------------------------------------------


def test_create_files_an_open_ticket_with_its_source(ticket, category, researcher):
    ticket.refresh_from_db()
    assert ticket.status == OPEN
    assert ticket.category == category and ticket.created_by == researcher
    assert ticket.source == {"study": 3, "output": "ab12cd34", "score": 2}
    assert ticket.resolved_at is None and ticket.resolved_in_snapshot is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"category": None}, "needs a category"),
        ({"title": "   "}, "needs a title"),
        ({"title": "x" * 201}, "limited to 200"),
        ({"description": "x" * 20_001}, "description is limited"),
        ({"source": ["study", 3]}, "JSON object"),
        ({"source": {"blob": "x" * 20_000}}, "too large"),
        ({"source": {"when": object()}}, "only JSON values"),
    ],
)
def test_create_refuses_bad_input_with_a_clear_error(category, curator, fields, message):
    kwargs = {"category": category, "title": "A gap", "user": curator} | fields
    with pytest.raises(GapTicketError, match=message):
        gaps.gap_ticket_create(**kwargs)
    assert not GapTicket.objects.exists()


def test_create_refuses_an_archived_category(category, curator):
    services.category_archive(category=category)
    with pytest.raises(GapTicketError, match="archived"):
        gaps.gap_ticket_create(category=category, title="A gap", user=curator)


# --- services: resolve ------------------------------------------------------------------


def test_resolve_records_who_and_when_without_a_snapshot(ticket, curator):
    gaps.gap_ticket_resolve(ticket=ticket, user=curator)
    ticket.refresh_from_db()
    assert ticket.status == RESOLVED
    assert ticket.resolved_by == curator and ticket.resolved_at is not None
    assert ticket.resolved_in_snapshot is None


def test_a_ticket_is_resolved_only_once(ticket, curator, curator2):
    gaps.gap_ticket_resolve(ticket=ticket, user=curator)
    with pytest.raises(GapTicketError, match="already resolved"):
        gaps.gap_ticket_resolve(ticket=ticket, user=curator2)
    ticket.refresh_from_db()
    assert ticket.resolved_by == curator


# --- services: resolve and snapshot -----------------------------------------------------


def test_resolve_and_snapshot_closes_tickets_in_the_new_snapshot(
    ticket, category, dataset, curator, curator2
):
    second = gaps.gap_ticket_create(category=category, title="Rates bodies", user=curator)
    approved_for(ticket, dataset, curator, curator2)
    approved_for(second, dataset, curator2, curator, question="Rate my body?")
    snapshot = gaps.tickets_resolve_and_snapshot(
        dataset=dataset, tickets=[ticket, second], user=curator, label="gaps closed"
    )
    assert snapshot.sample_count == 2 and snapshot.label == "gaps closed"
    assert snapshot.hash_matches_content()
    for closed in (ticket, second):
        closed.refresh_from_db()
        assert closed.status == RESOLVED
        assert closed.resolved_in_snapshot == snapshot and closed.resolved_by == curator


def test_resolve_and_snapshot_with_no_change_records_the_latest_snapshot(
    ticket, dataset, curator, curator2
):
    approved_for(ticket, dataset, curator, curator2)
    latest = services.snapshot_create(dataset=dataset, user=curator, label="already")
    snapshot = gaps.tickets_resolve_and_snapshot(dataset=dataset, tickets=[ticket], user=curator)
    assert snapshot == latest and Snapshot.objects.count() == 1
    ticket.refresh_from_db()
    assert ticket.status == RESOLVED and ticket.resolved_in_snapshot == latest


def test_tickets_ready_are_open_with_an_approved_sample_in_that_dataset(
    ticket, category, dataset, other_dataset, curator, curator2
):
    draft_only = gaps.gap_ticket_create(category=category, title="Only a draft", user=curator)
    services.sample_create(
        dataset=dataset,
        question="Q?",
        answer=words(60),
        category=category,
        user=curator,
        gap_ticket=draft_only,
    )
    approved_for(ticket, dataset, curator, curator2)
    assert list(gaps.tickets_ready_in(dataset)) == [ticket]
    assert list(gaps.tickets_ready_in(other_dataset)) == []


def test_resolve_and_snapshot_needs_an_approved_sample_in_the_dataset(
    ticket, dataset, other_dataset, curator, curator2
):
    approved_for(ticket, other_dataset, curator, curator2)
    services.sample_create(  # something to snapshot, but not written for the gap
        dataset=dataset,
        question="Q?",
        answer=words(60),
        user=curator,
        status=S.APPROVED,
    )
    with pytest.raises(GapTicketError, match="no approved sample in Values"):
        gaps.tickets_resolve_and_snapshot(dataset=dataset, tickets=[ticket], user=curator)
    ticket.refresh_from_db()
    assert ticket.status == OPEN
    assert not Snapshot.objects.filter(dataset=dataset).exists()


def test_resolve_and_snapshot_refuses_no_tickets_and_resolved_ones(
    ticket, dataset, curator, curator2
):
    approved_for(ticket, dataset, curator, curator2)
    with pytest.raises(GapTicketError, match="at least one"):
        gaps.tickets_resolve_and_snapshot(dataset=dataset, tickets=[], user=curator)
    gaps.gap_ticket_resolve(ticket=ticket, user=curator)
    with pytest.raises(GapTicketError, match="already resolved"):
        gaps.tickets_resolve_and_snapshot(dataset=dataset, tickets=[ticket], user=curator)
    assert not Snapshot.objects.exists()


def test_when_the_snapshot_fails_no_ticket_is_resolved(
    ticket, dataset, curator, curator2, monkeypatch
):
    approved_for(ticket, dataset, curator, curator2)

    def broken_snapshot(**kwargs):
        raise services.CurationError("disk full")

    monkeypatch.setattr(gaps, "snapshot_create", broken_snapshot)
    with pytest.raises(services.CurationError, match="disk full"):
        gaps.tickets_resolve_and_snapshot(dataset=dataset, tickets=[ticket], user=curator)
    ticket.refresh_from_db()
    assert ticket.status == OPEN and ticket.resolved_at is None


def test_when_resolving_fails_midway_there_is_no_snapshot_and_nothing_resolved(
    ticket, category, dataset, curator, curator2, monkeypatch
):
    second = gaps.gap_ticket_create(category=category, title="Rates bodies", user=curator)
    approved_for(ticket, dataset, curator, curator2)
    approved_for(second, dataset, curator2, curator, question="Rate my body?")
    real_mark = gaps._mark_resolved
    calls = []

    def fail_on_second(ticket, **kwargs):
        calls.append(ticket.pk)
        if len(calls) == 2:
            raise RuntimeError("crash between the two tickets")
        return real_mark(ticket, **kwargs)

    monkeypatch.setattr(gaps, "_mark_resolved", fail_on_second)
    with pytest.raises(RuntimeError):
        gaps.tickets_resolve_and_snapshot(dataset=dataset, tickets=[ticket, second], user=curator)
    assert not Snapshot.objects.exists()
    assert set(GapTicket.objects.values_list("status", flat=True)) == {OPEN}


# --- samples keep their provenance ----------------------------------------------------


def test_sample_create_stores_the_gap_ticket(ticket, dataset, curator):
    sample = services.sample_create(
        dataset=dataset, question="Q?", answer="A", user=curator, gap_ticket=ticket
    )
    sample.refresh_from_db()
    assert sample.gap_ticket == ticket
    assert list(ticket.samples.all()) == [sample]


def test_editor_opened_from_a_ticket_shows_it_and_starts_in_its_category(
    curator_client, ticket, dataset
):
    url = reverse("curation:sample-create", args=[dataset.pk]) + f"?gap_ticket={ticket.pk}"
    response = curator_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Written for gap:" in html and "Still ranks looks" in html
    form = response.context["form"]
    assert form["gap_ticket"].value() == ticket.pk
    assert form["category"].value() == ticket.category_id


def test_editor_ignores_an_unknown_or_resolved_ticket_in_the_query(
    curator_client, curator, ticket, dataset
):
    gaps.gap_ticket_resolve(ticket=ticket, user=curator)
    for value in (str(ticket.pk), "999", "nope"):
        url = reverse("curation:sample-create", args=[dataset.pk]) + f"?gap_ticket={value}"
        response = curator_client.get(url)
        assert response.status_code == 200
        assert "Written for gap:" not in response.content.decode()


def test_saving_from_the_editor_links_the_sample_and_its_page_shows_the_gap(
    curator_client, ticket, dataset, category
):
    url = reverse("curation:sample-create", args=[dataset.pk])
    response = curator_client.post(
        url,
        {
            "category": category.pk,
            "question": "Who is prettiest?",
            "answer": words(60),
            "gap_ticket": ticket.pk,
        },
    )
    assert response.status_code == 302
    sample = Sample.objects.get()
    assert sample.gap_ticket == ticket
    page = curator_client.get(sample.get_absolute_url()).content.decode()
    assert "Written for gap:" in page
    assert reverse("curation:gap-detail", args=[ticket.pk]) in page


def test_editor_refuses_a_ticket_resolved_meanwhile_and_keeps_the_text(
    curator_client, curator, ticket, dataset, category
):
    gaps.gap_ticket_resolve(ticket=ticket, user=curator)
    url = reverse("curation:sample-create", args=[dataset.pk])
    response = curator_client.post(
        url,
        {
            "category": category.pk,
            "question": "Kept question?",
            "answer": "kept",
            "gap_ticket": ticket.pk,
        },
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "does not exist or is resolved" in html and "Kept question?" in html
    assert not Sample.objects.exists()


def test_editing_a_sample_keeps_its_gap_ticket(curator_client, ticket, dataset, category):
    sample = services.sample_create(
        dataset=dataset,
        question="Q?",
        answer="A",
        category=category,
        user=None,
        gap_ticket=ticket,
    )
    response = curator_client.post(
        reverse("curation:sample-edit", args=[sample.pk]),
        {
            "category": category.pk,
            "question": "Q2?",
            "answer": "A2",
            "version": 1,
        },
    )
    assert response.status_code == 302
    sample.refresh_from_db()
    assert sample.question == "Q2?" and sample.gap_ticket == ticket


# --- pages by role ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "expected"),
    [
        ("curator_client", 200),
        ("researcher_client", 200),
        ("admin_client_", 200),
        ("rater_client", 403),
        ("outsider_client", 403),
    ],
)
def test_list_create_and_detail_are_for_curators_and_researchers(
    request, ticket, persona, expected
):
    client = request.getfixturevalue(persona)
    for url in (
        reverse("curation:gap-list"),
        reverse("curation:gap-create"),
        reverse("curation:gap-detail", args=[ticket.pk]),
    ):
        assert client.get(url).status_code == expected, url


@pytest.mark.parametrize(
    ("persona", "expected"),
    [
        ("curator_client", 302),
        ("admin_client_", 302),
        ("researcher_client", 403),
        ("rater_client", 403),
        ("outsider_client", 403),
    ],
)
def test_only_curators_and_admins_resolve(request, ticket, persona, expected):
    client = request.getfixturevalue(persona)
    response = client.post(reverse("curation:gap-resolve", args=[ticket.pk]))
    assert response.status_code == expected
    ticket.refresh_from_db()
    assert (ticket.status == RESOLVED) == (expected == 302)


def test_anonymous_is_sent_to_sign_in(client, ticket):
    response = client.get(reverse("curation:gap-detail", args=[ticket.pk]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_list_filters_by_category_and_status(curator_client, curator, ticket, other_category):
    other = gaps.gap_ticket_create(category=other_category, title="Diagnoses", user=curator)
    gaps.gap_ticket_resolve(ticket=other, user=curator)
    url = reverse("curation:gap-list")
    by_category = curator_client.get(url, {"category": other_category.pk})
    assert list(by_category.context["tickets"]) == [other]
    by_status = curator_client.get(url, {"status": "open"})
    assert list(by_status.context["tickets"]) == [ticket]
    everything = curator_client.get(url, {"status": "bogus"})  # ignored, not an error
    assert set(everything.context["tickets"]) == {ticket, other}


def test_list_filter_returns_only_the_table_for_htmx(curator_client, ticket):
    response = curator_client.get(reverse("curation:gap-list"), {"status": "open"}, **HTMX)
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="tickets"') and "Still ranks looks" in html
    assert "<html" not in html


def test_list_takes_few_queries(curator_client, curator, category, django_assert_max_num_queries):
    for n in range(10):
        gaps.gap_ticket_create(category=category, title=f"Gap {n}", user=curator)
    with django_assert_max_num_queries(8):
        curator_client.get(reverse("curation:gap-list"))


def test_new_ticket_form_is_prefilled_from_the_report_link(researcher_client, category):
    source = json.dumps({"study": 7, "output": "zz99"})
    query = urlencode(
        {
            "category": category.pk,
            "title": "Weak: Appearance",
            "description": "Mean 3.1/7",
            "source": source,
        }
    )
    response = researcher_client.get(reverse("curation:gap-create") + "?" + query)
    form = response.context["form"]
    assert form["category"].value() == category.pk
    assert form["title"].value() == "Weak: Appearance"
    assert form["description"].value() == "Mean 3.1/7"
    assert json.loads(form["source"].value()) == {"study": 7, "output": "zz99"}


def test_a_researcher_files_a_ticket(researcher_client, researcher, category):
    response = researcher_client.post(
        reverse("curation:gap-create"),
        {
            "category": category.pk,
            "title": "Low-rated output",
            "description": "",
            "source": '{"study": 7, "output": "zz99", "score": 1}',
        },
    )
    ticket = GapTicket.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("curation:gap-detail", args=[ticket.pk])
    assert ticket.created_by == researcher
    assert ticket.source == {"study": 7, "output": "zz99", "score": 1}


@pytest.mark.parametrize(
    ("source", "message"),
    [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object")],
)
def test_bad_source_is_shown_on_the_form_and_nothing_is_filed(
    curator_client, category, source, message
):
    response = curator_client.post(
        reverse("curation:gap-create"),
        {
            "category": category.pk,
            "title": "A gap",
            "source": source,
        },
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not GapTicket.objects.exists()


def test_raters_cannot_file_tickets(rater_client, category):
    response = rater_client.post(
        reverse("curation:gap-create"),
        {
            "category": category.pk,
            "title": "A gap",
        },
    )
    assert response.status_code == 403
    assert not GapTicket.objects.exists()


def test_detail_shows_samples_and_offers_writing_only_to_curators(
    curator_client, researcher_client, ticket, dataset, curator, curator2
):
    sample = approved_for(ticket, dataset, curator, curator2)
    url = reverse("curation:gap-detail", args=[ticket.pk])
    write_link = reverse("curation:sample-create", args=[dataset.pk]) + f"?gap_ticket={ticket.pk}"
    resolve_link = reverse("curation:gap-resolve-snapshot", args=[dataset.pk])
    curator_page = curator_client.get(url).content.decode()
    assert sample.get_absolute_url() in curator_page
    assert write_link in curator_page and resolve_link in curator_page
    researcher_page = researcher_client.get(url).content.decode()
    assert sample.get_absolute_url() in researcher_page
    assert write_link not in researcher_page and resolve_link not in researcher_page


def test_resolve_snapshot_page_lists_the_ready_tickets(
    curator_client, ticket, category, dataset, curator, curator2
):
    gaps.gap_ticket_create(category=category, title="Nothing written yet", user=curator)
    approved_for(ticket, dataset, curator, curator2)
    response = curator_client.get(reverse("curation:gap-resolve-snapshot", args=[dataset.pk]))
    assert response.status_code == 200
    assert list(response.context["ready"]) == [ticket]
    assert "Nothing written yet" not in response.content.decode()


def test_resolving_with_a_snapshot_from_the_page_is_one_step(
    curator_client, ticket, dataset, curator, curator2
):
    approved_for(ticket, dataset, curator, curator2)
    url = reverse("curation:gap-resolve-snapshot", args=[dataset.pk])
    response = curator_client.post(url, {"tickets": [ticket.pk], "label": "round 2"})
    snapshot = Snapshot.objects.get()
    assert response.status_code == 302 and response["Location"] == snapshot.get_absolute_url()
    assert snapshot.label == "round 2"
    ticket.refresh_from_db()
    assert ticket.status == RESOLVED and ticket.resolved_in_snapshot == snapshot


def test_resolving_with_a_snapshot_needs_a_ticket(
    curator_client, ticket, dataset, curator, curator2
):
    approved_for(ticket, dataset, curator, curator2)
    url = reverse("curation:gap-resolve-snapshot", args=[dataset.pk])
    response = curator_client.post(url, {"label": "x"})
    assert response.status_code == 400
    assert "Pick at least one gap ticket" in response.content.decode()
    assert not Snapshot.objects.exists()


def test_researchers_cannot_resolve_with_a_snapshot(
    researcher_client, ticket, dataset, curator, curator2
):
    approved_for(ticket, dataset, curator, curator2)
    url = reverse("curation:gap-resolve-snapshot", args=[dataset.pk])
    assert researcher_client.get(url).status_code == 403
    assert researcher_client.post(url, {"tickets": [ticket.pk]}).status_code == 403
    assert not Snapshot.objects.exists()


# --- coverage and navigation ------------------------------------------------------------


def test_coverage_counts_open_tickets_per_category(
    ticket, category, other_category, dataset, curator
):
    gaps.gap_ticket_create(category=category, title="Second", user=curator)
    closed = gaps.gap_ticket_create(category=other_category, title="Closed", user=curator)
    gaps.gap_ticket_resolve(ticket=closed, user=curator)
    services.sample_create(  # a sample joined to the category must not multiply the count
        dataset=dataset,
        question="Q?",
        answer="A",
        category=category,
        user=curator,
        gap_ticket=ticket,
    )
    coverage = dataset_coverage(dataset)
    rows = {row.name: row for row in coverage.rows}
    assert rows["Appearance"].open_gaps == 2 and rows["Appearance"].draft == 1
    assert rows["Health"].open_gaps == 0
    assert coverage.total.open_gaps == 2


def test_coverage_page_links_open_tickets(curator_client, ticket, category, dataset):
    html = curator_client.get(reverse("curation:dataset-coverage", args=[dataset.pk])).content
    html = html.decode()
    link = f"{reverse('curation:gap-list')}?category={category.pk}&amp;status=open"
    assert link in html
    assert 'class="open-gaps"' in html


def test_category_list_links_gap_tickets(researcher_client):
    html = researcher_client.get(reverse("curation:category-list")).content.decode()
    assert reverse("curation:gap-list") in html


# --- API --------------------------------------------------------------------------------


def api(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


def test_api_researcher_files_and_reads_tickets(researcher, category):
    client = api(researcher)
    response = client.post(
        "/api/gap-tickets/",
        {
            "category": category.pk,
            "title": "Weak: Appearance",
            "source": {"study": 7, "category_mean": 3.1},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "open" and body["created_by"] == researcher.username
    assert body["source"] == {"study": 7, "category_mean": 3.1}
    assert client.get(f"/api/gap-tickets/{body['id']}/").json()["title"] == "Weak: Appearance"
    listed = client.get("/api/gap-tickets/", {"category": category.pk, "status": "open"}).json()
    assert [item["id"] for item in listed["results"]] == [body["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x"}, "category"),
        ({"category": "CAT", "title": "x", "source": [1]}, "source"),
        ({"category": "CAT", "title": "x", "status": "resolved"}, "status"),
    ],
)
def test_api_refuses_bad_tickets(curator, category, body, field):
    body = {key: category.pk if value == "CAT" else value for key, value in body.items()}
    response = api(curator).post("/api/gap-tickets/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not GapTicket.objects.exists()


def test_api_refuses_an_archived_category_with_the_services_message(curator, category):
    services.category_archive(category=category)
    response = api(curator).post(
        "/api/gap-tickets/", {"category": category.pk, "title": "x"}, format="json"
    )
    assert response.status_code == 400 and "archived" in response.json()["detail"]


@pytest.mark.parametrize(
    ("persona", "read", "create", "resolve"),
    [
        ("rater", 403, 403, 403),
        ("outsider", 403, 403, 403),
        ("researcher", 200, 201, 403),
        ("curator", 200, 201, 200),
        ("admin_user", 200, 201, 200),
    ],
)
def test_api_access_by_role(request, ticket, category, persona, read, create, resolve):
    client = api(request.getfixturevalue(persona))
    assert client.get("/api/gap-tickets/").status_code == read
    assert client.get(f"/api/gap-tickets/{ticket.pk}/").status_code == read
    created = client.post(
        "/api/gap-tickets/", {"category": category.pk, "title": "x"}, format="json"
    )
    assert created.status_code == create
    assert client.post(f"/api/gap-tickets/{ticket.pk}/resolve/").status_code == resolve


def test_api_anonymous_gets_401(ticket):
    assert api().get("/api/gap-tickets/").status_code == 401


def test_api_resolving_twice_is_a_400(curator, ticket):
    client = api(curator)
    assert client.post(f"/api/gap-tickets/{ticket.pk}/resolve/").json()["status"] == "resolved"
    again = client.post(f"/api/gap-tickets/{ticket.pk}/resolve/")
    assert again.status_code == 400 and "already resolved" in again.json()["detail"]


def test_api_resolve_and_snapshot(curator, curator2, researcher, ticket, dataset):
    sample = approved_for(ticket, dataset, curator, curator2)
    body = {"dataset": dataset.pk, "tickets": [ticket.pk], "label": "api"}
    assert (
        api(researcher).post("/api/gap-tickets/resolve-snapshot/", body, format="json").status_code
        == 403
    )
    response = api(curator).post("/api/gap-tickets/resolve-snapshot/", body, format="json")
    assert response.status_code == 201, response.content
    snapshot = Snapshot.objects.get(pk=response.json()["id"])
    ticket.refresh_from_db()
    assert ticket.resolved_in_snapshot == snapshot
    detail = api(curator).get(f"/api/gap-tickets/{ticket.pk}/").json()
    assert detail["resolved_in_snapshot"] == snapshot.pk and detail["sample_ids"] == [sample.pk]


def test_api_resolve_and_snapshot_refuses_an_empty_list(curator, dataset):
    response = api(curator).post(
        "/api/gap-tickets/resolve-snapshot/",
        {"dataset": dataset.pk, "tickets": []},
        format="json",
    )
    assert response.status_code == 400 and "tickets" in response.json()


def test_api_sample_written_for_a_gap_keeps_the_link(curator, ticket, dataset, category):
    client = api(curator)
    body = {
        "dataset": dataset.pk,
        "category": category.pk,
        "question": "Q?",
        "gap_ticket": ticket.pk,
    }
    response = client.post("/api/samples/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["gap_ticket"] == ticket.pk
    gaps.gap_ticket_resolve(ticket=ticket, user=curator)
    refused = client.post("/api/samples/", body | {"question": "Q2?"}, format="json")
    assert refused.status_code == 400 and "gap_ticket" in refused.json()
