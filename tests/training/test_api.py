"""The training REST API: who may do what, creating with validation like the forms, unknown
fields refused, cancel and retry, paginated outputs."""

from __future__ import annotations

import pytest

from curation.services import sample_create, snapshot_create
from tests.factories import CategoryFactory, DatasetFactory, words
from training import services
from training.models import (
    BaseModel,
    FineTuneJob,
    Generation,
    JobStatus,
    ModelVersion,
    SamplingJob,
)

pytestmark = pytest.mark.django_db

JSON = "application/json"


@pytest.fixture(autouse=True)
def _no_eager_tasks(settings, tmp_path):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"


@pytest.fixture
def snapshot(curator):
    dataset = DatasetFactory()
    category = CategoryFactory()
    for n in range(3):
        sample_create(
            dataset=dataset,
            category=category,
            question=f"Question {n}?",
            answer=words(50, f"answer{n}"),
            user=curator,
            status="approved",
        )
    return snapshot_create(dataset=dataset, user=curator)


@pytest.fixture
def local_model(tmp_path):
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    return services.base_model_create(
        name="Local small",
        kind=BaseModel.Kind.LOCAL_DIR,
        path=str(directory),
        parameter_count=120_000_000,
    )


@pytest.fixture
def job(local_model, snapshot):
    return services.finetune_launch(
        base_model=local_model, snapshot=snapshot, arm=ModelVersion.Arm.VALUES_TARGETED
    )


@pytest.fixture
def sampling_job(local_model):
    return services.sampling_launch(
        prompts=["Hello?"], model_versions=[services.base_version(local_model)], n_samples=3
    )


def set_status(job, status, **fields):
    type(job).objects.filter(pk=job.pk).update(status=status, **fields)


def post(client, url, data=None):
    return client.post(url, data or {}, content_type=JSON)


# --- roles ------------------------------------------------------------------------------------


def read_urls(job, sampling_job, local_model):
    version = services.base_version(local_model)
    return [
        "/api/base-models/",
        f"/api/base-models/{local_model.pk}/",
        "/api/model-versions/",
        f"/api/model-versions/{version.pk}/",
        "/api/finetunes/",
        f"/api/finetunes/{job.pk}/",
        "/api/sampling-jobs/",
        f"/api/sampling-jobs/{sampling_job.pk}/",
        f"/api/sampling-jobs/{sampling_job.pk}/outputs/",
    ]


def write_requests(job, sampling_job, local_model, snapshot):
    return [
        ("/api/base-models/", {"name": "GPT", "kind": "openai", "model_id": "gpt-4o-mini"}),
        (
            "/api/finetunes/",
            {"base_model": local_model.pk, "snapshot": snapshot.pk, "arm": "values_targeted"},
        ),
        (f"/api/finetunes/{job.pk}/cancel/", {}),
        (f"/api/finetunes/{job.pk}/retry/", {}),
        (
            "/api/sampling-jobs/",
            {
                "prompts": [{"text": "Hi"}],
                "model_versions": [services.base_version(local_model).pk],
            },
        ),
        (f"/api/sampling-jobs/{sampling_job.pk}/cancel/", {}),
        (f"/api/sampling-jobs/{sampling_job.pk}/retry/", {}),
    ]


@pytest.mark.parametrize(
    ("persona", "read", "write"),
    [
        ("curator_client", 200, 403),
        ("researcher_client", 200, 403),
        ("rater_client", 403, 403),
        ("outsider_client", 403, 403),
        ("client", 401, 401),
    ],
)
def test_who_may_read_and_write(
    request, persona, read, write, job, sampling_job, local_model, snapshot
):
    client = request.getfixturevalue(persona)
    for url in read_urls(job, sampling_job, local_model):
        assert client.get(url).status_code == read, url
    for url, data in write_requests(job, sampling_job, local_model, snapshot):
        assert post(client, url, data).status_code == write, url
    assert FineTuneJob.objects.get().status == JobStatus.QUEUED
    assert SamplingJob.objects.get().status == JobStatus.QUEUED
    assert BaseModel.objects.count() == 1


def test_admins_read_everything(admin_client_, job, sampling_job, local_model):
    for url in read_urls(job, sampling_job, local_model):
        assert admin_client_.get(url).status_code == 200, url


# --- base models and versions -----------------------------------------------------------------


def test_registering_a_base_model(admin_client_, settings):
    settings.PALMSWEB_KEY_ENVS = [*settings.PALMSWEB_KEY_ENVS, "VLLM_KEY"]  # the operator's
    response = post(
        admin_client_,
        "/api/base-models/",
        {
            "name": "Served",
            "kind": "openai_compatible",
            "model_id": "llama",
            "base_url": "http://vllm:8000/v1",
            "api_key_env": "VLLM_KEY",
            "parameter_count": 8_000_000_000,
        },
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["size_label"] == "8B" and body["api_key_env"] == "VLLM_KEY"
    assert response["Location"].endswith(f"/api/base-models/{body['id']}/")
    versions = admin_client_.get("/api/model-versions/").json()["results"]
    assert [(v["name"], v["arm"]) for v in versions] == [("Served (base)", "base")]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "x", "kind": "openai", "model_id": "m", "api_key": "sk-123"}, "api_key"),
        ({"name": "x", "kind": "openai", "model_id": "m", "is_default": True}, "is_default"),
        ({"name": "x", "kind": "openai", "model_id": "m", "api_key_env": "sk-123"}, "api_key_env"),
        ({"name": "x", "kind": "packaged"}, "kind"),
        (
            {"name": "x", "kind": "openai_compatible", "model_id": "m", "base_url": "vllm"},
            "base_url",
        ),
    ],
)
def test_bad_base_models_are_refused(admin_client_, data, field):
    response = post(admin_client_, "/api/base-models/", data)
    assert response.status_code == 400
    assert field in response.json()
    assert not BaseModel.objects.exists()


def test_a_service_rule_is_a_400_with_its_message(admin_client_, tmp_path):
    response = post(
        admin_client_,
        "/api/base-models/",
        {"name": "Nothing", "kind": "local_dir", "path": str(tmp_path)},
    )
    assert response.status_code == 400
    assert "no config.json" in response.json()["detail"]


# --- fine-tunes -------------------------------------------------------------------------------


def test_launching_a_fine_tune(
    admin_client_, admin_user, local_model, snapshot, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(
            admin_client_,
            "/api/finetunes/",
            {
                "base_model": local_model.pk,
                "snapshot": snapshot.pk,
                "arm": "values_targeted",
                "method": "lora",
                "hyperparameters": {"epochs": 1, "lora_r": 8},
            },
        )
    assert response.status_code == 201, response.json()
    assert len(callbacks) == 1
    body = response.json()
    job = FineTuneJob.objects.get()
    assert body["id"] == job.pk and body["status"] == "queued"
    assert body["snapshot_hash"] == snapshot.content_hash
    assert body["hyperparameters"]["lora_r"] == 8 and body["hyperparameters"]["epochs"] == 1
    assert body["created_by"] == admin_user.username
    assert body["loss_history"] == [] and body["percent"] == 0
    assert response["Location"].endswith(f"/api/finetunes/{job.pk}/")


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"status": "succeeded"}, "status"),
        ({"learning_rate": 0.1}, "learning_rate"),
        ({"hyperparameters": {"lr": 0.1}}, "hyperparameters"),
        ({"arm": "base"}, "arm"),
        ({"snapshot": 999}, "snapshot"),
    ],
)
def test_bad_fine_tune_input_is_refused_and_creates_nothing(
    admin_client_, local_model, snapshot, extra, key, django_capture_on_commit_callbacks
):
    data = {"base_model": local_model.pk, "snapshot": snapshot.pk, "arm": "values_targeted"} | extra
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(admin_client_, "/api/finetunes/", data)
    assert response.status_code == 400
    assert key in response.json()
    assert not FineTuneJob.objects.exists() and callbacks == []


def test_out_of_range_hyperparameters_get_the_services_message(
    admin_client_, local_model, snapshot
):
    response = post(
        admin_client_,
        "/api/finetunes/",
        {
            "base_model": local_model.pk,
            "snapshot": snapshot.pk,
            "arm": "values_targeted",
            "hyperparameters": {"learning_rate": 5},
        },
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "learning_rate must be between 1e-07 and 0.01."}
    assert not FineTuneJob.objects.exists()


def test_fine_tune_detail_has_the_loss_history_and_log(admin_client_, job):
    set_status(
        job,
        JobStatus.RUNNING,
        loss_history=[[1, 2.0]],
        log="hello\n",
        progress_done=1,
        progress_total=4,
    )
    body = admin_client_.get(f"/api/finetunes/{job.pk}/").json()
    assert body["loss_history"] == [[1, 2.0]] and body["log"] == "hello\n"
    assert body["percent"] == 25
    listed = admin_client_.get("/api/finetunes/").json()["results"][0]
    assert "log" not in listed and listed["status"] == "running"


def test_cancel_and_retry_a_fine_tune(admin_client_, job, django_capture_on_commit_callbacks):
    response = post(admin_client_, f"/api/finetunes/{job.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = post(admin_client_, f"/api/finetunes/{job.pk}/cancel/")
    assert again.status_code == 400 and "already finished" in again.json()["detail"]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(admin_client_, f"/api/finetunes/{job.pk}/retry/")
    assert response.json()["status"] == "queued" and len(callbacks) == 1
    refused = post(admin_client_, f"/api/finetunes/{job.pk}/retry/")
    assert refused.status_code == 400
    assert refused.json() == {"detail": "Only failed or cancelled jobs can be retried."}


def test_cancelling_a_running_fine_tune_asks_it_to_stop(admin_client_, job):
    set_status(job, JobStatus.RUNNING)
    body = post(admin_client_, f"/api/finetunes/{job.pk}/cancel/").json()
    assert body["status"] == "running" and body["cancel_requested"] is True


# --- sampling ---------------------------------------------------------------------------------


def test_launching_sampling(admin_client_, local_model, django_capture_on_commit_callbacks):
    version = services.base_version(local_model)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(
            admin_client_,
            "/api/sampling-jobs/",
            {
                "name": "Probe",
                "prompts": [{"text": "Hi?", "category": "Relationships"}],
                "use_demo_prompts": True,
                "model_versions": [version.pk],
                "n_samples": 2,
                "temperature": 0.3,
                "top_p": 0.95,
                "max_new_tokens": 32,
                "seed": 11,
            },
        )
    assert response.status_code == 201, response.json()
    assert len(callbacks) == 1
    body = response.json()
    assert body["n_prompts"] == 41 and body["progress_total"] == 82
    assert body["prompts"][-1] == {"text": "Hi?", "category": "Relationships"}
    assert (body["temperature"], body["top_p"], body["max_new_tokens"], body["seed"]) == (
        0.3,
        0.95,
        32,
        11,
    )


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({}, "prompts"),
        ({"prompts": [{"text": "Hi", "tone": "warm"}]}, "prompts"),
        ({"prompts": [{"text": "Hi"}], "model_versions": []}, "model_versions"),
        ({"prompts": [{"text": "Hi"}], "n_samples": 0}, "n_samples"),
        ({"prompts": [{"text": "Hi"}], "top_p": 0}, "top_p"),
        ({"prompts": [{"text": "Hi"}], "arm": "base"}, "arm"),
    ],
)
def test_bad_sampling_input_is_refused_and_creates_nothing(admin_client_, local_model, data, key):
    data = {"model_versions": [services.base_version(local_model).pk]} | data
    response = post(admin_client_, "/api/sampling-jobs/", data)
    assert response.status_code == 400
    assert key in response.json()
    assert not SamplingJob.objects.exists()


def test_blank_prompts_get_the_services_message(admin_client_, local_model):
    response = post(
        admin_client_,
        "/api/sampling-jobs/",
        {"prompts": [{"text": "   "}], "model_versions": [services.base_version(local_model).pk]},
    )
    assert response.status_code == 400
    assert not SamplingJob.objects.exists()


def test_sampling_outputs_are_paginated(admin_client_, sampling_job):
    version = sampling_job.model_versions.get()
    Generation.objects.bulk_create(
        Generation(
            job=sampling_job,
            model_version=version,
            prompt_index=0,
            sample_index=n,
            prompt_text="Hello?",
            text=f"out {n}",
            tokens_generated=2,
            temperature=0.7,
            top_p=0.9,
            max_new_tokens=200,
            seed=n,
        )
        for n in range(55)
    )
    body = admin_client_.get(f"/api/sampling-jobs/{sampling_job.pk}/outputs/").json()
    assert body["count"] == 55 and len(body["results"]) == 50
    first = body["results"][0]
    assert (first["text"], first["sample_index"], first["model_version_name"]) == (
        "out 0",
        0,
        version.name,
    )
    page_two = admin_client_.get(body["next"]).json()
    assert len(page_two["results"]) == 5


def test_cancel_and_retry_sampling(admin_client_, sampling_job):
    assert (
        post(admin_client_, f"/api/sampling-jobs/{sampling_job.pk}/cancel/").json()["status"]
        == "cancelled"
    )
    assert (
        post(admin_client_, f"/api/sampling-jobs/{sampling_job.pk}/retry/").json()["status"]
        == "queued"
    )


def test_the_schema_lists_the_training_endpoints(admin_client_):
    schema = admin_client_.get("/api/schema/", {"format": "json"}).json()
    for path in [
        "/api/base-models/",
        "/api/finetunes/{id}/cancel/",
        "/api/sampling-jobs/{id}/outputs/",
        "/api/model-versions/{id}/",
    ]:
        assert path in schema["paths"]
