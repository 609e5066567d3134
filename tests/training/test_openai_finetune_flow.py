"""The OpenAI fine-tuning backend through the services: upload, create, mirror, finish,
fail and cancel — against a fake of the API's HTTP endpoints."""

from __future__ import annotations

import json

import httpx
import pytest

from curation.services import sample_create, snapshot_create
from tests.factories import CategoryFactory, DatasetFactory, words
from tests.training.conftest import OPENAI_TEST_URL
from tests.training.test_engine_remote import checkpoint, event, job, page
from training import services
from training.engine.hosted.openai import OpenAIFineTuneBackend
from training.models import FineTuneJob, JobStatus, ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(openai_mock, monkeypatch):
    router, client = openai_mock()
    monkeypatch.setattr(
        services.base_models, "openai_backend",
        lambda base: OpenAIFineTuneBackend("sk-test", base_url=OPENAI_TEST_URL,
                                           http_client=client, backoff_base=0),
    )
    return router


@pytest.fixture
def launched(api, django_capture_on_commit_callbacks):
    dataset, category = DatasetFactory(), CategoryFactory()
    for n in range(10):
        sample_create(dataset=dataset, category=category, question=f"Question {n}?",
                      answer=words(45, f"a{n}"), status="approved")
    snapshot = snapshot_create(dataset=dataset)
    base = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4o-mini")
    api.post("/files").mock(return_value=httpx.Response(200, json={
        "id": "file-1", "object": "file", "bytes": 1, "created_at": 1,
        "filename": "train.jsonl", "purpose": "fine-tune", "status": "processed"}))
    create = api.post("/fine_tuning/jobs").mock(
        return_value=httpx.Response(200, json=job("validating_files")))
    with django_capture_on_commit_callbacks(execute=False):
        ft = services.finetune_launch(base_model=base, snapshot=snapshot,
                                      arm=ModelVersion.Arm.VALUES_TARGETED)
    services.finetune_execute(ft.pk)
    ft.refresh_from_db()
    return ft, create


def mirror(api, status: str, *, events=(), checkpoints=(), **extra):
    api.get("/fine_tuning/jobs/ftjob-1").mock(
        return_value=httpx.Response(200, json=job(status, **extra)))
    api.get("/fine_tuning/jobs/ftjob-1/events").mock(return_value=page(list(events)))
    api.get("/fine_tuning/jobs/ftjob-1/checkpoints").mock(return_value=page(list(checkpoints)))


def test_launch_uploads_the_snapshot_and_creates_a_supervised_job(launched):
    ft, create = launched
    assert (ft.status, ft.remote_file_id, ft.remote_job_id) == (
        JobStatus.RUNNING, "file-1", "ftjob-1")
    body = json.loads(create.calls.last.request.content)
    assert body["model"] == "gpt-4o-mini" and body["training_file"] == "file-1"
    assert body["method"]["type"] == "supervised"
    assert body["method"]["supervised"]["hyperparameters"]["n_epochs"] == 3


def test_polling_mirrors_events_and_losses_then_records_the_model(api, launched):
    ft, _ = launched
    mirror(api, "running", events=[event(1, "Step 1/30: training loss=2.1")],
           checkpoints=[checkpoint(10, 1.9)])
    assert services.openai_poll(ft.pk) == JobStatus.RUNNING
    ft.refresh_from_db()
    assert "Step 1/30" in ft.log and ft.loss_history == [[10, 1.9]]
    mirror(api, "succeeded", fine_tuned_model="ft:gpt-4o-mini:org::abc", trained_tokens=900)
    assert services.openai_poll(ft.pk) == JobStatus.SUCCEEDED
    ft.refresh_from_db()
    assert ft.result.remote_model_id == "ft:gpt-4o-mini:org::abc"
    assert ft.result.metadata["snapshot_hash"] == ft.snapshot.content_hash


def test_a_failed_remote_job_fails_with_its_reason(api, launched):
    ft, _ = launched
    mirror(api, "failed", error={"code": "invalid_file", "message": "Line 3 is bad.",
                                 "param": None})
    assert services.openai_poll(ft.pk) == JobStatus.FAILED
    ft.refresh_from_db()
    assert "Line 3 is bad." in ft.error


def test_cancel_calls_the_api_and_the_next_poll_ends_the_job(api, launched):
    ft, _ = launched
    cancel = api.post("/fine_tuning/jobs/ftjob-1/cancel").mock(
        return_value=httpx.Response(200, json=job("cancelled")))
    services.job_cancel(job=FineTuneJob.objects.get(pk=ft.pk))
    assert cancel.called
    mirror(api, "cancelled")
    assert services.openai_poll(ft.pk) == JobStatus.CANCELLED
