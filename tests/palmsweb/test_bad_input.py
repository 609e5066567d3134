"""Hostile input from the outside audit: each one a clear 4xx that changes nothing.

Most of these were 500s on PostgreSQL only (it refuses NUL in text and 32-bit overflows),
so the tests assert the status and the unchanged database on every backend.
"""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from curation import services
from curation.models import Sample, StaleEdit
from evaluation.models import Study
from tests.conftest import client_for
from tests.evaluation.conftest import make_prompt_set, make_versions
from tests.factories import words

pytestmark = pytest.mark.django_db

DEEP = "[" * 100_000 + "]" * 100_000  # past Python's recursion limit when parsed


def api(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def dataset(curator):
    return services.dataset_create(name="Values", user=curator)


@pytest.fixture
def sample(dataset, curator):
    return services.sample_create(dataset=dataset, question="Q?", answer=words(50), user=curator)


def test_a_version_past_32_bits_is_a_400_and_keeps_nothing(sample, curator):
    response = api(curator).patch(
        f"/api/samples/{sample.pk}/", {"version": 2**31, "answer": "changed"}, format="json"
    )
    assert response.status_code == 400 and "version" in response.json()
    assert not StaleEdit.objects.exists()
    sample.refresh_from_db()
    assert sample.version == 1 and sample.answer != "changed"


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("raw-nul.jsonl", b'{"prompt": "Q\x00?", "completion": "A."}\n'),
        ("escaped-nul.jsonl", b'{"prompt": "Q?", "completion": "A\\u0000."}\n'),
        ("nul-category.jsonl", b'{"prompt": "Q?", "completion": "A.", "category": "\\u0000"}\n'),
        ("raw-nul.csv", b"question,answer\nQ?,A\x00.\n"),
        ("deep.jsonl", ('{"prompt": ' + DEEP + "}\n").encode()),
    ],
)
def test_nul_and_deeply_nested_imports_are_rejected_by_line(dataset, curator, name, body):
    upload = SimpleUploadedFile(name, body)
    response = api(curator).post(
        f"/api/datasets/{dataset.pk}/import/", {"file": upload}, format="multipart"
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["line"] == (2 if name.endswith(".csv") else 1)
    assert not Sample.objects.exists()


def test_a_nul_import_through_the_page_shows_the_line(dataset, curator):
    upload = SimpleUploadedFile("x.jsonl", b'{"prompt": "Q?", "completion": "A\\u0000"}\n')
    response = client_for(curator).post(
        reverse("curation:dataset-import", args=[dataset.pk]), {"file": upload, "status": "draft"}
    )
    assert response.status_code == 400
    assert "NUL character" in response.content.decode()
    assert not Sample.objects.exists()


@pytest.mark.parametrize("param", ["search", "author", "status", "dataset"])
def test_nul_in_a_query_parameter_is_a_400(sample, curator, param):
    response = api(curator).get("/api/samples/", {param: "a\x00b"})
    assert response.status_code == 400
    assert b"NUL" in response.content


def test_nul_in_a_page_query_is_a_400(dataset, curator):
    page = reverse("curation:dataset-detail", args=[dataset.pk])
    assert client_for(curator).get(page, {"q": "x\x00"}).status_code == 400


def test_a_deeply_nested_json_body_is_a_400(dataset, curator):
    response = api(curator).generic(
        "POST", "/api/samples/", DEEP, content_type="application/json"
    )
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_a_nul_inside_a_json_body_is_a_400(admin_user):
    body = json.dumps({"name": "x", "prompts": [{"text": "hi\x00", "category": "c"}]})
    response = api(admin_user).generic(
        "POST", "/api/sampling-jobs/", body, content_type="application/json"
    )
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]


def test_a_study_seed_past_64_bits_is_a_400(admin_user):
    versions = make_versions()
    body = {
        "name": "Seeded",
        "prompt_set": make_prompt_set().pk,
        "arms": [{"arm": "base", "model_version": versions["base"].pk}],
        "seed": 2**63,
    }
    response = api(admin_user).post("/api/studies/", body, format="json")
    assert response.status_code == 400 and "seed" in response.json()
    assert not Study.objects.exists()


@pytest.mark.parametrize(
    ("path", "param"),
    [("/api/samples/", "dataset"), ("/api/snapshots/", "dataset"),
     ("/api/gap-tickets/", "category"), ("/api/study-outputs/", "study"),
     ("/api/persona-measurements/", "model_version")],
)
@pytest.mark.parametrize("value", [str(2**70), "-" + str(2**64), "²", "12abc"])
def test_an_id_filter_no_column_can_hold_is_a_400(admin_user, path, param, value):
    response = api(admin_user).get(path, {param: value})
    assert response.status_code == 400 and param in response.json()
