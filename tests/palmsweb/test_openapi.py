"""The OpenAPI schema says what the API answers (the schemathesis run checks the
answers themselves on the PostgreSQL leg; these are the quick checks for every leg)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(admin_user) -> dict:
    client = APIClient()
    client.force_login(admin_user)
    return client.get("/api/schema/", {"format": "json"}).json()


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield path, method, operation


def test_every_operation_documents_its_error_answers(schema):
    for path, method, operation in operations(schema):
        missing = {"401", "403", "404", "429"} - set(operation["responses"])
        assert not missing, (method, path, missing)
        if method != "get":
            assert "400" in operation["responses"], (method, path)


@pytest.mark.parametrize(
    "path",
    ["/api/samples/{id}/comments/", "/api/samples/{id}/revisions/", "/api/studies/{id}/events/"],
)
def test_lists_that_are_not_paginated_are_not_documented_as_paginated(schema, path):
    body = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    assert body["schema"]["type"] == "array"


def test_fields_that_can_be_null_are_nullable(schema):
    components = schema["components"]["schemas"]
    for name, field in [("Dataset", "created_by"), ("GapTicket", "resolved_by"),
                        ("FineTuneJob", "created_by"), ("StudyArm", "model_version")]:
        assert components[name]["properties"][field].get("nullable") is True, (name, field)
    assert components["BaseModel"]["properties"]["base_url"].get("format") != "uri"
