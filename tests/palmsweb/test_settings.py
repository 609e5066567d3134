"""Settings from the environment: embedded by default, hardened in production."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from palmsweb.lib.dburl import DatabaseUrlError, parse_database_url, sqlite_database

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_DB = "postgres://palms:s3cret@db.example.org:5432/palms"
# Variables that would leak the test run's own mode into the child process.
SCRUBBED = {"PALMSWEB_TESTING", "DATABASE_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS",
            "DJANGO_SETTINGS_MODULE", "REDIS_URL", "CELERY_BROKER_URL", "SECURE_SSL_REDIRECT",
            "DJANGO_ALLOW_ASYNC_UNSAFE", "PALMSWEB_SQLITE_PATH", "ARTIFACTS_DIR",
            "PALMSWEB_TRUSTED_PROXY", "PALMSWEB_KEY_ENVS", "PALMSWEB_ENDPOINT_HOSTS"}


def run_django(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run manage.py with the real settings module and only the given environment."""
    child_env = {key: value for key, value in os.environ.items() if key not in SCRUBBED}
    child_env.update(PALMSWEB_VAR_DIR=str(tmp_path / "var"), **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=child_env,
        capture_output=True, text=True, timeout=120,
    )


SHOW_SETTINGS = (
    "from django.conf import settings as s; import json; "
    "print(json.dumps({'debug': s.DEBUG, 'engine': s.DATABASES['default']['ENGINE'], "
    "'name': str(s.DATABASES['default']['NAME']), 'embedded': s.EMBEDDED, "
    "'ssl_redirect': getattr(s, 'SECURE_SSL_REDIRECT', False), "
    "'secure_cookies': s.SESSION_COOKIE_SECURE and s.CSRF_COOKIE_SECURE}))"
)


def show_settings(tmp_path: Path, **env: str) -> dict:
    result = run_django(["shell", "-c", SHOW_SETTINGS], tmp_path, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_settings_pass_the_deploy_check(tmp_path):
    result = run_django(
        ["check", "--deploy", "--fail-level", "WARNING"], tmp_path,
        DATABASE_URL=PRODUCTION_DB, SECRET_KEY=secrets.token_urlsafe(50)[:50],
        ALLOWED_HOSTS="example.org",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_mode_is_hardened(tmp_path):
    shown = show_settings(
        tmp_path, DATABASE_URL=PRODUCTION_DB, SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="example.org",
    )
    assert shown == {
        "debug": False, "engine": "django.db.backends.postgresql", "name": "palms",
        "embedded": False, "ssl_redirect": True, "secure_cookies": True,
    }


def test_production_without_secret_key_fails_loudly(tmp_path):
    result = run_django(["check"], tmp_path, DATABASE_URL=PRODUCTION_DB)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_embedded_mode_has_debug_and_sqlite(tmp_path):
    shown = show_settings(tmp_path)
    assert shown["debug"] is True
    assert shown["embedded"] is True
    assert shown["engine"] == "django.db.backends.sqlite3"
    assert shown["name"] == str(tmp_path / "var" / "palmsweb.sqlite3")
    # The embedded secret key is made once and kept private under var/.
    key_file = tmp_path / "var" / "secret_key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    key = key_file.read_text()
    show_settings(tmp_path)
    assert key_file.read_text() == key


# --- DATABASE_URL parsing ----------------------------------------------------------------


def test_postgres_url():
    config = parse_database_url("postgres://palms:s3cret@db.example.org:6543/palmsdb")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["USER"], config["PASSWORD"], config["HOST"],
            config["PORT"]) == ("palmsdb", "palms", "s3cret", "db.example.org", "6543")
    assert config["OPTIONS"] == {}
    assert config["CONN_HEALTH_CHECKS"] is True


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "pgsql"])
def test_postgres_scheme_aliases(scheme):
    assert parse_database_url(f"{scheme}://h/db")["ENGINE"] == "django.db.backends.postgresql"


def test_postgres_url_decodes_escapes_and_options():
    config = parse_database_url(
        "postgresql://user%40corp:p%2Fss%3Aword@10.0.0.5/my%20db?sslmode=require&sslmode=verify-full"
    )
    assert (config["USER"], config["PASSWORD"], config["NAME"]) == (
        "user@corp", "p/ss:word", "my db",
    )
    assert config["OPTIONS"] == {"sslmode": "verify-full"}  # the last one wins
    assert config["PORT"] == ""


def test_postgres_url_defaults():
    config = parse_database_url("postgres://")
    assert (config["NAME"], config["USER"], config["HOST"], config["PORT"]) == (
        "postgres", "", "", "",
    )
    local = parse_database_url("postgres://postgres@127.0.0.1:5432/postgres")
    assert (local["USER"], local["HOST"], local["PORT"], local["PASSWORD"]) == (
        "postgres", "127.0.0.1", "5432", "",
    )


def test_sqlite_url(tmp_path):
    path = tmp_path / "db.sqlite3"
    config = parse_database_url(f"sqlite://{path}")  # sqlite:///abs/path
    assert config == sqlite_database(path)
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == str(path)
    assert config["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in config["OPTIONS"]["init_command"]
    assert config["OPTIONS"]["timeout"] > 0


def test_sqlite_url_with_four_slashes_names_the_same_file(tmp_path):
    path = tmp_path / "db.sqlite3"
    path.touch()
    config = parse_database_url(f"sqlite:///{path}")  # sqlite:////abs/path, as documented
    assert os.path.samefile(config["NAME"], path)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///"])
def test_sqlite_url_needs_a_path(url):
    with pytest.raises(DatabaseUrlError, match="needs a path"):
        parse_database_url(url)


@pytest.mark.parametrize("url", ["mysql://u@h/db", "redis://localhost", "", "just-text"])
def test_unsupported_urls_are_refused(url):
    with pytest.raises(DatabaseUrlError, match="unsupported"):
        parse_database_url(url)


PROXY_SETTINGS = (
    "from django.conf import settings as s; import json; "
    "print(json.dumps({'proxy_header': getattr(s, 'SECURE_PROXY_SSL_HEADER', None), "
    "'exempt': s.SECURE_REDIRECT_EXEMPT, 'trusted': s.PALMSWEB_TRUSTED_PROXY}))"
)


@pytest.mark.parametrize(("trusted", "header"), [("", None), ("1", ["HTTP_X_FORWARDED_PROTO",
                                                                      "https"])])
def test_x_forwarded_proto_is_trusted_only_behind_a_configured_proxy(tmp_path, trusted, header):
    env = {"DATABASE_URL": PRODUCTION_DB, "SECRET_KEY": secrets.token_urlsafe(50),
           "ALLOWED_HOSTS": "example.org", "PALMSWEB_TRUSTED_PROXY": trusted}
    result = run_django(["shell", "-c", PROXY_SETTINGS], tmp_path, **env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown["proxy_header"] == header
    assert shown["trusted"] is bool(trusted)
    assert shown["exempt"] == ["^healthz$"]
