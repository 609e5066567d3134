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


@pytest.fixture
def gpu_worker(tmp_path, settings):
    """A worker started as `dev.py run` and docker-compose start the gpu one: the prefork
    pool, one child, the gpu queue only."""
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "palmsweb", "worker", "-Q", "gpu", "-c", "1",
         "--without-mingle", "--without-gossip", "-n", f"test-gpu-{os.getpid()}@%h"],
        cwd=ROOT, env=worker_env(tmp_path / "artifacts"), start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def children_of(pid: int) -> set[int]:
    """Child processes of ``pid``, whichever of its threads forked them."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == pid:
            children.add(int(stat.parent.name))
    return children


def test_the_gpu_worker_runs_each_job_in_a_fresh_process(gpu_worker, tiny_model, snapshot):
    """Memory a job leaves behind goes back to the machine: each job gets a new child
    process, and the child waiting for the next job has not even loaded torch."""
    pids = []
    for seed in (1, 2):
        job = services.finetune_launch(
            base_model=tiny_model, snapshot=snapshot, arm=ModelVersion.Arm.VALUES_TARGETED,
            hyperparameters={"epochs": 1, "batch_size": 2, "max_seq_len": 128, "seed": seed},
        )
        wait_for(job, {JobStatus.SUCCEEDED, JobStatus.FAILED}, timeout=180, worker=gpu_worker)
        assert job.status == JobStatus.SUCCEEDED, job.error
        pids.append(int(job.worker.rsplit(":", 1)[1]))
    assert pids[0] != pids[1] and gpu_worker.pid not in pids

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        idle = children_of(gpu_worker.pid) - set(pids)
        if idle and not children_of(gpu_worker.pid) & set(pids):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"no fresh child replaced {pids}: {children_of(gpu_worker.pid)}")
    (child,) = idle
    assert "libtorch" not in Path(f"/proc/{child}/maps").read_text()
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids), "the job processes exited"
