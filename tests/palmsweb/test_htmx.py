"""palmsweb.lib.htmx: one rule for when a view answers with a fragment, and the redirects."""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from django_htmx.middleware import HtmxMiddleware

from palmsweb.lib import htmx


def _request(method: str = "get", **headers):
    request = getattr(RequestFactory(), method)("/somewhere/", headers=headers)
    HtmxMiddleware(lambda request: HttpResponse())(request)
    return request


def test_a_plain_request_wants_the_whole_page():
    assert not htmx.is_partial(_request())


def test_an_htmx_request_wants_a_fragment():
    assert htmx.is_partial(_request(HX_Request="true"))


def test_an_htmx_history_restore_wants_the_whole_page():
    request = _request(HX_Request="true", HX_History_Restore_Request="true")
    assert not htmx.is_partial(request)


def test_a_request_that_skipped_the_middleware_is_not_partial():
    assert not htmx.is_partial(RequestFactory().get("/"))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({}, "page.html"), ({"HX_Request": "true"}, "page.html#table")],
)
def test_render_page_names_the_partial_only_for_htmx(monkeypatch, headers, expected):
    seen = {}

    def fake_render(request, template, context, status):
        seen.update(template=template, status=status)
        return HttpResponse(status=status)

    monkeypatch.setattr(htmx, "render", fake_render)
    htmx.render_page(_request(**headers), "page.html", {}, partial="table", status=400)
    assert seen == {"template": expected, "status": 400}


def test_render_page_without_a_partial_renders_the_page_for_htmx(monkeypatch):
    seen = []
    monkeypatch.setattr(htmx, "render", lambda r, template, c, status: seen.append(template))
    htmx.render_page(_request(HX_Request="true"), "page.html", {})
    assert seen == ["page.html"]


def test_client_redirect_sets_hx_redirect_with_no_content():
    response = htmx.client_redirect("/studies/3/")
    assert response.status_code == 204
    assert response["HX-Redirect"] == "/studies/3/" and "Location" not in response


def test_redirect_after_change_is_a_plain_redirect_for_a_form_post():
    response = htmx.redirect_after_change(_request("post"), "/studies/3/")
    assert response.status_code == 302 and response["Location"] == "/studies/3/"


def test_redirect_after_change_is_a_client_redirect_for_htmx():
    response = htmx.redirect_after_change(_request("post", HX_Request="true"), "/studies/3/")
    assert response.status_code == 204 and response["HX-Redirect"] == "/studies/3/"
