"""Which environment variables may be sent as an API key, and to which endpoints.

Admins configure remote models and LLM judges with the *name* of the environment variable
that holds the key; a worker reads it and sends it as a bearer token to the configured
endpoint. Without a limit, an admin could name ``SECRET_KEY`` and an endpoint of their own.
So the operator lists the variables that hold keys (``PALMSWEB_KEY_ENVS``) and, if they
like, the endpoint hosts keys may go to (``PALMSWEB_ENDPOINT_HOSTS``). Every form,
serializer and service that accepts a key variable checks it here, and the worker checks
again right before it reads the environment (:func:`read_key`), so a row written before
the rule, or by hand, cannot send anything either. palmsweb's own secrets are never sent,
whatever the list says.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

DEFAULT_KEY_ENVS = ("OPENAI_API_KEY", "PERSPECTIVE_API_KEY", "TOGETHER_API_KEY", "JUDGE_API_KEY")
# The app's own secrets and connection strings: never a key to send anywhere.
NEVER_SENT = frozenset(
    {
        "SECRET_KEY",
        "DJANGO_SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "CELERY_BROKER_URL",
        "POSTGRES_PASSWORD",
        "PGPASSWORD",
    }
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")


class KeyEnvError(ValueError):
    """A key variable or endpoint the operator does not allow; the message says why."""


def allowed_key_envs() -> list[str]:
    """The operator's key variables, less palmsweb's own secrets."""
    names = getattr(settings, "PALMSWEB_KEY_ENVS", DEFAULT_KEY_ENVS)
    return [name for name in names if name.upper() not in NEVER_SENT]


def check_key_env(name: str | None, *, blank_ok: bool = False) -> str:
    """The stripped variable name if a key may be read from it; "" for a blank name when
    ``blank_ok`` (an endpoint that needs no key). KeyEnvError otherwise."""
    name = (name or "").strip()
    if not name:
        if blank_ok:
            return ""
        raise KeyEnvError("Name the environment variable that holds the key.")
    if not _ENV_NAME.fullmatch(name):
        raise KeyEnvError(
            "The key variable must be an environment variable name (letters, digits, _), "
            "never the key itself."
        )
    if name.upper() in NEVER_SENT:
        raise KeyEnvError(f"{name} holds one of palmsweb's own secrets: it is never sent.")
    allowed = allowed_key_envs()
    if name not in allowed:
        listed = ", ".join(allowed) or "none"
        raise KeyEnvError(
            f"{name} is not a key variable the operator allows (PALMSWEB_KEY_ENVS: {listed})."
        )
    return name


def check_endpoint(url: str | None) -> str:
    """The URL, if keys may be sent to its host. Without PALMSWEB_ENDPOINT_HOSTS every
    host is allowed; with it, the host must be listed (``.example.org`` also allows its
    subdomains)."""
    url = (url or "").strip()
    hosts = [h.lower() for h in getattr(settings, "PALMSWEB_ENDPOINT_HOSTS", [])]
    if not hosts:
        return url
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        host = ""
    if not any(host == h or (h.startswith(".") and host.endswith(h)) for h in hosts):
        raise KeyEnvError(
            f"{host or url!r} is not an endpoint host the operator allows "
            f"(PALMSWEB_ENDPOINT_HOSTS: {', '.join(hosts)})."
        )
    return url


def read_key(name: str | None, *, url: str | None, blank_ok: bool = False) -> str:
    """Read the key for a request to ``url`` now, after checking both rules again. Workers
    call this right before sending; "" when the name is blank and ``blank_ok``."""
    check_endpoint(url)
    name = check_key_env(name, blank_ok=blank_ok)
    return os.environ.get(name, "") if name else ""


def validate_key_env(value: str) -> None:
    """A Django (and DRF) field validator for a key variable's name."""
    try:
        check_key_env(value)
    except KeyEnvError as error:
        raise ValidationError(str(error)) from None


def validate_endpoint(value: str) -> None:
    """A Django (and DRF) field validator for an endpoint URL keys may go to."""
    try:
        check_endpoint(value)
    except KeyEnvError as error:
        raise ValidationError(str(error)) from None
