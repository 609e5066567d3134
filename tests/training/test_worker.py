"""Jobs through a real Celery worker process, on the configured broker (Redis in CI's
PostgreSQL run, the filesystem transport in the embedded run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from curation.services import sample_create, snapshot_create
from tests.factories import CategoryFactory, DatasetFactory, words
from training import services
from training.models import FineTuneJob, JobStatus, ModelVersion

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def worker_env(artifacts: Path) -> dict:
    """The worker must open the test database this test writes to, not the dev one."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="palmsweb.settings_test",
               ARTIFACTS_DIR=str(artifacts), JOB_HEARTBEAT_TIMEOUT="120")
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        env["PALMSWEB_SQLITE_PATH"] = db["NAME"]
    else:
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or ''}:{db['PORT'] or 5432}"
            f"/{db['NAME']}"
        )
    return env


@pytest.fixture
def worker(tmp_path, settings):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "palmsweb", "worker", "-Q", "gpu,default",
         "-c", "1", "-P", "solo", "--without-mingle", "--without-gossip", "-n",
         f"test-{os.getpid()}@%h"],
        cwd=ROOT, env=worker_env(tmp_path / "artifacts"), start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    yield process
    if process.poll() is not None:
        return  # the test killed it
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def wait_for(job, statuses, *, timeout: float, worker=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in statuses:
            return job
        if worker is not None and worker.poll() is not None:
            pytest.fail(f"worker exited:\n{worker.stdout.read()}")
        time.sleep(0.5)
    pytest.fail(f"job stayed {job.status} after {timeout} s; log:\n{job.log}")


@pytest.fixture
def tiny_model(tmp_path):
    from training.engine.loading import build_tiny_llama

    path = build_tiny_llama(tmp_path / "tiny")
    return services.base_model_create(name="tiny", kind="local_dir", path=str(path),
                                      parameter_count=100_000)


@pytest.fixture
def snapshot(db):
    dataset, category = DatasetFactory(), CategoryFactory()
    for n in range(4):
        sample_create(dataset=dataset, category=category, question=f"Tell me about {n}?",
                      answer=words(45, f"fact{n}"), status="approved")
    return snapshot_create(dataset=dataset)


def test_a_fine_tune_runs_through_a_real_worker_process(worker, tiny_model, snapshot):
    job = services.finetune_launch(
        base_model=tiny_model, snapshot=snapshot, arm=ModelVersion.Arm.VALUES_TARGETED,
        hyperparameters={"epochs": 2, "batch_size": 2, "max_seq_len": 128},
    )
    wait_for(job, {JobStatus.SUCCEEDED, JobStatus.FAILED}, timeout=180, worker=worker)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.progress_done == job.progress_total > 0
    assert job.result.arm == ModelVersion.Arm.VALUES_TARGETED
    assert job.result.metadata["snapshot_hash"] == snapshot.content_hash
    assert Path(job.result.path, "palms_metadata.json").is_file()

    sampling = services.sampling_launch(
        prompts=["Hello?", "Tell me about 1?"], model_versions=[job.result], n_samples=2,
        max_new_tokens=8, seed=3,
    )
    wait_for(sampling, {JobStatus.SUCCEEDED, JobStatus.FAILED}, timeout=120, worker=worker)
    assert sampling.status == JobStatus.SUCCEEDED, sampling.error
    assert sampling.generations.count() == 4


def test_a_killed_worker_leaves_no_job_running(worker, tiny_model, snapshot, settings):
    job = services.finetune_launch(
        base_model=tiny_model, snapshot=snapshot, arm=ModelVersion.Arm.VALUES_TARGETED,
        hyperparameters={"epochs": 100, "batch_size": 1, "max_seq_len": 128},
    )
    wait_for(job, {JobStatus.RUNNING}, timeout=120, worker=worker)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    # The sweep runs every minute in production; here we age the heartbeat instead of waiting.
    FineTuneJob.objects.filter(pk=job.pk).update(
        heartbeat_at=job.heartbeat_at - services.heartbeat_timeout() * 2
    )
    assert services.sweep_stale_jobs() == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "stopped responding" in job.error
