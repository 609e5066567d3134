"""docker-compose.yml parses and every service runs something that exists."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def module_exists(dotted: str) -> bool:
    return importlib.util.find_spec(dotted) is not None


def test_stack_has_the_designed_services():
    assert {"postgres", "redis", "web", "worker-default", "worker-gpu"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_long_running_services_have_healthchecks(name):
    service = SERVICES[name]
    if name in {"migrate", "beat"}:
        return  # a one-shot job and a scheduler with no port or queue to probe
    assert "healthcheck" in service, f"{name} has no healthcheck"


def test_data_lives_in_named_volumes():
    assert {"pgdata", "redisdata", "artifacts"} <= set(COMPOSE["volumes"])
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]


def test_gpu_worker_reserves_an_nvidia_device_and_runs_one_task():
    devices = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    command = SERVICES["worker-gpu"]["command"]
    assert command[command.index("-Q") + 1] == "gpu"
    assert command[command.index("-c") + 1] == "1"


def test_web_command_names_an_importable_wsgi_app():
    command = SERVICES["web"]["command"]
    module, attr = command[1].split(":")
    assert module_exists(module)
    assert hasattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("name", ["worker-default", "worker-gpu", "beat"])
def test_celery_commands_name_the_celery_app(name):
    command = SERVICES[name]["command"]
    app = command[command.index("-A") + 1]
    assert module_exists(app)
    assert hasattr(importlib.import_module(app), "celery_app")


def test_migrate_runs_manage_py():
    assert SERVICES["migrate"]["command"][1] == "manage.py"
    assert (ROOT / "manage.py").exists()


def test_app_services_get_secrets_from_the_environment_only():
    env = SERVICES["web"]["environment"]
    assert env["SECRET_KEY"].startswith("${SECRET_KEY")
    assert "${POSTGRES_PASSWORD" in env["DATABASE_URL"]
    assert (ROOT / "Dockerfile").exists()


# --- the proxy, the web container and its health check --------------------------------------


def test_only_the_proxy_publishes_ports():
    published = {name for name, service in SERVICES.items() if service.get("ports")}
    assert published == {"proxy"}
    assert {"80:80", "443:443"} <= set(SERVICES["proxy"]["ports"])
    assert "8000" in [str(port) for port in SERVICES["web"]["expose"]]
    command = SERVICES["proxy"]["command"]
    assert command[command.index("--to") + 1] == "web:8000"


def test_web_trusts_the_proxy_because_only_the_proxy_reaches_it():
    assert SERVICES["web"]["environment"]["PALMSWEB_TRUSTED_PROXY"] == "1"
    assert "ports" not in SERVICES["web"]


def test_the_web_health_check_runs_the_probe_module():
    assert SERVICES["web"]["healthcheck"]["test"] == ["CMD", "python", "-m", "palmsweb.healthcheck"]
    assert module_exists("palmsweb.healthcheck")


@pytest.fixture
def production_web(settings, db):
    """Start the app as production serves it (DEBUG off, HTTPS redirect on, behind a
    trusted proxy, one allowed host) on a port of its own; call again after changing a
    setting (middleware reads its settings when the app starts)."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from django.core.handlers.wsgi import WSGIHandler

    settings.DEBUG = False
    settings.SECURE_SSL_REDIRECT = True
    settings.PALMSWEB_TRUSTED_PROXY = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.ALLOWED_HOSTS = ["palms.example.org", "www.palms.example.org"]
    servers = []

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    def serve() -> str:
        server = make_server("127.0.0.1", 0, WSGIHandler(), handler_class=Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


ENV = {"ALLOWED_HOSTS": "palms.example.org,www.palms.example.org"}


def test_the_health_check_passes_against_production_settings(production_web):
    from palmsweb import healthcheck

    assert healthcheck.check(f"{production_web()}/healthz", ENV) == (True, "ok")


def test_the_health_check_fails_on_a_redirect_a_refused_host_or_no_answer(
    production_web, settings
):
    from palmsweb import healthcheck

    url = production_web()
    healthy, why = healthcheck.check(f"{url}/accounts/login/", ENV)
    assert not healthy and why.startswith("HTTP 301 https://")  # the HTTPS redirect
    wrong_host = {"ALLOWED_HOSTS": "elsewhere.example"}
    assert healthcheck.check(f"{url}/healthz", wrong_host)[0] is False
    settings.SECURE_REDIRECT_EXEMPT = []  # without the exemption it could never pass
    assert healthcheck.check(f"{production_web()}/healthz", ENV)[0] is False
    assert healthcheck.check("http://127.0.0.1:9/healthz", ENV)[0] is False


@pytest.mark.parametrize(
    ("allowed", "host"),
    [("palms.example.org", "palms.example.org"), (".example.org", "example.org"),
     ("*", "localhost"), ("", "localhost")],
)
def test_the_probe_sends_an_allowed_host(allowed, host):
    from palmsweb.healthcheck import probe_host

    assert probe_host({"ALLOWED_HOSTS": allowed}) == host
