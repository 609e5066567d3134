"""A worker sends a secret only from an operator-approved variable, only to an allowed
endpoint: every way in (forms, API, services) and the worker itself refuse the rest."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from evaluation import scoring
from evaluation.alignment import misalignment
from evaluation.alignment.realignment import realignment_create
from evaluation.models import MisalignmentEval, ScoringRun
from evaluation.scoring.judge import judge_key
from palmsweb.lib import keyenv
from tests.conftest import client_for
from tests.evaluation.conftest import make_versions
from training import services as training
from training.models import BaseModel, JobStatus, SamplingJob
from training.services import TrainingError

pytestmark = pytest.mark.django_db

SECRET = "django-insecure-the-app-secret-0123456789"
JUDGE_URL = "http://judge.test/v1"


@pytest.fixture(autouse=True)
def app_secret(monkeypatch):
    """The value a leak would send; every test checks it never leaves."""
    monkeypatch.setenv("SECRET_KEY", SECRET)
    monkeypatch.setenv("MY_PRIVATE_TOKEN", SECRET)


def api(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


# --- the rule itself --------------------------------------------------------------------


@pytest.mark.parametrize("name", keyenv.DEFAULT_KEY_ENVS)
def test_the_default_key_variables_are_allowed(name):
    assert keyenv.check_key_env(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("SECRET_KEY", "palmsweb's own secrets"),
        ("database_url", "palmsweb's own secrets"),
        ("CELERY_BROKER_URL", "palmsweb's own secrets"),
        ("MY_PRIVATE_TOKEN", "not a key variable the operator allows"),
        ("sk-live-123", "environment variable name"),
        ("", "Name the environment variable"),
    ],
)
def test_other_variables_are_refused(name, message):
    with pytest.raises(keyenv.KeyEnvError, match=message):
        keyenv.check_key_env(name)


def test_app_secrets_stay_refused_even_when_the_operator_lists_them(settings):
    settings.PALMSWEB_KEY_ENVS = ["SECRET_KEY", "MY_PRIVATE_TOKEN"]
    assert keyenv.check_key_env("MY_PRIVATE_TOKEN") == "MY_PRIVATE_TOKEN"
    with pytest.raises(keyenv.KeyEnvError, match="own secrets"):
        keyenv.read_key("SECRET_KEY", url=JUDGE_URL)
    with pytest.raises(SystemCheckError, match="palmsweb.E001"):
        call_command("check")


def test_the_endpoint_allow_list(settings):
    assert keyenv.check_endpoint("http://anything.test/v1")  # no list: any host
    settings.PALMSWEB_ENDPOINT_HOSTS = ["api.openai.com", ".corp.example"]
    assert keyenv.check_endpoint("https://api.openai.com/v1")
    assert keyenv.check_endpoint("http://vllm.corp.example:8000/v1")
    for url in ("https://evil.example/v1", "https://api.openai.com.evil.example/", "nonsense"):
        with pytest.raises(keyenv.KeyEnvError, match="PALMSWEB_ENDPOINT_HOSTS"):
            keyenv.check_endpoint(url)


# --- base models: form, API, service, worker ---------------------------------------------


def endpoint_model(**changes) -> dict:
    return {
        "name": "Served", "kind": "openai_compatible", "model_id": "m",
        "base_url": "http://vllm.test/v1", "api_key_env": "SECRET_KEY",
    } | changes  # fmt: skip


def test_a_base_model_naming_the_app_secret_is_refused_everywhere(admin_user):
    page = client_for(admin_user).post(reverse("training:basemodel-create"), endpoint_model())
    assert page.status_code == 200 and "own secrets" in page.content.decode()
    response = api(admin_user).post("/api/base-models/", endpoint_model(), format="json")
    assert response.status_code == 400 and "api_key_env" in response.json()
    with pytest.raises(TrainingError, match="own secrets"):
        training.base_model_create(**endpoint_model())
    unlisted = api(admin_user).post(
        "/api/base-models/", endpoint_model(api_key_env="MY_PRIVATE_TOKEN"), format="json"
    )
    assert unlisted.status_code == 400
    assert not BaseModel.objects.exists()


def test_a_base_model_endpoint_outside_the_host_list_is_refused(admin_user, settings):
    settings.PALMSWEB_ENDPOINT_HOSTS = ["api.openai.com"]
    body = endpoint_model(api_key_env="OPENAI_API_KEY", base_url="http://evil.example/v1")
    response = api(admin_user).post("/api/base-models/", body, format="json")
    assert response.status_code == 400 and "base_url" in response.json()
    assert not BaseModel.objects.exists()


def test_a_local_model_needs_no_allowed_key_variable(admin_user, settings, tmp_path):
    settings.PALMSWEB_KEY_ENVS = ["JUDGE_API_KEY"]  # OPENAI_API_KEY, the default, is not listed
    (tmp_path / "config.json").write_text("{}")
    body = {"name": "Local", "kind": "local_dir", "path": str(tmp_path)}
    assert api(admin_user).post("/api/base-models/", body, format="json").status_code == 201


def test_the_worker_refuses_a_row_that_names_the_app_secret():
    """A row written before the rule (or by hand) still sends nothing."""
    base = BaseModel.objects.create(**endpoint_model())
    with pytest.raises(TrainingError, match="own secrets"):
        training.api_key_for(base)
    base.api_key_env = "OPENAI_API_KEY"
    assert training.api_key_for(base) is not None  # allowed: read (empty here is fine)


def test_the_worker_refuses_an_endpoint_the_operator_no_longer_allows(settings):
    base = BaseModel.objects.create(**endpoint_model(api_key_env="OPENAI_API_KEY"))
    settings.PALMSWEB_ENDPOINT_HOSTS = ["api.openai.com"]
    with pytest.raises(TrainingError, match="PALMSWEB_ENDPOINT_HOSTS"):
        training.api_key_for(base)


# --- judges: misalignment, re-alignment, study judge ------------------------------------


def misalignment_body(versions, **changes) -> dict:
    return {
        "name": "EM", "model_versions": [versions["base"].pk], "probes": ["Q?"],
        "judge_base_url": JUDGE_URL, "judge_model": "j", "judge_key_env": "SECRET_KEY",
    } | changes  # fmt: skip


def test_misalignment_judges_refuse_the_app_secret_everywhere(admin_user):
    versions = make_versions()
    body = misalignment_body(versions)
    response = api(admin_user).post("/api/misalignment-evals/", body, format="json")
    assert response.status_code == 400 and "judge_key_env" in response.json()
    page = client_for(admin_user).post(reverse("evaluation:misalignment-create"), body)
    assert page.status_code == 200 and "own secrets" in page.content.decode()
    with pytest.raises(misalignment.MisalignmentError, match="own secrets"):
        misalignment.misalignment_eval_create(
            **(body | {"model_versions": [versions["base"]]})
        )
    assert not MisalignmentEval.objects.exists()
    assert SECRET not in response.content.decode() + page.content.decode()


def test_a_misalignment_row_naming_the_app_secret_fails_without_a_request(monkeypatch):
    versions = make_versions()
    job = SamplingJob.objects.create(prompts=[{"text": "Q?"}], status=JobStatus.SUCCEEDED)
    evaluation = MisalignmentEval.objects.create(
        name="old", probes=["Q?"], judge_base_url=JUDGE_URL, judge_model="j",
        judge_key_env="SECRET_KEY", sampling_job=job, status=MisalignmentEval.Status.JUDGING,
        heartbeat_at=timezone.now(),
    )  # fmt: skip
    evaluation.model_versions.set([versions["base"]])

    def no_judge(*args, **kwargs):
        raise AssertionError("a judge was built with a refused key")

    monkeypatch.setattr("palmsweb.lib.judge.Judge", no_judge)
    misalignment.misalignment_judge(evaluation.pk)
    evaluation.refresh_from_db()
    assert evaluation.status == "failed" and "own secrets" in evaluation.error


def test_realignment_judges_refuse_the_app_secret(admin_user, benign_snapshot):
    versions = make_versions()
    judge = {"judge_base_url": JUDGE_URL, "judge_model": "j", "judge_key_env": "SECRET_KEY"}
    with pytest.raises(misalignment.MisalignmentError, match="own secrets"):
        realignment_create(
            name="r", source_version=versions["base"], snapshot=benign_snapshot, steps=4,
            judge=judge,
        )  # fmt: skip
    body = {
        "name": "r", "source_version": versions["base"].pk, "snapshot": benign_snapshot.pk,
        "steps": 4, "judge": judge,
    }  # fmt: skip
    response = api(admin_user).post("/api/realignment-runs/", body, format="json")
    assert response.status_code == 400 and "own secrets" in response.content.decode()


def test_study_judges_refuse_unlisted_variables_and_rows_that_name_them(
    monkeypatch, no_training_queue
):
    from tests.evaluation.conftest import build_study

    monkeypatch.setattr("evaluation.tasks.sync_study_sampling.apply_async", lambda *a, **k: None)
    setup = build_study()
    options = {"base_url": JUDGE_URL, "model": "j", "key_env": "MY_PRIVATE_TOKEN"}
    with pytest.raises(scoring.ScoringError, match="operator allows"):
        scoring.scoring_run_start(study=setup.study, kind="judge", options=options)
    assert not ScoringRun.objects.exists()
    with pytest.raises(scoring.ScoringError, match="own secrets"):
        judge_key({"base_url": JUDGE_URL, "key_env": "SECRET_KEY"})
    assert judge_key({"base_url": JUDGE_URL, "key_env": ""}) == ""  # a server with no key
