"""Sign-in, its rate limit, sign-out, CSRF, and the create_user command."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import SESSION_KEY, get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.test.client import RequestFactory
from rest_framework.test import APIClient

from palmsweb.roles import Role, user_roles
from tests.conftest import PASSWORD

LOGIN = "/accounts/login/"


def sign_in(client: Client, username: str, password: str, **extra):
    return client.post(LOGIN, {"username": username, "password": password}, **extra)


def signed_in(client: Client) -> bool:
    return SESSION_KEY in client.session


def test_login_page_renders(db):
    response = Client().get(LOGIN)
    assert response.status_code == 200
    assert b'name="csrfmiddlewaretoken"' in response.content
    assert b'name="password"' in response.content


def test_right_password_signs_in(curator):
    client = Client()
    response = sign_in(client, "carol", PASSWORD)
    assert response.status_code == 302
    assert signed_in(client)


def test_wrong_password_is_counted_case_insensitively(curator, settings):
    settings.LOGIN_RATE_LIMIT = 2
    client = Client()
    response = sign_in(client, "carol", "wrong")
    assert response.status_code == 200
    assert not signed_in(client)
    assert response.context["form"].errors
    locked = sign_in(Client(REMOTE_ADDR="10.0.0.8"), "CAROL", "wrong")  # same account
    assert locked.status_code == 429
    assert sign_in(Client(REMOTE_ADDR="10.0.0.9"), "carol", PASSWORD).status_code == 429


def test_after_too_many_failures_even_the_right_password_gets_429(curator, settings):
    settings.LOGIN_RATE_LIMIT = 3
    client = Client()
    for _ in range(2):
        assert sign_in(client, "carol", "wrong").status_code == 200
    assert sign_in(client, "carol", "wrong").status_code == 429  # the limit is reached
    response = sign_in(client, "carol", PASSWORD)
    assert response.status_code == 429
    assert b"Too many failed sign-in attempts" in response.content
    assert not signed_in(client)


def test_guessing_one_account_from_many_addresses_is_limited(curator, settings):
    settings.LOGIN_RATE_LIMIT = 3
    for n in range(3):
        sign_in(Client(REMOTE_ADDR=f"10.0.0.{n}"), "carol", "wrong")
    response = sign_in(Client(REMOTE_ADDR="10.0.0.99"), "carol", PASSWORD)
    assert response.status_code == 429


def test_one_address_guessing_many_accounts_is_limited(curator, curator2, settings):
    settings.LOGIN_RATE_LIMIT = 3
    client = Client(REMOTE_ADDR="10.9.9.9")
    for name in ("x1", "x2", "x3"):
        sign_in(client, name, "wrong")
    assert sign_in(client, "dave", PASSWORD).status_code == 429
    assert sign_in(Client(REMOTE_ADDR="10.9.9.10"), "dave", PASSWORD).status_code == 302


def test_success_resets_the_account_counter(curator, settings):
    settings.LOGIN_RATE_LIMIT = 3
    first = Client(REMOTE_ADDR="10.0.0.1")
    for _ in range(2):
        sign_in(first, "carol", "wrong")
    assert sign_in(first, "carol", PASSWORD).status_code == 302
    # From another address, the account again has its full allowance.
    second = Client(REMOTE_ADDR="10.0.0.2")
    for _ in range(2):
        assert sign_in(second, "carol", "wrong").status_code == 200
    assert sign_in(second, "carol", PASSWORD).status_code == 302


PROXY = "172.18.0.5"  # every request arrives from the proxy's address


def via_proxy(client_address: str) -> Client:
    return Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"203.0.113.77, {client_address}")


def test_behind_a_trusted_proxy_one_guesser_does_not_lock_everyone_out(
    curator, curator2, settings
):
    """The audit's case: all users share the proxy's address. With the proxy trusted,
    each is counted by the address the proxy saw (the last X-Forwarded-For entry)."""
    settings.PALMSWEB_TRUSTED_PROXY = True
    settings.LOGIN_RATE_LIMIT = 3
    guesser = via_proxy("198.51.100.1")
    for name in ("x1", "x2", "x3", "x4"):
        sign_in(guesser, name, "wrong")
    assert sign_in(guesser, "dave", PASSWORD).status_code == 429  # the guesser is locked
    colleague = via_proxy("198.51.100.2")
    assert sign_in(colleague, "dave", PASSWORD).status_code == 302
    token = APIClient(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="198.51.100.3").post(
        "/api/auth/token/", {"username": "carol", "password": PASSWORD}, format="json"
    )
    assert token.status_code == 200


def test_without_a_trusted_proxy_forwarded_addresses_are_ignored(curator2, settings):
    """Anyone can send X-Forwarded-For: unless the operator trusts a proxy, a guesser
    cannot dodge the per-address limit by varying it."""
    settings.LOGIN_RATE_LIMIT = 3
    for n, name in enumerate(("x1", "x2", "x3")):
        sign_in(via_proxy(f"198.51.100.{n}"), name, "wrong")
    assert sign_in(via_proxy("198.51.100.9"), "dave", PASSWORD).status_code == 429


def test_the_token_endpoint_and_the_page_share_one_limit(curator, settings):
    settings.LOGIN_RATE_LIMIT = 3
    api = APIClient(REMOTE_ADDR="10.1.1.1")
    body = {"username": "carol", "password": "wrong"}
    assert api.post("/api/auth/token/", body, format="json").status_code == 400
    assert sign_in(Client(REMOTE_ADDR="10.1.1.2"), "carol", "wrong").status_code == 200
    locked = api.post("/api/auth/token/", body, format="json")
    assert locked.status_code == 429 and "Too many failed" in locked.json()["detail"]
    right = {"username": "carol", "password": PASSWORD}
    assert api.post("/api/auth/token/", right, format="json").status_code == 429
    assert sign_in(Client(REMOTE_ADDR="10.1.1.3"), "carol", PASSWORD).status_code == 429


def test_logout_is_post_only(curator):
    client = Client()
    client.force_login(curator)
    assert client.get("/accounts/logout/").status_code == 405
    assert signed_in(client)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == LOGIN
    assert not signed_in(client)


def test_login_enforces_csrf(curator):
    client = Client(enforce_csrf_checks=True)
    assert sign_in(client, "carol", PASSWORD).status_code == 403
    assert not signed_in(client)
    client.get(LOGIN)
    token = client.cookies["csrftoken"].value
    response = client.post(
        LOGIN, {"username": "carol", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert signed_in(client)


def test_logout_enforces_csrf(curator):
    client = Client(enforce_csrf_checks=True)
    client.force_login(curator)
    assert client.post("/accounts/logout/").status_code == 403
    assert signed_in(client)


# --- create_user -------------------------------------------------------------------------


def create_user(*args, stdin: str | None = None) -> str:
    out = io.StringIO()
    kwargs = {"stdout": out}
    if stdin is not None:
        kwargs["stdin"] = io.StringIO(stdin)
    call_command("create_user", *args, **kwargs)
    return out.getvalue()


def roles_of(username: str) -> set[str]:
    user = get_user_model().objects.get(username=username)
    return {role.value for role in user_roles(user)}


@pytest.mark.django_db
def test_create_user_with_a_role_and_password():
    output = create_user("cleo", "--role", "curator", "--password", "a-long-unusual-passphrase",
                         "--email", "cleo@example.org")
    assert "Created user 'cleo' (curator in Default)" in output
    assert "Password:" not in output
    user = get_user_model().objects.get(username="cleo")
    assert user.check_password("a-long-unusual-passphrase")
    assert user.email == "cleo@example.org"
    assert not user.is_staff
    assert roles_of("cleo") == {"curator"}


@pytest.mark.django_db
def test_create_user_generates_and_prints_a_password():
    output = create_user("rory", "--role", "rater", "--role", "researcher")
    password = output.split("Password: ")[1].strip()
    assert len(password) >= 12
    user = get_user_model().objects.get(username="rory")
    assert user.check_password(password)
    assert roles_of("rory") == {"rater", "researcher"}
    # Django's test login passes no request; django-axes needs one to count attempts.
    assert Client().login(request=RequestFactory().get("/"), username="rory", password=password)


@pytest.mark.django_db
def test_admin_role_makes_staff():
    create_user("ada2", "--role", "admin", "--password", "a-long-unusual-passphrase")
    user = get_user_model().objects.get(username="ada2")
    assert user.is_staff and user.is_superuser
    assert Role.ADMIN in user_roles(user)


@pytest.mark.django_db
def test_password_from_stdin():
    create_user("sid", "--role", "curator", "--password-stdin",
                stdin="piped-in-passphrase-42\n")
    assert get_user_model().objects.get(username="sid").check_password("piped-in-passphrase-42")


@pytest.mark.django_db
def test_weak_password_is_refused():
    with pytest.raises(CommandError, match="Password refused"):
        create_user("weak", "--role", "curator", "--password", "123")
    assert not get_user_model().objects.filter(username="weak").exists()


@pytest.mark.django_db
def test_unknown_role_is_a_clear_error():
    with pytest.raises(CommandError, match="invalid choice: 'wizard'"):
        create_user("merlin", "--role", "wizard")
    assert not get_user_model().objects.filter(username="merlin").exists()


@pytest.mark.django_db
def test_a_role_is_required():
    with pytest.raises(CommandError, match="at least one --role"):
        create_user("nobody")


def test_existing_user_is_an_error_unless_update(curator):
    with pytest.raises(CommandError, match="already exists; use --update"):
        create_user("carol", "--role", "rater")
    assert roles_of("carol") == {"curator"}
    output = create_user("carol", "--role", "rater", "--update")
    assert "Updated user 'carol' (curator in Default, rater in Default)" in output
    assert roles_of("carol") == {"curator", "rater"}
    assert get_user_model().objects.get(username="carol").check_password(PASSWORD)


@pytest.mark.django_db
def test_update_of_a_missing_user_is_an_error():
    with pytest.raises(CommandError, match="does not exist"):
        create_user("ghost", "--role", "rater", "--update")
