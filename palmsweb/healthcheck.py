"""The web container's health check (docker-compose runs ``python -m palmsweb.healthcheck``).

It asks the app itself, over plain HTTP inside the container, for ``/healthz``, which is
exempt from the HTTPS redirect (``SECURE_REDIRECT_EXEMPT``) and needs no sign-in. The Host
header is the first of ``ALLOWED_HOSTS``, as the proxy would send it: any other host is
refused by Django. Healthy only on a 200 whose body says ``"ok"``; a redirect, an error or
no answer is unhealthy. Standard library only, so a probe costs no Django start-up.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8000/healthz"


def probe_host(environ: Mapping[str, str]) -> str:
    """The Host to send: the first allowed host (".example.org" → "example.org")."""
    first = (environ.get("ALLOWED_HOSTS") or "localhost").split(",")[0].strip()
    if first in {"", "*"}:
        return "localhost"
    return first.lstrip(".")


def check(url: str = DEFAULT_URL, environ: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """(healthy, why) for one probe of ``url``; redirects are not followed."""
    environ = os.environ if environ is None else environ
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=4)
    try:
        connection.request("GET", parts.path or "/", headers={"Host": probe_host(environ)})
        response = connection.getresponse()
        body = response.read(2048)
    except OSError as error:
        return False, f"no answer: {error}"
    finally:
        connection.close()
    if response.status != 200:
        return False, f"HTTP {response.status} {response.getheader('Location') or ''}".strip()
    try:
        healthy = json.loads(body).get("status") == "ok"
    except (ValueError, AttributeError):
        healthy = False
    return healthy, "ok" if healthy else f"unexpected body: {body[:200]!r}"


def main() -> int:
    healthy, why = check(os.environ.get("HEALTHCHECK_URL", DEFAULT_URL))
    print(why)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
