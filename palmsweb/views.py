"""Project-level pages: home dashboard, sign-in (limited by django-axes), the account page
with API tokens, the API docs, and the health check."""

from __future__ import annotations

import re
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import redirect_to_login
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import Resolver404
from django.views.decorators.http import require_GET, require_http_methods
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import BasePermission

from palmsweb import tokens
from palmsweb.lib.http import require_get, require_post
from palmsweb.roles import user_roles

# --- sign-in limits (django-axes reads these through settings.AXES_*) -----------------------


def login_failure_limit(request, credentials) -> int:
    return settings.LOGIN_RATE_LIMIT


def login_cooloff(request) -> timedelta:
    return timedelta(seconds=settings.LOGIN_RATE_WINDOW_SECONDS)


def login_username(request, credentials) -> str:
    """Usernames are counted case-insensitively, so "Carol" and "carol" share a limit."""
    username = (credentials or {}).get("username") or request.POST.get("username") or ""
    return str(username).strip().lower()


def lockout_message() -> str:
    minutes = max(1, round(settings.LOGIN_RATE_WINDOW_SECONDS / 60))
    return f"Too many failed sign-in attempts. Wait {minutes} minutes and try again."


def locked_out(request, response=None, credentials=None) -> HttpResponse:
    """What a locked-out sign-in gets: 429, as JSON for the API, else the sign-in page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": lockout_message()}, status=429)
    form = AuthenticationForm(request, data=request.POST or None)
    form.errors.clear()
    form.add_error(None, lockout_message())
    return render(request, "registration/login.html", {"form": form}, status=429)


class LoginView(auth_views.LoginView):
    """Django's sign-in; django-axes counts failures per username and per client address
    (see palmsweb.lib.clientip) and answers 429 past the limit, right password or not."""

    template_name = "registration/login.html"


# --- pages ----------------------------------------------------------------------------------


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")


@require_get
@login_required
def account(request: HttpRequest) -> HttpResponse:
    """The signed-in user's account: API tokens (create, list with expiry, revoke)."""
    context = {"tokens": tokens.tokens_of(request.user), "new_key": None}
    return render(request, "registration/account.html", context)


@require_post
@login_required
def token_create(request: HttpRequest) -> HttpResponse:
    """A new API token, shown on this response only (only its hash is stored)."""
    instance, key = tokens.token_create(user=request.user)
    context = {"tokens": tokens.tokens_of(request.user), "new_key": key, "new": instance}
    return render(request, "registration/account.html", context, status=201)


@require_post
@login_required
def token_revoke(request: HttpRequest) -> HttpResponse:
    """Revoke one of your tokens, named by its key prefix in the form (not in the URL,
    which servers log)."""
    try:
        tokens.token_revoke(user=request.user, token_key=request.POST.get("token", ""))
    except tokens.TokenError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Revoked: the token no longer works.")
    return redirect("account")


# --- API schema and docs --------------------------------------------------------------------


class SchemaAccess(BasePermission):
    """The schema is open in the embedded (DEBUG) mode; in production, signed-in users
    only: it maps every endpoint of the app."""

    message = "Sign in to read the API schema."

    def has_permission(self, request, view) -> bool:
        return settings.DEBUG or bool(request.user and request.user.is_authenticated)


api_schema = SpectacularAPIView.as_view(permission_classes=[SchemaAccess])
_swagger = SpectacularSwaggerView.as_view(url_name="api-schema", permission_classes=[SchemaAccess])


def api_docs(request: HttpRequest, *args, **kwargs) -> HttpResponse:
    """The interactive docs; in production, the sign-in page first for anonymous users."""
    if not settings.DEBUG and not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    return _swagger(request, *args, **kwargs)


# --- health ---------------------------------------------------------------------------------


@require_http_methods(["GET", "HEAD"])
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for docker-compose: the process answers and the database is reachable.
    No sign-in, and exempt from the HTTPS redirect (SECURE_REDIRECT_EXEMPT): the check
    probes plain HTTP from inside the container."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


# --- error pages ------------------------------------------------------------------------------

NOT_FOUND_QUERY = re.compile(r"^No (?P<name>[\w ]+) matches the given query\.$")


def _error_page(request: HttpRequest, *, status: int, title: str, reason: str) -> HttpResponse:
    """A 403 or 404 inside the site: navigation, the reason, who is signed in with which
    roles, and the places their roles open."""
    context = {
        "status": status,
        "title": title,
        "reason": reason,
        "roles": sorted(role.value for role in user_roles(request.user)),
    }
    return render(request, "_error.html", context, status=status)


def permission_denied(request: HttpRequest, exception=None) -> HttpResponse:
    """handler403: says why (the message the view gave) and where the user may go."""
    reason = str(exception or "").strip() or "Your role does not allow this page."
    return _error_page(request, status=403, title="Not for your role", reason=reason)


def page_not_found(request: HttpRequest, exception=None) -> HttpResponse:
    """handler404: a friendly reason. The URL resolver's own message (which lists every
    route) never reaches the page; "No Study matches the given query." becomes words."""
    reason = "Nothing is at this address: it may have been deleted, or the link is mistyped."
    message = "" if isinstance(exception, Resolver404) else str(exception or "").strip()
    match = NOT_FOUND_QUERY.match(message)
    if match:
        reason = f"There is no {match['name'].lower()} with this number: it may have been "
        reason += "deleted, or the link is mistyped."
    elif message and not message.startswith("{"):
        reason = message
    return _error_page(request, status=404, title="Not found", reason=reason)
