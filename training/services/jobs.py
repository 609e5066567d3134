"""Job glue for fine-tunes and sampling jobs: claim, heartbeat, progress reports, finish or
fail with a readable reason, the sweep of stale runs, cancel and retry."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from palmsweb.lib import jobs as toolkit
from palmsweb.lib.jobs import Lifecycle, ProgressWriter, claim, fail, finish, sweep_stale
from training.models import LOG_TAIL_CHARS, FineTuneJob, JobStatus, SamplingJob, ScreeningRun
from training.services import hosted
from training.services.errors import TrainingError
from training.services.hosted_dates import check_new_job_allowed

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10


def heartbeat_timeout() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "JOB_HEARTBEAT_TIMEOUT", 120)))


def _job_lifecycle(model) -> Lifecycle:
    """A queued job is claimed; so is a running job whose heartbeat stopped (its worker died
    and the broker re-delivered the task). Every claim counts an attempt."""
    return Lifecycle(
        model=model,
        claimable=(JobStatus.QUEUED,),
        running=JobStatus.RUNNING,
        failed=JobStatus.FAILED,
        reclaim_after=heartbeat_timeout,
        heartbeat_field="heartbeat_at",
        count_attempts=True,
    )


FINETUNE = _job_lifecycle(FineTuneJob)
SAMPLING = _job_lifecycle(SamplingJob)
SCREENING = _job_lifecycle(ScreeningRun)
LIFECYCLES = {FineTuneJob: FINETUNE, SamplingJob: SAMPLING, ScreeningRun: SCREENING}
STALE_ERROR = (
    "The worker running this job stopped responding (no heartbeat for {seconds} s); it was "
    "probably killed. Retry the job to run it again."
)
OUT_OF_MEMORY = (
    "Out of memory. Lower the batch size or the maximum sequence length, or use LoRA."
)


def claim_job(model, job_id: int, *, worker: str) -> bool:
    """Move a job to RUNNING for this worker, exactly once (see :data:`FINETUNE`). A job
    that is running elsewhere, or finished, is left alone: the duplicate delivery does
    nothing."""
    return claim(LIFECYCLES[model], job_id, worker=worker)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobReporter:
    """The training layer over the toolkit's :class:`ProgressWriter`: progress is written when
    the toolkit's writer says it is time (at its bounded rate, or forced), and the fields only
    training jobs have (loss history, tokens per second, an ETA the engine computes itself,
    the persona track) and the job's log lines (each phase change among them, with its time)
    go with that write."""

    def __init__(self, job: FineTuneJob | SamplingJob):
        self.model = type(job)
        self.kind = LIFECYCLES[self.model]
        self.pk = job.pk
        self._writer: ProgressWriter | None = None
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

    def track(self, *, total: int, start: int = 0) -> None:
        """Measure progress from here: ``total`` items, ``start`` of them done before this run
        (a resume), so the toolkit's ETA is this run's own speed."""
        self._writer = ProgressWriter(
            self.kind, self.pk, total=total, start=start,
            min_interval=toolkit.PROGRESS_WRITE_SECONDS,
        )  # fmt: skip

    def update(self, *, force: bool = False, **fields) -> None:
        """Record ``fields``. With ``progress_done`` they are written when the toolkit's writer
        writes the progress; without it, at once when ``force``, else with the next write."""
        if "phase" in fields and fields["phase"] != self._phase:
            self._phase = fields["phase"]
            self.log(self._phase)  # every phase change is in the log, with its time
        self._pending.update(fields)
        if "progress_done" in fields:
            if self._writer is None:
                total = fields.get("progress_total")
                self.track(total=self._stored_total() if total is None else total)
            force = self._writer(fields["progress_done"], force=force, phase=self._phase)
        if force:
            self.flush()

    def _stored_total(self) -> int:
        return self.model.objects.values_list("progress_total", flat=True).get(pk=self.pk)

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


def heartbeat(job: FineTuneJob | SamplingJob):
    """Keep ``heartbeat_at`` fresh from a thread, also while a model loads or converts."""
    return toolkit.heartbeat(LIFECYCLES[type(job)], job.pk, every_seconds=HEARTBEAT_SECONDS)


def finish_job(model, pk: int, status: str, *, error: str = "", **fields) -> bool:
    """End a running job (phase and ETA cleared); False when it was not running."""
    return finish(LIFECYCLES[model], pk, status, error=error, **fields)


@transaction.atomic
def sweep_stale_jobs() -> int:
    """Fail every running job whose heartbeat stopped: its worker died. Returns the count.
    Hosted jobs have no local worker; their state is polled, not heartbeaten."""
    timeout = heartbeat_timeout()
    error = STALE_ERROR.format(seconds=int(timeout.total_seconds()))
    remote = ~Q(backend=FineTuneJob.Backend.LOCAL)
    return (
        sweep_stale(FINETUNE, older_than=timeout, error=error, exclude=remote)
        + sweep_stale(SAMPLING, older_than=timeout, error=error)
        + sweep_stale(SCREENING, older_than=timeout, error=error)
    )


def fail_job(job, reporter: JobReporter, exc: BaseException, **fields) -> None:
    """End a running job after ``exc``: cancelled when the engine stopped for a cancel, else
    failed with a reason a person can act on; either way the log says so. ``fields`` (the
    compute record of the work done) are stored with the outcome."""
    from training.engine.errors import Cancelled

    if isinstance(exc, Cancelled):
        reporter.log("cancelled")
        reporter.flush()
        finish_job(type(job), job.pk, JobStatus.CANCELLED, **fields)
        return
    reason = readable_failure(exc)
    logger.exception("job %s failed", job.pk)
    reporter.log(f"failed: {reason}")
    reporter.flush()
    fail(LIFECYCLES[type(job)], job.pk, reason, **fields)


def readable_failure(exc: BaseException) -> str:
    """A sentence a user can act on, from whatever the engine or the system raised."""
    from training.engine.errors import EngineError

    expected = (EngineError, TrainingError)
    missing_file = isinstance(exc, FileNotFoundError) and not isinstance(exc, expected)
    if missing_file and "out of memory" not in str(exc).lower():
        return f"A file the job needs is missing: {exc.filename or exc}."
    return toolkit.readable_failure(exc, expected=expected, out_of_memory=OUT_OF_MEMORY)


def job_cancel(*, job: FineTuneJob | SamplingJob) -> None:
    """Ask a job to stop. Queued jobs end at once; running ones within one step."""
    model = type(job)
    if model.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED, cancel_requested=True, finished_at=timezone.now()
    ):
        return
    model.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(cancel_requested=True)
    if isinstance(job, FineTuneJob) and job.is_hosted:
        job.refresh_from_db()
        if job.remote_job_id and job.status == JobStatus.RUNNING:
            backend = hosted.hosted_backend(job.base_model)
            try:
                backend.cancel(job.remote_job_id)
            except Exception as exc:  # the API's own errors, shown to the admin as they are
                raise TrainingError(f"{backend.label} refused the cancel: {exc}") from exc


@transaction.atomic
def job_retry(*, job: FineTuneJob | SamplingJob) -> None:
    """Queue a failed or cancelled job again; sampling resumes where it stopped. A hosted
    fine-tune is a new job at its provider, so a provider past its cut-off refuses it."""
    model = type(job)
    if isinstance(job, FineTuneJob) and job.backend != FineTuneJob.Backend.LOCAL:
        check_new_job_allowed(job.base_model)
    updated = model.objects.filter(
        pk=job.pk, status__in=[JobStatus.FAILED, JobStatus.CANCELLED]
    ).update(status=JobStatus.QUEUED, cancel_requested=False, error="", finished_at=None)
    if not updated:
        raise TrainingError("Only failed or cancelled jobs can be retried.")
    from training import tasks

    if model is FineTuneJob:
        tasks.run_finetune.delay_on_commit(job.pk, devices=job.devices)  # routed by devices
    else:
        tasks.run_sampling.delay_on_commit(job.pk)


def code_version() -> str:
    """The git commit the worker runs, when it runs from a checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parents[2], check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


