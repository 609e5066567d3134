"""Turn a DATABASE_URL into a Django DATABASES entry (postgres:// and sqlite:// only)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql"}


class DatabaseUrlError(ValueError):
    """DATABASE_URL names a scheme or shape palmsweb does not support."""


def parse_database_url(url: str) -> dict:
    """Return a DATABASES["default"] dict for ``url``.

    Supported: ``postgres://user:pass@host:port/name?sslmode=...`` (psycopg 3) and
    ``sqlite:////absolute/path.sqlite3``.
    """
    parts = urlsplit(url)
    if parts.scheme in POSTGRES_SCHEMES:
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")) or "postgres",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            # An empty host means the local socket, as libpq does it.
            "HOST": unquote(parts.hostname or ""),
            "PORT": str(parts.port or ""),
            "OPTIONS": options,
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    if parts.scheme == "sqlite":
        # sqlite:////abs/path.db → "//abs/path.db"; one leading slash is the real path.
        path = "/" + unquote(parts.path).lstrip("/") if parts.path.strip("/") else ""
        if not path or path == "/":
            raise DatabaseUrlError("sqlite DATABASE_URL needs a path: sqlite:////abs/path.db")
        return sqlite_database(Path(path))
    raise DatabaseUrlError(f"unsupported DATABASE_URL scheme {parts.scheme!r}")


def sqlite_database(path: Path) -> dict:
    """SQLite tuned for a web process and a worker writing at the same time."""
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            # WAL lets readers run beside the writer; IMMEDIATE takes the write lock at
            # BEGIN so two writers queue instead of failing with "database is locked".
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }
