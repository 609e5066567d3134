"""OpenAI fine-tuning through the services, against a local fake OpenAI that speaks the REST
protocol the ``openai`` SDK uses (tests/fake_openai.py): launch, mirror, succeed and sample
the result, failure, cancel, rate limits with retry, a wrong key, a job and a model that
disappear. The cut-off (403 training_not_available, shutdown dates) is in
test_hosted_cutoff.py."""

from __future__ import annotations

import json

import openai
import pytest

from curation.services import sample_create, snapshot_create
from tests.factories import CategoryFactory, DatasetFactory, words
from tests.fake_openai import API_KEY, fake_openai  # noqa: F401  (the fixture)
from training import services
from training.models import FineTuneJob, Generation, JobStatus, ModelVersion

pytestmark = pytest.mark.django_db
SLOW_DOWN = {"retry-after": "0"}


@pytest.fixture
def fake(fake_openai, settings):  # noqa: F811
    """The fake as the OpenAI endpoint of every OpenAI base model without its own URL."""
    settings.OPENAI_BASE_URL = fake_openai.base_url
    return fake_openai


@pytest.fixture
def launched(fake, django_capture_on_commit_callbacks) -> FineTuneJob:
    dataset, category = DatasetFactory(), CategoryFactory()
    for n in range(10):
        sample_create(dataset=dataset, category=category, question=f"Question {n}?",
                      answer=words(45, f"a{n}"), status="approved")  # fmt: skip
    snapshot = snapshot_create(dataset=dataset)
    base = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4o-mini")
    with django_capture_on_commit_callbacks(execute=False):
        ft = services.finetune_launch(
            base_model=base, snapshot=snapshot, arm=ModelVersion.Arm.VALUES_TARGETED
        )
    services.finetune_execute(ft.pk)
    ft.refresh_from_db()
    return ft


def succeeded(fake, ft: FineTuneJob) -> ModelVersion:
    fake.advance(ft.remote_job_id, "succeeded")
    assert services.hosted_poll(ft.pk) == JobStatus.SUCCEEDED
    return FineTuneJob.objects.get(pk=ft.pk).result


def sampled(version: ModelVersion, capture, prompts=("Is honesty good?",), n=2):
    with capture(execute=False):
        job = services.sampling_launch(prompts=list(prompts), model_versions=[version], n_samples=n)
    services.sampling_execute(job.pk)
    job.refresh_from_db()
    return job


def test_launch_uploads_the_snapshot_and_creates_a_supervised_job(fake, launched):
    ft = launched
    assert ft.status == JobStatus.RUNNING, ft.error
    assert ft.remote_file_id in fake.files and ft.remote_job_id in fake.jobs
    uploaded = fake.files[ft.remote_file_id]
    assert uploaded["purpose"] == "fine-tune"
    lines = [json.loads(line) for line in uploaded["content"].decode().splitlines()]
    assert len(lines) == 10 and lines[0]["messages"][-1]["role"] == "assistant"
    body = fake.jobs[ft.remote_job_id]["request"]
    assert body["model"] == "gpt-4o-mini" and body["training_file"] == ft.remote_file_id
    assert body["method"]["type"] == "supervised"
    assert body["method"]["supervised"]["hyperparameters"]["n_epochs"] == 3
    assert body["metadata"]["palmsweb_job"] == str(ft.pk)
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in fake.requests)
    assert f"created OpenAI job {ft.remote_job_id}" in ft.log


def test_polling_mirrors_events_and_losses_then_the_result_samples(
    fake, launched, django_capture_on_commit_callbacks
):
    ft = launched
    fake.advance(
        ft.remote_job_id,
        "running",
        events=["Step 1/30: training loss=2.1"],
        checkpoints=[{"step": 10, "train_loss": 1.9}],
    )
    assert services.hosted_poll(ft.pk) == JobStatus.RUNNING
    ft.refresh_from_db()
    assert "openai info: Step 1/30" in ft.log and ft.loss_history == [[10, 1.9]]
    assert ft.phase == "OpenAI reports the job running"
    fake.advance(ft.remote_job_id, "succeeded", events=["The job has successfully completed"])
    assert services.hosted_poll(ft.pk) == JobStatus.SUCCEEDED
    ft.refresh_from_db()
    assert ft.log.count("Step 1/30") == 1  # the cursor skips events already mirrored
    version = ft.result
    model = fake.jobs[ft.remote_job_id]["fine_tuned_model"]
    assert version.remote_model_id == model and model.startswith("ft:gpt-4o-mini-2024-07-18:")
    assert version.metadata["snapshot_hash"] == ft.snapshot.content_hash
    assert version.metadata["provider"] == "openai" and version.metadata["trained_tokens"] == 9000
    assert [c["step"] for c in version.metadata["remote_checkpoints"]] == [10]

    job = sampled(version, django_capture_on_commit_callbacks)
    assert job.status == JobStatus.SUCCEEDED, job.error
    texts = list(Generation.objects.filter(job=job).values_list("text", flat=True))
    assert len(texts) == 2 and all(t.startswith(f"[{model}] answer to: Is honesty") for t in texts)


def test_a_failed_remote_job_fails_with_its_reason(fake, launched):
    fake.advance(
        launched.remote_job_id,
        "failed",
        events=[{"message": "Training file has 3 invalid lines", "level": "error"}],
        error={"code": "invalid_training_file", "message": "Line 3 is bad.", "param": None},
    )
    assert services.hosted_poll(launched.pk) == JobStatus.FAILED
    launched.refresh_from_db()
    assert "Line 3 is bad." in launched.error and launched.result is None
    assert "openai error: Training file has 3 invalid lines" in launched.log


def test_cancel_calls_the_api_and_the_next_poll_ends_the_job(fake, launched):
    services.job_cancel(job=FineTuneJob.objects.get(pk=launched.pk))
    assert fake.calls("POST", f"/v1/fine_tuning/jobs/{launched.remote_job_id}/cancel")
    assert fake.jobs[launched.remote_job_id]["status"] == "cancelled"
    assert services.hosted_poll(launched.pk) == JobStatus.CANCELLED


def test_rate_limits_are_retried_on_upload_create_and_poll(fake, request):
    fake.fault("/v1/files", 429, times=2)
    fake.fault("/v1/fine_tuning/jobs", 429, headers={"retry-after": "0.2"})
    ft = request.getfixturevalue("launched")
    assert ft.status == JobStatus.RUNNING and ft.remote_job_id, ft.error
    assert len(fake.calls("POST", "/v1/files")) == 3
    creates = fake.calls("POST", "/v1/fine_tuning/jobs")
    assert len(creates) == 2 and creates[1].at - creates[0].at >= 0.2  # its retry-after
    fake.fault(f"/v1/fine_tuning/jobs/{ft.remote_job_id}", 503, headers=SLOW_DOWN)
    fake.fault(f"/v1/fine_tuning/jobs/{ft.remote_job_id}/events", 0)  # a dropped connection
    fake.advance(ft.remote_job_id, "running", events=["Step 2/30"])
    assert services.hosted_poll(ft.pk) == JobStatus.RUNNING
    ft.refresh_from_db()
    assert "Step 2/30" in ft.log and ft.phase == "OpenAI reports the job running"


def test_endless_rate_limits_give_up_with_a_readable_reason(fake, request):
    fake.fault("/v1/files", 429, times=100)
    ft = request.getfixturevalue("launched")
    assert ft.status == JobStatus.FAILED and not ft.remote_job_id
    assert "gave up after 6 attempts (HTTP 429: Rate limit reached for requests" in ft.error
    assert len(fake.calls("POST", "/v1/files")) == 6


def test_a_wrong_key_fails_the_launch_at_once(fake, monkeypatch, request):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-revoked")
    ft = request.getfixturevalue("launched")
    assert ft.status == JobStatus.FAILED
    assert "authentication failed (HTTP 401): Incorrect API key provided" in ft.error
    assert "Check the API key" in ft.error and len(fake.requests) == 1


def test_a_job_openai_no_longer_knows_fails_instead_of_polling_forever(fake, launched):
    del fake.jobs[launched.remote_job_id]
    assert services.hosted_poll(launched.pk) == JobStatus.FAILED
    launched.refresh_from_db()
    assert f"OpenAI no longer knows job {launched.remote_job_id}" in launched.error
    assert "HTTP 404: Could not find fine-tune" in launched.error


def test_a_model_that_disappears_mid_sampling_fails_the_job_and_keeps_what_came(
    fake, launched, django_capture_on_commit_callbacks
):
    version = succeeded(fake, launched)
    fake.retire(version.remote_model_id, after=2)  # two more answers, then it is gone
    job = sampled(version, django_capture_on_commit_callbacks, n=4)
    assert job.status == JobStatus.FAILED
    assert "not served there (HTTP 404 model_not_found" in job.error
    assert f"The model `{version.remote_model_id}` does not exist" in job.error
    assert "exit kit" in job.error and "Traceback" not in job.error
    assert Generation.objects.filter(job=job).count() == 2


def test_a_model_its_owner_deleted_cannot_be_sampled_and_earlier_outputs_stay(
    fake, launched, django_capture_on_commit_callbacks
):
    version = succeeded(fake, launched)
    first = sampled(version, django_capture_on_commit_callbacks, prompts=["A?"], n=1)
    assert first.status == JobStatus.SUCCEEDED
    client = openai.OpenAI(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    assert client.models.delete(version.remote_model_id).deleted
    second = sampled(version, django_capture_on_commit_callbacks, prompts=["B?"], n=1)
    assert second.status == JobStatus.FAILED
    assert "not served there (HTTP 404 model_not_found" in second.error
    assert Generation.objects.filter(job=first).count() == 1
