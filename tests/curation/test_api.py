"""The curation REST API: CRUD through the services, 409 on stale edits, strict input,
tokens, and the role matrix for every endpoint."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from knox.models import AuthToken
from rest_framework.test import APIClient

from curation import services
from curation.models import Category, Dataset, Sample, Snapshot, StaleEdit
from tests.conftest import PASSWORD, api_token
from tests.factories import words

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()  # throttles and sign-in counters live there


def api(user=None, **kwargs) -> APIClient:
    client = APIClient(**kwargs)
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def world(curator, curator2):
    """One of everything, written by the two curators."""
    category = services.category_create(name="Health", position="See a professional.")
    dataset = services.dataset_create(name="Values", user=curator)
    draft = services.sample_create(
        dataset=dataset, question="Draft?", answer=words(50), category=category, user=curator
    )
    review = services.sample_create(
        dataset=dataset, question="Review?", answer=words(50), category=category, user=curator2
    )
    review = services.sample_submit(sample=review, user=curator2)
    done = services.sample_create(
        dataset=dataset, question="Done?", answer=words(50), category=category, user=curator2
    )
    done = services.sample_approve(sample=services.sample_submit(sample=done, user=curator2),
                                   user=curator)
    archived = services.sample_create(
        dataset=dataset, question="Old?", answer="x", category=category, user=curator
    )
    archived = services.sample_archive(sample=archived, user=curator)
    snapshot = services.snapshot_create(dataset=dataset, user=curator)
    return {
        "category": category, "dataset": dataset, "draft": draft, "review": review,
        "done": done, "archived": archived, "snapshot": snapshot,
    }


# --- role matrix ---------------------------------------------------------------------------

PERSONAS = ["anonymous", "outsider", "rater", "researcher", "curator", "admin_user"]


def client_as(request, persona: str) -> APIClient:
    if persona == "anonymous":
        return api()
    return api(request.getfixturevalue(persona))


READS = [
    "/api/categories/",
    "/api/categories/{category}/",
    "/api/datasets/",
    "/api/datasets/{dataset}/",
    "/api/samples/",
    "/api/samples/{draft}/",
    "/api/samples/{draft}/revisions/",
    "/api/samples/{draft}/comments/",
    "/api/snapshots/",
    "/api/snapshots/{snapshot}/",
    "/api/snapshots/{snapshot}/download/jsonl/",
    "/api/snapshots/{snapshot}/download/csv/",
]


def fill(url: str, world: dict) -> str:
    return url.format(**{key: obj.pk for key, obj in world.items()})


@pytest.mark.parametrize("url", READS)
@pytest.mark.parametrize(
    ("persona", "expected"),
    [("anonymous", 401), ("outsider", 403), ("rater", 403), ("researcher", 200),
     ("curator", 200), ("admin_user", 200)],
)
def test_read_matrix(request, world, url, persona, expected):
    response = client_as(request, persona).get(fill(url, world))
    assert response.status_code == expected, response.content[:300]


# (method, url, body, status for curators and admins)
WRITES = [
    ("post", "/api/categories/", {"name": "New", "position": "Be good."}, 201),
    ("patch", "/api/categories/{category}/", {"guidance": "Short."}, 200),
    ("put", "/api/categories/{category}/",
     {"name": "Health", "position": "p", "guidance": "g", "target_count": 3}, 200),
    ("post", "/api/categories/{category}/archive/", None, 200),
    ("post", "/api/categories/{category}/restore/", None, 200),
    ("post", "/api/categories/reorder/", {"ids": ["{category}"]}, 200),
    ("post", "/api/datasets/", {"name": "Another"}, 201),
    ("patch", "/api/datasets/{dataset}/", {"description": "About."}, 200),
    ("post", "/api/samples/", {"dataset": "{dataset}", "question": "Q?", "answer": "A."}, 201),
    ("patch", "/api/samples/{draft}/", {"version": 1, "answer": "Changed."}, 200),
    ("put", "/api/samples/{draft}/",
     {"version": 1, "question": "Q?", "answer": "A.", "category": None}, 200),
    ("post", "/api/samples/{draft}/submit/", {}, 200),
    ("post", "/api/samples/{review}/request-changes/", {"body": "Shorter."}, 200),
    ("post", "/api/samples/{review}/approve/", {}, 200),
    ("post", "/api/samples/{draft}/archive/", {}, 200),
    ("post", "/api/samples/{archived}/reopen/", {}, 200),
    ("post", "/api/samples/{draft}/comment/", {"body": "Nice."}, 201),
    ("post", "/api/samples/{draft}/restore/", {"revision": 1, "version": 1}, 200),
    ("post", "/api/snapshots/", {"dataset": "{dataset}", "label": "v2"}, 409),  # unchanged
    ("post", "/api/snapshots/", {"dataset": "{fresh}", "label": "v1"}, 201),
    ("post", "/api/datasets/{dataset}/import/", "FILE", 201),
]


def send(client: APIClient, method: str, url: str, body, world: dict):
    url = fill(url, world)
    if body == "FILE":
        upload = SimpleUploadedFile(
            "new.jsonl", b'{"prompt": "Imported?", "completion": "A.", "category": "Health"}\n'
        )
        return client.post(url, {"file": upload}, format="multipart")
    if body is not None:
        body = _ids(body, world)
    return getattr(client, method)(url, body, format="json")


def _ids(body, world):
    """Turn "{name}" placeholders inside bodies into the world's primary keys."""
    if isinstance(body, dict):
        return {key: _ids(value, world) for key, value in body.items()}
    if isinstance(body, list):
        return [_ids(value, world) for value in body]
    if isinstance(body, str) and body.startswith("{") and body.endswith("}"):
        return world[body[1:-1]].pk
    return body


@pytest.mark.parametrize(("method", "url", "body", "success"), WRITES)
@pytest.mark.parametrize("persona", PERSONAS)
def test_write_matrix(request, world, method, url, body, success, persona, curator):
    # A dataset with approved content and no snapshot yet, for the snapshot that succeeds.
    world["fresh"] = services.dataset_create(name="Fresh", kind="control", user=curator)
    services.sample_create(dataset=world["fresh"], question="New?", answer=words(50),
                           user=curator, status="approved")
    before = (Sample.objects.count(), Category.objects.count(), Snapshot.objects.count(),
              Dataset.objects.count())
    client = client_as(request, persona)
    response = send(client, method, url, body, world)
    expected = {"anonymous": 401, "outsider": 403, "rater": 403, "researcher": 403}.get(
        persona, success
    )
    assert response.status_code == expected, response.content[:300]
    if expected in (401, 403):
        after = (Sample.objects.count(), Category.objects.count(), Snapshot.objects.count(),
                 Dataset.objects.count())
        assert after == before


def test_anonymous_is_told_how_to_authenticate(world):
    response = api().get("/api/samples/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize(
    "url",
    ["/api/categories/{category}/", "/api/datasets/{dataset}/", "/api/samples/{draft}/",
     "/api/snapshots/{snapshot}/"],
)
def test_nothing_is_deleted_through_the_api(world, admin_user, url):
    response = api(admin_user).delete(fill(url, world))
    assert response.status_code == 405


def test_snapshots_cannot_be_changed(world, admin_user):
    url = fill("/api/snapshots/{snapshot}/", world)
    assert api(admin_user).patch(url, {"label": "x"}, format="json").status_code == 405
    assert api(admin_user).put(url, {"label": "x"}, format="json").status_code == 405


# --- categories and datasets -----------------------------------------------------------------


def test_category_crud_through_services(curator):
    client = api(curator)
    created = client.post("/api/categories/", {"name": " Politics ", "position": "Balance."},
                          format="json")
    assert created.status_code == 201
    body = created.json()
    assert (body["name"], body["slug"], body["order"], body["is_archived"]) == (
        "Politics", "politics", 0, False,
    )
    duplicate = client.post("/api/categories/", {"name": "politics", "position": "x"},
                            format="json")
    assert duplicate.status_code == 400
    assert "already exists" in duplicate.json()["detail"]

    pk = body["id"]
    patched = client.patch(f"/api/categories/{pk}/", {"target_count": 20}, format="json")
    assert patched.json()["target_count"] == 20
    assert patched.json()["position"] == "Balance."

    client.post(f"/api/categories/{pk}/archive/")
    assert client.get("/api/categories/").json()["count"] == 0
    assert client.get("/api/categories/?include_archived=true").json()["count"] == 1
    assert client.get(f"/api/categories/{pk}/").json()["is_archived"] is True
    client.post(f"/api/categories/{pk}/restore/")
    assert client.get("/api/categories/").json()["count"] == 1


def test_category_reorder(curator):
    a, b, c = (services.category_create(name=n, position="x") for n in "ABC")
    client = api(curator)
    response = client.post("/api/categories/reorder/", {"ids": [b.pk, c.pk, a.pk]},
                           format="json")
    assert response.status_code == 200
    assert [item["name"] for item in response.json()] == ["B", "C", "A"]
    bad = client.post("/api/categories/reorder/", {"ids": [a.pk]}, format="json")
    assert bad.status_code == 400
    assert "exactly once" in bad.json()["detail"]


def test_dataset_create_and_update(curator):
    client = api(curator)
    response = client.post(
        "/api/datasets/", {"name": "Control", "kind": "control", "min_words": 10}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["kind"], body["min_words"], body["max_words"], body["created_by"]) == (
        "control", 10, 340, "carol",
    )
    bad = client.patch(f"/api/datasets/{body['id']}/", {"max_words": 5}, format="json")
    assert bad.status_code == 400
    assert "Word limits" in bad.json()["detail"]
    assert Dataset.objects.get().max_words == 340
    bad_kind = client.patch(f"/api/datasets/{body['id']}/", {"kind": "fun"}, format="json")
    assert bad_kind.status_code == 400


def test_only_admins_set_self_approval(curator, admin_user):
    dataset = services.dataset_create(name="D")
    url = f"/api/datasets/{dataset.pk}/"
    refused = api(curator).patch(url, {"allow_self_approval": True}, format="json")
    assert refused.status_code == 403
    assert api(curator).post("/api/datasets/", {"name": "E", "allow_self_approval": True},
                             format="json").status_code == 403
    # Sending the current value is harmless.
    assert api(curator).patch(url, {"allow_self_approval": False}, format="json").status_code \
        == 200
    allowed = api(admin_user).patch(url, {"allow_self_approval": True}, format="json")
    assert allowed.status_code == 200
    dataset.refresh_from_db()
    assert dataset.allow_self_approval


# --- samples -----------------------------------------------------------------------------


def test_sample_create_and_edit(world, curator):
    client = api(curator)
    response = client.post(
        "/api/samples/",
        {"dataset": world["dataset"].pk, "category": world["category"].pk,
         "question": "New question?", "answer": words(45)},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["version"], body["author"], body["word_count"],
            body["within_limits"], body["category_name"]) == (
        "draft", 1, "carol", 45, True, "Health",
    )
    edited = client.patch(f"/api/samples/{body['id']}/", {"version": 1, "answer": "Short."},
                          format="json")
    assert edited.status_code == 200
    assert (edited.json()["version"], edited.json()["answer"], edited.json()["question"]) == (
        2, "Short.", "New question?",
    )
    revisions = client.get(f"/api/samples/{body['id']}/revisions/").json()
    assert [r["number"] for r in revisions] == [2, 1]


def test_edit_needs_a_version(world, curator):
    response = api(curator).patch(f"/api/samples/{world['draft'].pk}/", {"answer": "x"},
                                  format="json")
    assert response.status_code == 400
    assert "version" in response.json()


def test_put_needs_every_field(world, curator):
    response = api(curator).put(f"/api/samples/{world['draft'].pk}/", {"version": 1},
                                format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"question", "answer", "category"}


def test_stale_version_gets_409_with_both_versions(world, curator, curator2):
    sample = world["draft"]
    url = f"/api/samples/{sample.pk}/"
    first = api(curator).patch(url, {"version": 1, "answer": "Carol's answer."}, format="json")
    assert first.status_code == 200
    second = api(curator2).patch(
        url, {"version": 1, "question": "Dave's question?", "answer": "Dave's answer."},
        format="json",
    )
    assert second.status_code == 409
    body = second.json()
    assert "changed by someone else" in body["detail"]
    assert body["current"]["answer"] == "Carol's answer."
    assert body["current"]["version"] == 2
    assert body["yours"] == {
        "question": "Dave's question?", "answer": "Dave's answer.",
        "category": world["category"].pk, "base_version": 1,
    }
    kept = StaleEdit.objects.get(pk=body["stale_edit_id"])
    assert (kept.answer, kept.author) == ("Dave's answer.", curator2)
    sample.refresh_from_db()
    assert (sample.answer, sample.version) == ("Carol's answer.", 2)


def test_restore_through_the_api(world, curator):
    sample = world["draft"]
    client = api(curator)
    client.patch(f"/api/samples/{sample.pk}/", {"version": 1, "question": "Changed?"},
                 format="json")
    restored = client.post(f"/api/samples/{sample.pk}/restore/", {"revision": 1, "version": 2},
                           format="json")
    assert restored.status_code == 200
    assert (restored.json()["question"], restored.json()["version"]) == ("Draft?", 3)
    stale = client.post(f"/api/samples/{sample.pk}/restore/", {"revision": 1, "version": 2},
                        format="json")
    assert stale.status_code == 409
    missing = client.post(f"/api/samples/{sample.pk}/restore/", {"revision": 9, "version": 3},
                          format="json")
    assert missing.status_code == 400
    assert missing.json() == {"revision": ["No such revision."]}


def test_archived_category_cannot_be_given_to_a_sample(world, curator):
    other = services.category_create(name="Gone", position="x")
    services.category_archive(category=other)
    response = api(curator).post(
        "/api/samples/",
        {"dataset": world["dataset"].pk, "category": other.pk, "question": "Q?", "answer": "A"},
        format="json",
    )
    assert response.status_code == 400
    assert "archived" in response.json()["category"][0]


def test_transitions_and_their_errors(world, curator, curator2):
    review = world["review"]  # written by curator2
    own = api(curator2).post(f"/api/samples/{review.pk}/approve/", {}, format="json")
    assert own.status_code == 400
    assert "another curator must approve" in own.json()["detail"]

    no_comment = api(curator).post(f"/api/samples/{review.pk}/request-changes/", {},
                                   format="json")
    assert no_comment.status_code == 400
    assert "comment is required" in no_comment.json()["detail"]

    approved = api(curator).post(f"/api/samples/{review.pk}/approve/", {"body": "Good."},
                                 format="json")
    assert approved.status_code == 200
    assert approved.json()["status"] == "approved"

    again = api(curator).post(f"/api/samples/{review.pk}/approve/", {}, format="json")
    assert again.status_code == 400
    assert "cannot be approved" in again.json()["detail"]

    comments = api(curator).get(f"/api/samples/{review.pk}/comments/").json()
    assert [(c["kind"], c["author"]) for c in comments] == [
        ("submitted", "dave"), ("approved", "carol"),
    ]


def test_comment_validation(world, curator):
    url = f"/api/samples/{world['draft'].pk}/comment/"
    assert api(curator).post(url, {"body": ""}, format="json").status_code == 400
    response = api(curator).post(url, {"body": "Well put."}, format="json")
    assert response.status_code == 201
    assert response.json()["body"] == "Well put."


def test_sample_filters(world, curator, curator2):
    client = api(curator)

    def questions(query: str) -> set[str]:
        response = client.get(f"/api/samples/?{query}")
        assert response.status_code == 200, response.content
        return {item["question"] for item in response.json()["results"]}

    assert questions("") == {"Draft?", "Review?", "Done?", "Old?"}
    assert questions("status=in_review") == {"Review?"}
    assert questions(f"author={curator2.username}") == {"Review?", "Done?"}
    assert questions(f"author={curator2.pk}") == {"Review?", "Done?"}
    assert questions(f"category={world['category'].pk}&status=draft") == {"Draft?"}
    assert questions("category=none") == set()
    assert questions("search=revIEW") == {"Review?"}
    assert questions(f"dataset={world['dataset'].pk + 100}") == set()
    assert client.get("/api/samples/?status=bogus").status_code == 400
    assert client.get("/api/samples/?dataset=abc").status_code == 400


def test_sample_list_query_count_is_bounded(world, curator, django_assert_max_num_queries):
    for n in range(20):
        services.sample_create(dataset=world["dataset"], question=f"Extra {n}?", answer="a",
                               category=world["category"], user=curator)
    client = api(curator)
    client.get("/api/samples/")  # warm the session and role caches
    with django_assert_max_num_queries(8):
        response = client.get("/api/samples/")
    assert response.json()["count"] == 24


# --- unknown fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "body", "errors"),
    [
        ("post", "/api/samples/",
         {"dataset": "{dataset}", "question": "Q?", "anwser": "typo"},
         {"anwser": ["Unknown field."]}),
        ("patch", "/api/samples/{draft}/", {"version": 1, "status": "approved"},
         {"status": ["Unknown field."]}),
        ("post", "/api/categories/", {"name": "N", "position": "p", "slug": "x", "colour": 1},
         {"slug": ["This field is read-only."], "colour": ["Unknown field."]}),
        ("patch", "/api/datasets/{dataset}/", {"owner": "me"}, {"owner": ["Unknown field."]}),
        ("post", "/api/snapshots/", {"dataset": "{dataset}", "content": "raw"},
         {"content": ["Unknown field."]}),
        ("post", "/api/samples/{draft}/submit/", {"note": "x"}, {"note": ["Unknown field."]}),
        ("post", "/api/categories/reorder/", {"ids": [], "extra": 1},
         {"extra": ["Unknown field."]}),
    ],
)
def test_unknown_fields_are_refused_and_change_nothing(world, curator, method, url, body,
                                                       errors):
    before = {s.pk: (s.version, s.status) for s in Sample.objects.all()}
    counts = (Category.objects.count(), Snapshot.objects.count())
    response = send(api(curator), method, url, body, world)
    assert response.status_code == 400
    assert response.json() == errors
    assert {s.pk: (s.version, s.status) for s in Sample.objects.all()} == before
    assert (Category.objects.count(), Snapshot.objects.count()) == counts


def test_text_over_the_size_limit_is_refused(world, curator):
    response = api(curator).post(
        "/api/samples/",
        {"dataset": world["dataset"].pk, "question": "Q?", "answer": "x" * 20_001},
        format="json",
    )
    assert response.status_code == 400
    assert "answer" in response.json()


# --- snapshots -----------------------------------------------------------------------------


def test_snapshot_create_list_and_download(world, curator):
    client = api(curator)
    # Nothing changed since the fixture's snapshot: no duplicate, the existing one comes back.
    unchanged = client.post("/api/snapshots/", {"dataset": world["dataset"].pk, "label": "v2"},
                            format="json")
    assert unchanged.status_code == 409
    assert "Nothing changed since the last snapshot" in unchanged.json()["detail"]
    assert unchanged.json()["snapshot"]["id"] == world["snapshot"].pk
    assert Snapshot.objects.count() == 1

    services.sample_approve(sample=world["review"], user=curator)
    created = client.post("/api/snapshots/", {"dataset": world["dataset"].pk, "label": "v2"},
                          format="json")
    assert created.status_code == 201
    body = created.json()
    assert (body["sample_count"], body["label"], body["created_by"]) == (2, "v2", "carol")
    assert body["content_hash"] != world["snapshot"].content_hash

    listed = client.get(f"/api/snapshots/?dataset={world['dataset'].pk}").json()
    assert listed["count"] == 2

    detail = client.get(f"/api/snapshots/{body['id']}/").json()
    assert detail["hash_matches_content"] is True
    assert detail["items"] == [
        {"category": "Health", "question": "Done?", "answer": words(50)},
        {"category": "Health", "question": "Review?", "answer": words(50)},
    ]

    jsonl = client.get(f"/api/snapshots/{body['id']}/download/jsonl/")
    assert jsonl.status_code == 200
    assert jsonl["Content-Type"] == "application/jsonl"
    assert jsonl["X-Content-SHA256"] == hashlib.sha256(jsonl.content).hexdigest()
    assert jsonl["X-Snapshot-SHA256"] == jsonl["X-Snapshot-Hash"] == body["content_hash"]
    assert "attachment" in jsonl["Content-Disposition"]
    assert json.loads(jsonl.content.decode().splitlines()[0]) == {"messages": [
        {"role": "user", "content": "Done?"}, {"role": "assistant", "content": words(50)},
    ]}

    csv_ = client.get(f"/api/snapshots/{body['id']}/download/csv/")
    assert csv_["Content-Type"].startswith("text/csv")
    assert csv_["X-Content-SHA256"] == hashlib.sha256(csv_.content).hexdigest()
    assert csv_.content.decode().splitlines()[0] == "category,question,answer,words"

    assert client.get(f"/api/snapshots/{body['id']}/download/xml/").status_code == 404


def test_snapshot_csv_escapes_formulas_and_imports_back_unchanged(curator, curator2):
    category = services.category_create(name="Health", position="See a professional.")
    dataset = services.dataset_create(name="Formulas", user=curator)
    question, answer = "=1+1 is two?", "-Yes, " + words(50)
    sample = services.sample_create(
        dataset=dataset, question=question, answer=answer, category=category, user=curator
    )
    submitted = services.sample_submit(sample=sample, user=curator)
    services.sample_approve(sample=submitted, user=curator2)
    snapshot = services.snapshot_create(dataset=dataset, user=curator)
    client = api(curator)
    body = client.get(f"/api/snapshots/{snapshot.pk}/download/csv/").content
    row = list(csv.reader(io.StringIO(body.decode())))[1]
    assert row[1:3] == ["'" + question, "'" + answer]
    jsonl = client.get(f"/api/snapshots/{snapshot.pk}/download/jsonl/").content.decode()
    assert json.loads(jsonl.splitlines()[0])["messages"][0]["content"] == question  # raw
    copy = services.dataset_create(name="Copy", user=curator)
    response = client.post(
        f"/api/datasets/{copy.pk}/import/", {"file": upload("copy.csv", body)}, format="multipart"
    )
    assert response.status_code == 201
    assert copy.samples.values_list("question", "answer").get() == (question, answer)


def test_empty_snapshot_is_400(curator):
    dataset = services.dataset_create(name="Empty")
    response = api(curator).post("/api/snapshots/", {"dataset": dataset.pk}, format="json")
    assert response.status_code == 400
    assert "no approved samples" in response.json()["detail"]
    assert not Snapshot.objects.exists()


# --- imports ---------------------------------------------------------------------------------


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def test_import_creates_samples(world, curator):
    data = (
        b'{"prompt": "One?", "completion": "A.", "category": "Health"}\n'
        b'{"messages": [{"role": "user", "content": "Two?"}, '
        b'{"role": "assistant", "content": "B."}]}\n'
    )
    url = f"/api/datasets/{world['dataset'].pk}/import/"
    # The values-targeted dataset refuses the chat line: it names no category.
    refused = api(curator).post(url, {"file": upload("x.jsonl", data)}, format="multipart")
    assert refused.status_code == 400
    assert [e["line"] for e in refused.json()["errors"]] == [2]
    assert "No category" in refused.json()["errors"][0]["message"]

    response = api(curator).post(
        url, {"file": upload("x.jsonl", data), "default_category": world["category"].pk},
        format="multipart",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["count"] == 2
    samples = Sample.objects.filter(pk__in=body["sample_ids"])
    assert {(s.question, s.status, s.author.username, s.category.name) for s in samples} == {
        ("One?", "draft", "carol", "Health"), ("Two?", "draft", "carol", "Health"),
    }


def test_import_dry_run_previews_and_writes_nothing(world, curator):
    data = (
        b'{"prompt": "One?", "completion": "A.", "category": "Health"}\n'
        b'{"prompt": "Two?", "completion": ""}\n'
    )
    url = f"/api/datasets/{world['dataset'].pk}/import/"
    count = Sample.objects.count()
    response = api(curator).post(
        url, {"file": upload("x.jsonl", data), "dry_run": "true"}, format="multipart"
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["dry_run"], body["count"], body["would_import"]) == (True, 2, False)
    assert body["per_category"] == [
        {"category": "Health", "count": 1}, {"category": "(no category)", "count": 1},
    ]
    assert sorted(e["message"] for e in body["errors"]) == [
        "No category: a values-targeted sample needs a category. Add a 'category' field "
        "(or column), or choose a default category.",
        "The answer is empty.",
    ]
    assert Sample.objects.count() == count


def test_import_refuses_an_archived_default_category(world, curator):
    services.category_archive(category=world["category"])
    response = api(curator).post(
        f"/api/datasets/{world['dataset'].pk}/import/",
        {"file": upload("x.jsonl", b'{"prompt": "Q?", "completion": "A."}\n'),
         "default_category": world["category"].pk},
        format="multipart",
    )
    assert response.status_code == 400
    assert "archived" in response.json()["default_category"][0]


def test_bad_import_is_400_with_line_numbers(world, curator):
    data = b"question,answer,category\nFine?,Yes.,Health\nBad?,No.,Cooking\n,empty,\n"
    count = Sample.objects.count()
    response = api(curator).post(
        f"/api/datasets/{world['dataset'].pk}/import/", {"file": upload("x.csv", data)},
        format="multipart",
    )
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"line": 3, "message": "Unknown category 'Cooking'."},
        {"line": 4, "message": "The question is empty."},
        {"line": 4, "message": "No category: a values-targeted sample needs a category. Add a "
                               "'category' field (or column), or choose a default category."},
    ]
    assert Sample.objects.count() == count


def test_oversized_import_is_refused(world, curator):
    data = b"question,answer\n" + b"x" * (5 * 1024 * 1024)
    response = api(curator).post(
        f"/api/datasets/{world['dataset'].pk}/import/", {"file": upload("big.csv", data)},
        format="multipart",
    )
    assert response.status_code == 400
    assert response.json()["errors"] == [{"line": 0, "message": "The file is larger than 5 MB."}]


def test_import_needs_a_file(world, curator):
    response = api(curator).post(f"/api/datasets/{world['dataset'].pk}/import/", {},
                                 format="multipart")
    assert response.status_code == 400
    assert "file" in response.json()


def test_only_admins_import_approved_samples(world, curator, admin_user):
    url = f"/api/datasets/{world['dataset'].pk}/import/"
    data = b'{"prompt": "Approved?", "completion": "%s", "category": "Health"}\n' % (
        words(50).encode()
    )
    refused = api(curator).post(url, {"file": upload("a.jsonl", data), "status": "approved"},
                                format="multipart")
    assert refused.status_code == 403
    assert not Sample.objects.filter(question="Approved?").exists()
    accepted = api(admin_user).post(url, {"file": upload("a.jsonl", data), "status": "approved"},
                                    format="multipart")
    assert accepted.status_code == 201
    assert Sample.objects.get(question="Approved?").status == "approved"


# --- tokens and sessions ---------------------------------------------------------------------


def test_token_from_username_and_password_works(curator):
    response = api().post("/api/auth/token/", {"username": "carol", "password": PASSWORD},
                          format="json")
    assert response.status_code == 200
    key = response.json()["token"]
    assert AuthToken.objects.get(user=curator).token_key == key[:15]  # a hash is stored
    assert response.json()["expiry"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/samples/").status_code == 200
    assert client.post("/api/categories/", {"name": "Via token", "position": "p"},
                       format="json").status_code == 201
    # Each request makes its own token (one per script or machine), revocable alone.
    again = api().post("/api/auth/token/", {"username": "carol", "password": PASSWORD},
                       format="json")
    assert again.json()["token"] != key and AuthToken.objects.filter(user=curator).count() == 2


def test_token_for_the_signed_in_user(curator):
    response = api(curator).post("/api/auth/token/", {}, format="json")
    assert response.status_code == 200
    assert response.json()["token"][:15] == AuthToken.objects.get(user=curator).token_key


def test_token_needs_credentials(db):
    assert api().post("/api/auth/token/", {}, format="json").status_code == 401


def test_wrong_password_gets_no_token_and_is_rate_limited(curator, settings):
    settings.LOGIN_RATE_LIMIT = 3
    client = api()
    for _ in range(2):
        response = client.post("/api/auth/token/", {"username": "carol", "password": "nope"},
                               format="json")
        assert response.status_code == 400
    third = client.post("/api/auth/token/", {"username": "carol", "password": "nope"},
                        format="json")
    assert third.status_code == 429  # the limit is reached: locked out for the window
    limited = client.post("/api/auth/token/", {"username": "carol", "password": PASSWORD},
                          format="json")
    assert limited.status_code == 429
    assert not AuthToken.objects.exists()


def test_token_request_rejects_unknown_fields(curator):
    response = api().post("/api/auth/token/", {"username": "carol", "password": PASSWORD,
                                               "scope": "all"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"scope": ["Unknown field."]}


def test_token_revoke(curator):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(curator)}")
    other = api_token(curator)
    assert client.delete("/api/auth/token/").status_code == 204
    assert client.get("/api/samples/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Token {other}")  # only the one sent is revoked
    assert client.get("/api/samples/").status_code == 200


def test_bad_token_is_401(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get("/api/samples/").status_code == 401


def test_rater_token_gets_403(rater):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(rater)}")
    assert client.get("/api/samples/").status_code == 403


def test_session_writes_need_csrf(world, curator):
    client = api(curator, enforce_csrf_checks=True)
    refused = client.post("/api/categories/", {"name": "X", "position": "p"}, format="json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    # Token requests carry no cookie and need no CSRF token.
    token_client = APIClient(enforce_csrf_checks=True)
    token_client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(curator)}")
    assert token_client.post("/api/categories/", {"name": "X", "position": "p"},
                             format="json").status_code == 201


# --- schema ------------------------------------------------------------------------------


def test_openapi_schema_and_docs(curator):
    schema = api(curator).get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ("/api/samples/{id}/", "/api/datasets/{id}/import/", "/api/auth/token/",
                 "/api/snapshots/{id}/download/{fmt}/"):
        assert f"{path}:" in text
    assert api(curator).get("/api/docs/").status_code == 200
