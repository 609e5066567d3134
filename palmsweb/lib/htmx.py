"""The htmx helpers every HTML view module uses: when to answer with a fragment, and how to
send the browser elsewhere after a change. django-htmx's middleware sets ``request.htmx``."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django_htmx.http import HttpResponseClientRedirect


def is_partial(request: HttpRequest) -> bool:
    """An htmx request that wants a fragment. A history restore (the user went back and
    htmx's cache missed) is an htmx request too, but it wants the whole page."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.history_restore_request


def render_page(
    request: HttpRequest, template: str, context: dict, *, partial: str = "", status: int = 200
) -> HttpResponse:
    """Render the page, or only its template partial ``partial`` for an htmx request."""
    if partial and is_partial(request):
        template = f"{template}#{partial}"
    return render(request, template, context, status=status)


def client_redirect(url: str) -> HttpResponseClientRedirect:
    """Tell htmx to load ``url`` as a full page (``HX-Redirect``). No Content: htmx follows
    the header and has nothing to swap."""
    return HttpResponseClientRedirect(url, status=204)


def redirect_after_change(request: HttpRequest, url: str) -> HttpResponse:
    """After a change: a plain redirect for a form post, a client redirect for htmx (a
    plain 302 would be followed inside the XHR and swapped into the target)."""
    if is_partial(request):
        return client_redirect(url)
    return redirect(url)
