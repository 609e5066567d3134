"""The job toolkit on a real background row (a sampling job): claim once, re-claim only a
dead worker's row, finish only a running row (and only its own worker's when fenced),
bounded progress writes, the heartbeat thread, the sweep."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db.models import Q
from django.utils import timezone

from palmsweb.lib import jobs
from training.models import JobStatus, SamplingJob

pytestmark = pytest.mark.django_db

SAMPLING = jobs.Lifecycle(
    model=SamplingJob,
    reclaim_after=lambda: timedelta(minutes=2),
    heartbeat_field="heartbeat_at",
    count_attempts=True,
)
NO_RECLAIM = jobs.Lifecycle(model=SamplingJob, heartbeat_field="heartbeat_at")


def new_job(**fields) -> SamplingJob:
    return SamplingJob.objects.create(prompts=[{"text": "Q?"}], **fields)


def test_a_queued_row_is_claimed_once():
    job = new_job()
    assert jobs.claim(SAMPLING, job.pk, worker="a") is True
    assert jobs.claim(SAMPLING, job.pk, worker="b") is False
    job.refresh_from_db()
    assert (job.status, job.worker, job.attempts) == (JobStatus.RUNNING, "a", 1)
    assert job.started_at is not None and job.heartbeat_at is not None


def test_a_dead_workers_row_is_claimed_again_only_when_the_lifecycle_allows_it():
    stale = timezone.now() - timedelta(minutes=5)
    job = new_job(status=JobStatus.RUNNING, worker="dead", heartbeat_at=stale, attempts=1)
    assert jobs.claim(NO_RECLAIM, job.pk, worker="b") is False
    assert jobs.claim(SAMPLING, job.pk, worker="b") is True
    job.refresh_from_db()
    assert (job.worker, job.attempts) == ("b", 2)


def test_a_live_workers_row_is_not_claimed_again():
    job = new_job(status=JobStatus.RUNNING, worker="alive", heartbeat_at=timezone.now())
    assert jobs.claim(SAMPLING, job.pk, worker="b") is False


def test_finish_ends_only_a_running_row_and_respects_the_fence():
    job = new_job()
    assert jobs.finish(SAMPLING, job.pk, JobStatus.SUCCEEDED) is False  # still queued
    jobs.claim(SAMPLING, job.pk, worker="a")
    SamplingJob.objects.filter(pk=job.pk).update(phase="sampling", eta_seconds=12.0)
    assert jobs.finish(SAMPLING, job.pk, JobStatus.SUCCEEDED, fence={"worker": "b"}) is False
    assert jobs.finish(SAMPLING, job.pk, JobStatus.SUCCEEDED, fence={"worker": "a"}) is True
    assert jobs.finish(SAMPLING, job.pk, JobStatus.FAILED) is False  # a late duplicate
    job.refresh_from_db()
    assert (job.status, job.phase, job.eta_seconds) == (JobStatus.SUCCEEDED, "", None)
    assert job.finished_at is not None


class DomainError(Exception):
    pass


OOM = "Out of memory, lower the batch size."


def test_fail_writes_a_readable_reason():
    job = new_job()
    jobs.claim(SAMPLING, job.pk)
    assert jobs.fail(SAMPLING, job.pk, DomainError("The model is gone."), expected=(DomainError,))
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, "The model is gone.")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (DomainError("Say it as it is."), "Say it as it is."),
        (MemoryError(), OOM),
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), OOM),
        (ValueError("bad"), "ValueError: bad"),
    ],
)
def test_readable_failure(exc, expected):
    text = jobs.readable_failure(exc, expected=(DomainError,), out_of_memory=OOM)
    assert text == expected


def test_progress_is_written_at_a_bounded_rate_and_the_phase_at_once():
    job = new_job()
    now = [100.0]
    writer = jobs.ProgressWriter(SAMPLING, job.pk, total=10, min_interval=1.0, clock=lambda: now[0])
    assert writer(1) is True
    now[0] += 0.5
    assert writer(2) is False  # inside the interval: not written
    job.refresh_from_db()
    assert (job.progress_total, job.progress_done) == (10, 1)
    writer.phase("loading the model")
    job.refresh_from_db()
    assert job.phase == "loading the model"
    now[0] += 0.1
    assert writer(3, force=True, phase="batch 2 of 5") is True
    now[0] += 1.0
    assert writer(5) is True
    job.refresh_from_db()
    assert (job.progress_done, job.phase) == (5, "batch 2 of 5")
    assert job.eta_seconds == pytest.approx(5 / 4 * 1.6)  # 4 items in 1.6 s, 5 left
    assert job.progress_at is not None


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_thread_keeps_a_running_row_fresh():
    job = new_job()
    jobs.claim(SAMPLING, job.pk)
    old = timezone.now() - timedelta(hours=1)
    SamplingJob.objects.filter(pk=job.pk).update(heartbeat_at=old)
    with jobs.heartbeat(SAMPLING, job.pk, every_seconds=0.05):
        deadline = time.monotonic() + 10
        while SamplingJob.objects.get(pk=job.pk).heartbeat_at == old:
            assert time.monotonic() < deadline, "no heartbeat within 10 s"
            time.sleep(0.02)


def test_a_lifecycle_without_a_heartbeat_field_refuses_a_heartbeat():
    kind = jobs.Lifecycle(model=SamplingJob)
    with pytest.raises(ValueError, match="no heartbeat field"), jobs.heartbeat(kind, 1):
        pass


def test_the_sweep_fails_only_stale_running_rows():
    stale = timezone.now() - timedelta(minutes=10)
    dead = new_job(status=JobStatus.RUNNING, heartbeat_at=stale, phase="sampling")
    alive = new_job(status=JobStatus.RUNNING, heartbeat_at=timezone.now())
    kept = new_job(status=JobStatus.RUNNING, heartbeat_at=stale, name="remote")
    queued = new_job()
    swept = jobs.sweep_stale(
        SAMPLING, older_than=timedelta(minutes=2), error="The worker died.",
        exclude=Q(name="remote"),
    )
    assert swept == 1
    statuses = {j.pk: (j.status, j.error, j.phase) for j in SamplingJob.objects.all()}
    assert statuses[dead.pk] == (JobStatus.FAILED, "The worker died.", "")
    assert statuses[alive.pk][0] == statuses[kept.pk][0] == JobStatus.RUNNING
    assert statuses[queued.pk][0] == JobStatus.QUEUED
