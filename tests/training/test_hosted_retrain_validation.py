"""Retrain elsewhere keeps the validation data: the same validation snapshot, or the same
held-out share with the same seed, which holds out the same items; a hosted target drops the
local-only validation settings. And the retrain API's ``method`` field."""

from __future__ import annotations

import json

import pytest

from curation.models import Dataset
from tests.fake_openai import fake_openai  # noqa: F401  (the fixture)
from tests.training.test_hosted_validation import LLAMA, snapshot_of
from training import services
from training.models import BaseModel, FineTuneJob, JobStatus, ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def together_model(monkeypatch):
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-secret")
    return services.base_model_create(name="llama at together", kind="together", model_id=LLAMA)


def original(base, snapshot, method=FineTuneJob.Method.LORA, **extra) -> FineTuneJob:
    """A queued fine-tune (no worker runs it: only what it was launched with matters)."""
    return services.finetune_launch(
        base_model=base, snapshot=snapshot, arm=ModelVersion.Arm.VALUES_TARGETED,
        method=method, **extra,
    )  # fmt: skip


def test_a_retrain_holds_out_the_same_items(together_model):
    job = original(together_model, snapshot_of(8),
                   hyperparameters={"validation_share": 0.25, "seed": 7})  # fmt: skip
    assert len(job.held_out_items) == 2
    local = services.base_model_register_default()
    new = services.finetune_retrain_elsewhere(job=job, base_model=local)
    assert new.held_out_items == job.held_out_items
    assert new.hyperparameters["validation_share"] == 0.25 and new.hyperparameters["seed"] == 7


def test_a_retrain_keeps_the_validation_snapshot(together_model):
    held = snapshot_of(2, Dataset.Kind.VALIDATION, "held")
    job = original(together_model, snapshot_of(4), validation_snapshot=held)
    new = services.finetune_retrain_elsewhere(
        job=job, base_model=services.base_model_register_default()
    )
    assert new.validation_snapshot == held and new.held_out_items == []


def test_a_local_jobs_local_only_settings_stay_local(together_model):
    local = services.base_model_register_default()
    hp = {"validation_share": 0.25, "eval_every_steps": 2, "keep_best_validation": True}
    job = original(local, snapshot_of(8), hyperparameters=hp)
    hosted = services.finetune_retrain_elsewhere(job=job, base_model=together_model)
    assert hosted.backend == "together" and hosted.held_out_items == job.held_out_items
    assert "eval_every_steps" not in hosted.hyperparameters
    assert "keep_best_validation" not in hosted.hyperparameters
    other_local = BaseModel.objects.create(name="another", kind="local_dir", path="/x")
    again = services.finetune_retrain_elsewhere(job=job, base_model=other_local)
    assert {k: again.hyperparameters[k] for k in hp} == hp


def test_openai_gets_the_same_held_out_items_as_its_validation_file(
    fake_openai, settings, together_model, django_capture_on_commit_callbacks  # noqa: F811
):
    settings.OPENAI_BASE_URL = fake_openai.base_url
    snapshot = snapshot_of(14)
    job = original(together_model, snapshot, hyperparameters={"validation_share": 0.25})
    gpt = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4o-mini")
    with django_capture_on_commit_callbacks(execute=False):
        new = services.finetune_retrain_elsewhere(job=job, base_model=gpt)
    services.finetune_execute(new.pk)
    new.refresh_from_db()
    assert new.status == JobStatus.RUNNING, new.error
    body = fake_openai.jobs[new.remote_job_id]["request"]
    sent = fake_openai.files[body["validation_file"]]["content"].decode().splitlines()
    questions = {json.loads(line)["messages"][0]["content"] for line in sent}
    assert questions == {snapshot.items()[i]["question"] for i in job.held_out_items}
    assert new.held_out_items == job.held_out_items


# --- the retrain API's method ------------------------------------------------------------------


def retrain(client, job, **data):
    return client.post(f"/api/finetunes/{job.pk}/retrain/", data, content_type="application/json")


def test_the_api_runs_the_method_asked_for(together_model, admin_client_):
    job = original(together_model, snapshot_of(4))
    local = services.base_model_register_default()
    response = retrain(admin_client_, job, base_model=local.pk, method="full")
    assert response.status_code == 201 and response.json()["method"] == "full"
    response = retrain(admin_client_, job, base_model=local.pk)
    assert response.status_code == 201 and response.json()["method"] == "lora"  # the job's


def test_the_api_refuses_a_method_that_does_not_exist(together_model, admin_client_):
    job = original(together_model, snapshot_of(4))
    local = services.base_model_register_default()
    response = retrain(admin_client_, job, base_model=local.pk, method="qlora")
    assert response.status_code == 400 and "method" in response.json()
    assert not FineTuneJob.objects.filter(retrained_from=job).exists()


def test_a_provider_that_cannot_run_the_method_takes_its_own(together_model, admin_client_):
    job = original(together_model, snapshot_of(10))
    gpt = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4o-mini")
    response = retrain(admin_client_, job, base_model=gpt.pk, method="lora")
    assert response.status_code == 201
    assert (response.json()["backend"], response.json()["method"]) == ("openai", "full")
