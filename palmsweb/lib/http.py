"""The HTTP-method decorators every HTML view module uses, and the middleware that refuses
what no view can store."""

from django.http import HttpResponseBadRequest
from django.views.decorators.http import require_http_methods

require_get = require_http_methods(["GET", "HEAD"])
require_post = require_http_methods(["POST"])
require_get_post = require_http_methods(["GET", "HEAD", "POST"])

NUL_MESSAGE = "The request contains a NUL character (\\0), which no field accepts."


def has_nul(values) -> bool:
    """True when any string in a QueryDict (keys or values) holds a NUL character."""
    return any("\x00" in key or any("\x00" in v for v in vs) for key, vs in values.lists())


class RejectNulMiddleware:
    # PostgreSQL cannot store or even compare text with a NUL in it: a NUL in a search
    # box or a filter reached the database and came back as a 500. No field of this app
    # accepts one, so a query string (or form body) carrying one is refused up front with
    # a 400. Form fields and DRF's CharField refuse NUL themselves; this covers the query
    # parameters that views read directly.

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if has_nul(request.GET):
            return HttpResponseBadRequest(NUL_MESSAGE, content_type="text/plain")
        return self.get_response(request)
