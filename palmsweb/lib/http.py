"""The HTTP-method decorators every HTML view module uses."""

from django.views.decorators.http import require_http_methods

require_get = require_http_methods(["GET", "HEAD"])
require_post = require_http_methods(["POST"])
require_get_post = require_http_methods(["GET", "HEAD", "POST"])
