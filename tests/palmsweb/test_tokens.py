"""API tokens expire and are revoked from the account page; the API schema and docs need
a sign-in in production."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.conftest import PASSWORD, api_token, client_for

pytestmark = pytest.mark.django_db


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_a_token_expires(curator, settings):
    response = APIClient().post(
        "/api/auth/token/", {"username": "carol", "password": PASSWORD}, format="json"
    )
    body = response.json()
    expiry = AuthToken.objects.get(user=curator).expiry
    days = settings.REST_KNOX["TOKEN_TTL"].days
    assert abs(expiry - (timezone.now() + timedelta(days=days))) < timedelta(minutes=1)
    assert body["expiry"]
    client = token_client(body["token"])
    assert client.get("/api/samples/").status_code == 200
    AuthToken.objects.filter(user=curator).update(expiry=timezone.now() - timedelta(seconds=1))
    refused = client.get("/api/samples/")
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]


def test_a_garbled_token_header_is_a_401_not_a_500(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token caf\xe9\xff")
    assert client.get("/api/samples/").status_code == 401


def test_the_account_page_lists_makes_and_revokes_tokens(curator, curator2):
    key = api_token(curator)
    theirs = api_token(curator2)
    page = client_for(curator)
    listing = page.get(reverse("account"))
    assert listing.status_code == 200
    html = listing.content.decode()
    assert key[:8] in html and key not in html  # a prefix to recognise it, never the key
    assert theirs[:8] not in html
    made = page.post(reverse("token-create"))
    assert made.status_code == 201
    new_key = made.context["new_key"]
    assert new_key in made.content.decode()
    assert token_client(new_key).get("/api/samples/").status_code == 200
    assert new_key not in page.get(reverse("account")).content.decode()  # shown once
    revoked = page.post(reverse("token-revoke"), {"token": key[:15]})
    assert revoked.status_code == 302
    assert token_client(key).get("/api/samples/").status_code == 401
    assert token_client(new_key).get("/api/samples/").status_code == 200
    # Someone else's token cannot be revoked from your page.
    page.post(reverse("token-revoke"), {"token": theirs[:15]}, follow=True)
    assert token_client(theirs).get("/api/samples/").status_code == 200


def test_the_account_page_needs_a_sign_in(db):
    response = APIClient().get(reverse("account"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_schema_and_docs_need_a_sign_in_in_production(curator, settings):
    settings.DEBUG = False
    anonymous = APIClient()
    assert anonymous.get("/api/schema/").status_code in (401, 403)
    docs = anonymous.get("/api/docs/")
    assert docs.status_code == 302 and "/accounts/login/" in docs["Location"]
    assert token_client(api_token(curator)).get("/api/schema/").status_code == 200
    assert client_for(curator).get("/api/docs/").status_code == 200


def test_schema_and_docs_are_open_in_the_embedded_mode(db, settings):
    settings.DEBUG = True
    assert APIClient().get("/api/schema/").status_code == 200
    assert APIClient().get("/api/docs/").status_code == 200
