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
