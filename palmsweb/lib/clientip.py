"""The address a request came from, for sign-in limits and logs.

Behind the documented TLS proxy every request arrives from the proxy's address, so a
limit per ``REMOTE_ADDR`` lumps all users together (five wrong passwords from anyone
locked everyone out). When the operator says the proxy is trusted
(``PALMSWEB_TRUSTED_PROXY``), the client address is the one that proxy put last in
``X-Forwarded-For``: the address that connected to it. Earlier entries are whatever the
client sent and are ignored. Without the setting the header is never read, since anyone
could send one.

Hand-written rather than django-ipware: the rule for one trusted hop is three lines, and
ipware's default (the left-most address) is the one a client can forge.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings


def client_ip(request) -> str:
    """The client's address: the trusted proxy's last ``X-Forwarded-For`` entry when
    ``PALMSWEB_TRUSTED_PROXY`` is on (and the entry is an IP address), else REMOTE_ADDR."""
    remote = request.META.get("REMOTE_ADDR", "") or ""
    if not getattr(settings, "PALMSWEB_TRUSTED_PROXY", False):
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    last = forwarded.split(",")[-1].strip() if forwarded else ""
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return remote
