"""Validation on hosted providers: the held-out examples (a validation snapshot or a share
of the training snapshot) go up as the provider's validation file, never in the training
file; Together is asked to evaluate it once per epoch (n_evals); the provider's validation
losses become the job's validation curve. OpenAI and Together against the local fakes that
speak their REST protocols."""

from __future__ import annotations

import json

import pytest

from curation.models import Dataset
from curation.services import sample_create, snapshot_create, snapshot_jsonl
from tests.factories import CategoryFactory, DatasetFactory, words
from tests.fake_openai import fake_openai  # noqa: F401  (the fixture)
from tests.fake_together import fake_together  # noqa: F401  (the fixture)
from training import services
from training.models import FineTuneJob, JobStatus, ModelVersion
from training.services.errors import TrainingError

pytestmark = pytest.mark.django_db
LLAMA = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"


def snapshot_of(count: int, kind=Dataset.Kind.VALUES_TARGETED, prefix="q"):
    dataset, category = DatasetFactory(kind=kind), CategoryFactory()
    for n in range(count):
        sample_create(dataset=dataset, category=category, question=f"{prefix} {n}?",
                      answer=words(40, f"{prefix}{n}"), status="approved")  # fmt: skip
    return snapshot_create(dataset=dataset)


def launch(base, snapshot, capture, **extra) -> FineTuneJob:
    with capture(execute=False):
        job = services.finetune_launch(
            base_model=base, snapshot=snapshot, arm=ModelVersion.Arm.VALUES_TARGETED, **extra
        )
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    return job


def uploaded_lines(content: bytes) -> list[dict]:
    return [json.loads(line) for line in content.decode().splitlines()]


# --- OpenAI ------------------------------------------------------------------------------------


@pytest.fixture
def openai_api(fake_openai, settings):  # noqa: F811
    settings.OPENAI_BASE_URL = fake_openai.base_url
    return fake_openai


def test_openai_gets_the_held_out_share_as_its_validation_file(
    openai_api, django_capture_on_commit_callbacks
):
    snapshot = snapshot_of(14)
    base = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4o-mini")
    ft = launch(base, snapshot, django_capture_on_commit_callbacks,
                hyperparameters={"validation_share": 0.25})  # fmt: skip
    assert ft.status == JobStatus.RUNNING, ft.error
    body = openai_api.jobs[ft.remote_job_id]["request"]
    train = uploaded_lines(openai_api.files[body["training_file"]]["content"])
    valid = uploaded_lines(openai_api.files[body["validation_file"]]["content"])
    assert [len(train), len(valid)] == [14 - 4, 4]  # round(14 x 0.25) held out
    train_q = {line["messages"][0]["content"] for line in train}
    valid_q = {line["messages"][0]["content"] for line in valid}
    assert not train_q & valid_q
    held = {snapshot.items()[i]["question"] for i in ft.held_out_items}
    assert valid_q == held
    assert body["training_file"] == ft.remote_file_id
    assert openai_api.files[body["validation_file"]]["filename"] == "validation.jsonl"
    assert f"uploaded 4 validation examples as file {body['validation_file']}" in ft.log


def test_openai_checkpoints_full_validation_loss_becomes_the_curve(
    openai_api, django_capture_on_commit_callbacks
):
    base = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4o-mini")
    ft = launch(base, snapshot_of(12), django_capture_on_commit_callbacks,
                validation_snapshot=snapshot_of(3, Dataset.Kind.VALIDATION, "held"))  # fmt: skip
    checkpoints = [
        {"step": step, "train_loss": loss, "valid_loss": loss + 0.5, "full_valid_loss": loss + 0.2}
        for step, loss in ((4, 2.0), (8, 1.5))
    ]
    openai_api.advance(ft.remote_job_id, "running", checkpoints=checkpoints)
    services.openai_poll(ft.pk)
    openai_api.advance(ft.remote_job_id, "succeeded")
    services.openai_poll(ft.pk)
    ft.refresh_from_db()
    assert ft.validation_loss_history == [[4, 2.2], [8, 1.7]]
    assert ft.status == JobStatus.SUCCEEDED
    meta = ft.result.metadata
    assert meta["validation_snapshot_hash"] == ft.validation_snapshot.content_hash
    assert [c["validation_loss"] for c in meta["remote_checkpoints"]] == [2.2, 1.7]


def test_a_hosted_job_without_validation_uploads_only_the_snapshot(
    openai_api, django_capture_on_commit_callbacks
):
    snapshot = snapshot_of(10)
    base = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4o-mini")
    ft = launch(base, snapshot, django_capture_on_commit_callbacks)
    assert len(openai_api.calls("POST", "/v1/files")) == 1
    body = openai_api.jobs[ft.remote_job_id]["request"]
    assert "validation_file" not in body
    sent = openai_api.files[body["training_file"]]["content"]
    assert uploaded_lines(sent) == uploaded_lines(snapshot_jsonl(snapshot).encode())


# --- Together ----------------------------------------------------------------------------------


@pytest.fixture
def together_base(fake_together, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-secret")
    return services.base_model_create(name="llama at together", kind="together",
                                      model_id=LLAMA, base_url=fake_together.base_url)  # fmt: skip


def test_together_evaluates_the_validation_snapshot_once_per_epoch(
    fake_together, together_base, django_capture_on_commit_callbacks  # noqa: F811
):
    held = snapshot_of(2, Dataset.Kind.VALIDATION, "held")
    job = launch(together_base, snapshot_of(4), django_capture_on_commit_callbacks,
                 method=FineTuneJob.Method.LORA, validation_snapshot=held,
                 hyperparameters={"epochs": 2})  # fmt: skip
    assert job.status == JobStatus.RUNNING, job.error
    sent = fake_together.jobs[job.remote_job_id]["request"]
    assert sent["n_evals"] == 2 and sent["validation_file"] != sent["training_file"]
    content = fake_together.files[sent["validation_file"]]["content"]
    assert uploaded_lines(content) == uploaded_lines(snapshot_jsonl(held).encode())
    assert len(uploaded_lines(fake_together.files[sent["training_file"]]["content"])) == 4
    fake_together.advance(job.remote_job_id, "running", metrics=[
        {"train/loss": 2.0, "train/global_step": 1},
        {"eval/loss": 2.4, "eval/global_step": 2},
        {"train/loss": 1.6, "train/global_step": 2},
        {"eval/loss": 2.1, "train/global_step": 4},
    ])  # fmt: skip
    services.hosted_poll(job.pk)
    job.refresh_from_db()
    assert job.validation_loss_history == [[2, 2.4], [4, 2.1]]
    assert job.loss_history == [[1, 2.0], [2, 1.6]]  # evaluation rows are not training loss


def test_together_without_validation_asks_for_no_evaluations(
    fake_together, together_base, django_capture_on_commit_callbacks  # noqa: F811
):
    job = launch(together_base, snapshot_of(4), django_capture_on_commit_callbacks,
                 method=FineTuneJob.Method.LORA)  # fmt: skip
    sent = fake_together.jobs[job.remote_job_id]["request"]
    assert not sent.get("validation_file") and not sent.get("n_evals")


# --- what hosted providers cannot do -----------------------------------------------------------


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        ({"validation_share": 0.25, "eval_every_steps": 2}, "eval_every_steps needs the local"),
        ({"validation_share": 0.25, "keep_best_validation": True},
         "keep_best_validation needs the local"),
        ({"validation_share": 0.25}, "needs at least 10 training examples"),
    ],
)  # fmt: skip
def test_hosted_validation_refuses_what_the_provider_cannot_do(hyperparameters, message):
    base = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4o-mini")
    with pytest.raises(TrainingError, match=message):
        services.finetune_launch(base_model=base, snapshot=snapshot_of(12),
                                 arm=ModelVersion.Arm.VALUES_TARGETED,
                                 hyperparameters=hyperparameters)  # fmt: skip
    assert not FineTuneJob.objects.exists()
