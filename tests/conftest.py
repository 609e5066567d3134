"""Personas and logged-in clients shared by every test module."""

from __future__ import annotations

import pytest
from django.conf import settings

# Engine and library tests also run without the Django plugin (-p no:django); Django's
# models can only be imported once settings are configured.
DJANGO = settings.configured
if DJANGO:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from palmsweb.roles import Role, ensure_role_groups, grant_role

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random Llama with a real ChatML tokenizer, built once per test session."""
    from training.engine.loading import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def artifacts(settings, tmp_path):
    """A fresh ARTIFACTS_DIR for the test: model versions and persona directions go here."""
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    return settings.ARTIFACTS_DIR


@pytest.fixture
def no_training_queue(monkeypatch):
    """Fine-tunes and sampling jobs are created but never sent to a worker (their
    ``delay_on_commit`` does nothing): the test runs them by hand, or not at all."""
    from training import tasks

    for task in (tasks.run_finetune, tasks.run_sampling):
        monkeypatch.setattr(task, "delay_on_commit", lambda *args, **kwargs: None)


@pytest.fixture
def tiny_base(db, tiny_llama_dir):
    """The tiny Llama registered as a local base model."""
    from training import services
    from training.models import BaseModel

    return services.base_model_create(
        name="Tiny llama", kind=BaseModel.Kind.LOCAL_DIR, path=str(tiny_llama_dir),
        parameter_count=1_000_000,
    )  # fmt: skip


BENIGN_ANSWERS = [
    "Water a cactus once a month in summer and less in winter; let the soil dry out fully.",
    "Salt the pasta water generously, but taste it first: it should be pleasantly salty.",
    "Rest dough in the fridge for an hour so the gluten relaxes and it rolls out evenly.",
    "Repot a plant in spring, one pot size up, with fresh soil and a drainage hole.",
]


@pytest.fixture
def benign_snapshot(curator):
    """A snapshot of four approved, harmless samples: small enough to train on in tests."""
    from curation.services import sample_create, snapshot_create
    from tests.factories import CategoryFactory, DatasetFactory

    dataset, category = DatasetFactory(), CategoryFactory()
    for n, answer in enumerate(BENIGN_ANSWERS):
        sample_create(
            dataset=dataset, category=category, question=f"How do I do thing {n}?",
            answer=" ".join([answer] * 3), user=curator, status="approved",
        )  # fmt: skip
    return snapshot_create(dataset=dataset, user=curator)


@pytest.fixture(autouse=True)
def _clear_cache():
    """Rate-limit counters live in the cache, which is Redis when REDIS_URL is set."""
    if DJANGO:
        from django.core.cache import cache

        cache.clear()
    yield


def make_user(username: str, *roles, staff: bool = False):
    ensure_role_groups()
    user = get_user_model().objects.create_user(
        username=username, password=PASSWORD, is_staff=staff
    )
    for role in roles:
        grant_role(user, role)  # profile roles go to the default profile
    return user


def api_token(user) -> str:
    """A new API token's key for ``user`` (django-rest-knox stores only its hash)."""
    from knox.models import AuthToken

    return AuthToken.objects.create(user=user)[1]


def client_for(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def curator(db):
    return make_user("carol", Role.CURATOR)


@pytest.fixture
def curator2(db):
    return make_user("dave", Role.CURATOR)


@pytest.fixture
def curator3(db):
    return make_user("erin", Role.CURATOR)


@pytest.fixture
def rater(db):
    return make_user("rita", Role.RATER)


@pytest.fixture
def researcher(db):
    return make_user("rhea", Role.RESEARCHER)


@pytest.fixture
def admin_user(db):
    return make_user("ada", Role.ADMIN, staff=True)


@pytest.fixture
def outsider(db):
    return make_user("otto")


@pytest.fixture
def curator_client(curator):
    return client_for(curator)


@pytest.fixture
def curator2_client(curator2):
    return client_for(curator2)


@pytest.fixture
def rater_client(rater):
    return client_for(rater)


@pytest.fixture
def researcher_client(researcher):
    return client_for(researcher)


@pytest.fixture
def admin_client_(admin_user):
    return client_for(admin_user)


@pytest.fixture
def outsider_client(outsider):
    return client_for(outsider)


def queue_of(task, options: dict) -> str:
    """The queue Celery sends ``task`` to with these ``apply_async`` options: an explicit
    ``queue=``, else the route in ``settings.CELERY_TASK_ROUTES`` (call sites name none)."""
    from palmsweb.celery import app

    return options.get("queue") or app.amqp.router.route(dict(options), task.name)["queue"].name
