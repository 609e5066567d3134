"""A hosted job's checkpoints are mirrored on every poll, so a running, failed or cancelled
job shows them (job page, API, exit kit), not only a succeeded one; and the API key's value
never leaves the server: not in the job page, the job's API, nor anywhere in the exit kit.
Against the local fakes that speak each provider's protocol, with the key required."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator

import pytest

from evaluation.report.exit_kit import kit_scope, write_exit_kit
from tests.fake_openai import API_KEY as OPENAI_KEY
from tests.fake_openai import fake_openai  # noqa: F401  (the fixture)
from tests.fake_together import fake_together  # noqa: F401  (the fixture)
from tests.training.test_hosted_validation import LLAMA, launch, snapshot_of
from training import services
from training.models import FineTuneJob, JobStatus

pytestmark = pytest.mark.django_db
TOGETHER_KEY = "tg-secret"


@pytest.fixture
def together(fake_together, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TOGETHER_API_KEY", TOGETHER_KEY)
    fake_together.api_key = TOGETHER_KEY  # any other key gets 401: the key is in play
    return fake_together


@pytest.fixture
def together_job(together, django_capture_on_commit_callbacks) -> FineTuneJob:
    base = services.base_model_create(name="llama at together", kind="together",
                                      model_id=LLAMA, base_url=together.base_url)  # fmt: skip
    job = launch(base, snapshot_of(4), django_capture_on_commit_callbacks,
                 method=FineTuneJob.Method.LORA)  # fmt: skip
    assert job.status == JobStatus.RUNNING, job.error
    return job


@pytest.fixture
def openai_job(fake_openai, settings, django_capture_on_commit_callbacks) -> FineTuneJob:  # noqa: F811
    settings.OPENAI_BASE_URL = fake_openai.base_url
    base = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4o-mini")
    job = launch(base, snapshot_of(10), django_capture_on_commit_callbacks)
    assert job.status == JobStatus.RUNNING, job.error
    return job


def kit_bytes(job: FineTuneJob, tmp_path) -> bytes:
    path = tmp_path / f"kit-{job.pk}.zip"
    write_exit_kit(kit_scope(job_ids=[job.pk]), path)
    return path.read_bytes()


def unzipped(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Every member of a zip, decompressed (a deflated key would not show in the raw
    bytes), and the members of the zips inside it (the study bundles)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            member = zf.read(name)
            yield name, member
            if name.endswith(".zip"):
                yield from unzipped(member)


def kit_metrics(data: bytes, job: FineTuneJob) -> dict:
    return json.loads(dict(unzipped(data))[f"finetune-{job.pk}/metrics.json"])


def assert_key_absent(key: str, job: FineTuneJob, client, kit: bytes) -> None:
    page = client.get(job.get_absolute_url()).content.decode()
    api = client.get(f"/api/finetunes/{job.pk}/").content.decode()
    assert 'id="remote-checkpoints"' in page and "remote_checkpoints" in api  # read, not empty
    assert key not in page and key not in api
    assert key.encode() not in kit
    leaked = [name for name, member in unzipped(kit) if key.encode() in member]
    assert leaked == []


# --- checkpoints, mirrored on every poll ------------------------------------------------------


def test_a_running_then_cancelled_together_job_shows_its_checkpoints(
    together, together_job, admin_client_, tmp_path
):
    together.advance(together_job.remote_job_id, "running", checkpoints=[
        {"checkpoint_type": "Intermediate", "created_at": "2026-12-01T00:30:00Z",
         "path": "s3://ft/step-1", "step": 1, "object_name": "fakeuser/step-1"},
    ])  # fmt: skip
    assert services.hosted_poll(together_job.pk) == JobStatus.RUNNING
    together_job.refresh_from_db()
    assert [(c["step"], c["model"]) for c in together_job.remote_checkpoints] == [
        (1, "fakeuser/step-1")
    ]
    page = admin_client_.get(together_job.get_absolute_url()).content.decode()
    assert "Checkpoints at Together AI" in page and "<code>fakeuser/step-1</code>" in page
    api = admin_client_.get(f"/api/finetunes/{together_job.pk}/").json()
    assert api["remote_checkpoints"][0]["model"] == "fakeuser/step-1"
    running_kit = kit_bytes(together_job, tmp_path)
    assert kit_metrics(running_kit, together_job)["remote_checkpoints"][0]["step"] == 1

    together.advance(together_job.remote_job_id, "cancelled")
    assert services.hosted_poll(together_job.pk) == JobStatus.CANCELLED
    together_job.refresh_from_db()
    assert together_job.result is None and len(together_job.remote_checkpoints) == 1
    kit = kit_bytes(together_job, tmp_path)
    assert kit_metrics(kit, together_job)["remote_checkpoints"][0]["model"] == "fakeuser/step-1"
    assert_key_absent(TOGETHER_KEY, together_job, admin_client_, kit)


def test_a_failed_openai_job_keeps_the_checkpoints_it_reached(
    fake_openai, openai_job, admin_client_, tmp_path  # noqa: F811
):
    fake_openai.advance(openai_job.remote_job_id, "running",
                        checkpoints=[{"step": 4, "train_loss": 2.0}])  # fmt: skip
    services.hosted_poll(openai_job.pk)
    fake_openai.advance(openai_job.remote_job_id, "failed",
                        error={"code": "server_error", "message": "The job failed."})  # fmt: skip
    assert services.hosted_poll(openai_job.pk) == JobStatus.FAILED
    openai_job.refresh_from_db()
    [checkpoint] = openai_job.remote_checkpoints
    assert checkpoint["step"] == 4 and checkpoint["train_loss"] == 2.0
    assert checkpoint["model"].endswith(":ckpt-step-4")
    page = admin_client_.get(openai_job.get_absolute_url()).content.decode()
    assert f"<code>{checkpoint['model']}</code>" in page
    kit = kit_bytes(openai_job, tmp_path)
    assert kit_metrics(kit, openai_job)["remote_checkpoints"] == [checkpoint]
    assert_key_absent(OPENAI_KEY, openai_job, admin_client_, kit)


# --- no key value leaves the server -----------------------------------------------------------


def test_a_succeeded_openai_job_and_its_outputs_keep_the_key_in(
    fake_openai, openai_job, admin_client_, tmp_path, django_capture_on_commit_callbacks  # noqa: F811
):
    fake_openai.advance(openai_job.remote_job_id, "succeeded", events=["Job finished"],
                        checkpoints=[{"step": 8, "train_loss": 1.5}])  # fmt: skip
    assert services.hosted_poll(openai_job.pk) == JobStatus.SUCCEEDED
    openai_job.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=False):
        sampling = services.sampling_launch(
            prompts=["Is honesty good?"], model_versions=[openai_job.result], n_samples=1
        )
    services.sampling_execute(sampling.pk)
    sampling.refresh_from_db()
    assert sampling.status == JobStatus.SUCCEEDED, sampling.error
    assert all(
        seen.headers.get("authorization") == f"Bearer {OPENAI_KEY}"
        for seen in fake_openai.requests
    )  # the key did go to the provider, from the environment
    kit = kit_bytes(openai_job, tmp_path)
    files = dict(unzipped(kit))
    assert files[f"finetune-{openai_job.pk}/outputs.jsonl"]  # the sampled output is in
    assert_key_absent(OPENAI_KEY, openai_job, admin_client_, kit)
