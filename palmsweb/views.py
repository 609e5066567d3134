"""Project-level pages: home dashboard, rate-limited login, health check."""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import Resolver404
from django.views.decorators.http import require_GET, require_http_methods

from palmsweb.lib import ratelimit
from palmsweb.roles import user_roles

LOGIN_SCOPE = "login"


def _client_ip(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "")


class RateLimitedLoginView(auth_views.LoginView):
    """Django's login, refusing further attempts after too many failures.

    Failures are counted per client address and per username, so neither a single
    address nor a distributed guess at one account gets unlimited tries.
    """

    template_name = "registration/login.html"

    def _idents(self) -> list[str]:
        username = (self.request.POST.get("username") or "").strip().lower()
        return [f"ip:{_client_ip(self.request)}", f"user:{username}"]

    def post(self, request, *args, **kwargs):
        limit = settings.LOGIN_RATE_LIMIT
        if any(ratelimit.is_limited(LOGIN_SCOPE, i, limit=limit) for i in self._idents()):
            form = self.get_form()
            form.errors.clear()
            form.add_error(None, "Too many failed sign-in attempts. Wait 15 minutes and try again.")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        for ident in self._idents():
            ratelimit.record_failure(
                LOGIN_SCOPE, ident, window_seconds=settings.LOGIN_RATE_WINDOW_SECONDS
            )
        return super().form_invalid(form)

    def form_valid(self, form):
        ratelimit.reset(LOGIN_SCOPE, f"user:{form.get_user().get_username().lower()}")
        return super().form_valid(form)


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")


@require_http_methods(["GET", "HEAD"])
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for docker-compose: the process answers and the database is reachable."""
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
