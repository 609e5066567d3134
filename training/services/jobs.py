"""Job glue for fine-tunes and sampling jobs: claim, heartbeat, progress reports, finish or
fail with a readable reason, the sweep of stale runs, cancel and retry."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from training.models import LOG_TAIL_CHARS, FineTuneJob, JobStatus, SamplingJob
from training.services.base_models import openai_backend
from training.services.errors import TrainingError

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10
PROGRESS_WRITE_SECONDS = 1.0  # progress reaches the database at most once a second


def heartbeat_timeout() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "JOB_HEARTBEAT_TIMEOUT", 120)))


def claim_job(model, job_id: int, *, worker: str) -> bool:
    """Move a job to RUNNING for this worker, exactly once.

    A queued job is claimed; so is a running job whose heartbeat stopped (its worker died
    and the broker re-delivered the task). A job that is running elsewhere, or finished,
    is left alone: the duplicate delivery does nothing.
    """
    stale_before = timezone.now() - heartbeat_timeout()
    now = timezone.now()
    return bool(
        model.objects.filter(pk=job_id)
        .filter(
            Q(status=JobStatus.QUEUED)
            | Q(status=JobStatus.RUNNING, heartbeat_at__lt=stale_before)
        )
        .update(
            status=JobStatus.RUNNING,
            worker=worker,
            started_at=now,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            error="",
        )
    )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobReporter:
    """Writes progress, loss and log lines of one job to the database at a bounded rate."""

    def __init__(self, job: FineTuneJob | SamplingJob):
        self.model = type(job)
        self.pk = job.pk
        self._last_write = 0.0
        self._pending: dict = {}
        self._log_lines: list[str] = []
        self._phase = ""

    def log(self, line: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        self._log_lines.append(f"[{stamp}] {line}")
        logger.info("job %s: %s", self.pk, line)

    def phase(self, text: str) -> None:
        """Say what the job does now, at once: the page shows it above the progress bar."""
        self.update(force=True, phase=text)

    def update(self, *, force: bool = False, **fields) -> None:
        if "phase" in fields and fields["phase"] != self._phase:
            self._phase = fields["phase"]
            self.log(self._phase)  # every phase change is in the log, with its time
        self._pending.update(fields)
        now = time.monotonic()
        if not force and now - self._last_write < PROGRESS_WRITE_SECONDS:
            return
        self.flush()
        self._last_write = now

    def flush(self) -> None:
        job = self.model.objects.only("log").get(pk=self.pk)
        fields = dict(self._pending, heartbeat_at=timezone.now())
        if {"eta_seconds", "progress_done"} & set(self._pending):
            fields["progress_at"] = fields["heartbeat_at"]
        if self._log_lines:
            fields["log"] = (job.log + "\n".join(self._log_lines) + "\n")[-LOG_TAIL_CHARS:]
            self._log_lines = []
        self.model.objects.filter(pk=self.pk).update(**fields)
        self._pending = {}

    def should_cancel(self) -> bool:
        return self.model.objects.filter(pk=self.pk, cancel_requested=True).exists()


@contextmanager
def heartbeat(job: FineTuneJob | SamplingJob) -> Iterator[None]:
    """Keep ``heartbeat_at`` fresh from a thread, also while a model loads or converts."""
    stop = threading.Event()
    model, pk = type(job), job.pk

    def beat() -> None:
        from django.db import connection

        try:
            while not stop.wait(HEARTBEAT_SECONDS):
                model.objects.filter(pk=pk, status=JobStatus.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=HEARTBEAT_SECONDS + 5)


def finish_job(model, pk: int, status: str, *, error: str = "", **fields) -> None:
    model.objects.filter(pk=pk).update(
        status=status, error=error, finished_at=timezone.now(), eta_seconds=None, phase="",
        **fields,
    )


@transaction.atomic
def sweep_stale_jobs() -> int:
    """Fail every running job whose heartbeat stopped: its worker died. Returns the count."""
    stale_before = timezone.now() - heartbeat_timeout()
    failed = 0
    for model in (FineTuneJob, SamplingJob):
        failed += model.objects.filter(
            status=JobStatus.RUNNING, heartbeat_at__lt=stale_before
        ).exclude(**_remote_filter(model)).update(
            status=JobStatus.FAILED,
            finished_at=timezone.now(),
            phase="",
            error="The worker running this job stopped responding (no heartbeat for "
            f"{int(heartbeat_timeout().total_seconds())} s); it was probably killed. "
            "Retry the job to run it again.",
        )
    return failed


def _remote_filter(model) -> dict:
    # OpenAI jobs have no local worker; their state is polled, not heartbeaten.
    return {"backend": FineTuneJob.Backend.OPENAI} if model is FineTuneJob else {"pk__in": []}


def fail_job(job, reporter: JobReporter, exc: BaseException) -> None:
    from training.engine.errors import Cancelled

    if isinstance(exc, Cancelled):
        reporter.log("cancelled")
        reporter.flush()
        finish_job(type(job), job.pk, JobStatus.CANCELLED)
        return
    reason = readable_failure(exc)
    logger.exception("job %s failed", job.pk)
    reporter.log(f"failed: {reason}")
    reporter.flush()
    finish_job(type(job), job.pk, JobStatus.FAILED, error=reason)


def readable_failure(exc: BaseException) -> str:
    """A sentence a user can act on, from whatever the engine or the system raised."""
    from training.engine.errors import EngineError

    if isinstance(exc, EngineError | TrainingError):
        return str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return ("Out of memory. Lower the batch size or the maximum sequence length, or use "
                "LoRA.")
    if isinstance(exc, FileNotFoundError):
        return f"A file the job needs is missing: {exc.filename or exc}."
    return f"{type(exc).__name__}: {exc}"



def job_cancel(*, job: FineTuneJob | SamplingJob) -> None:
    """Ask a job to stop. Queued jobs end at once; running ones within one step."""
    model = type(job)
    if model.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED, cancel_requested=True, finished_at=timezone.now()
    ):
        return
    model.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(cancel_requested=True)
    if isinstance(job, FineTuneJob) and job.backend == FineTuneJob.Backend.OPENAI:
        job.refresh_from_db()
        if job.remote_job_id and job.status == JobStatus.RUNNING:
            try:
                openai_backend(job.base_model).cancel(job.remote_job_id)
            except Exception as exc:  # the API's own errors, shown to the admin as they are
                raise TrainingError(f"OpenAI refused the cancel: {exc}") from exc


@transaction.atomic
def job_retry(*, job: FineTuneJob | SamplingJob) -> None:
    """Queue a failed or cancelled job again; sampling resumes where it stopped."""
    model = type(job)
    updated = model.objects.filter(
        pk=job.pk, status__in=[JobStatus.FAILED, JobStatus.CANCELLED]
    ).update(status=JobStatus.QUEUED, cancel_requested=False, error="", finished_at=None)
    if not updated:
        raise TrainingError("Only failed or cancelled jobs can be retried.")
    from training import tasks

    task = tasks.run_finetune if model is FineTuneJob else tasks.run_sampling
    task.delay_on_commit(job.pk)


def code_version() -> str:
    """The git commit the worker runs, when it runs from a checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parents[2], check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


