"""The OpenAI fine-tuning backend: start a remote job, then mirror its state by polling."""

from __future__ import annotations

import logging

from curation.services import snapshot_jsonl
from training.models import FineTuneJob, JobStatus, ModelVersion
from training.services import base_models
from training.services.errors import TrainingError
from training.services.hosted_dates import check_new_job_allowed, training_not_available_reason
from training.services.jobs import JobReporter, fail_job, finish_job

logger = logging.getLogger(__name__)

OPENAI_STATUS = {
    "validating_files": JobStatus.RUNNING,
    "queued": JobStatus.RUNNING,
    "running": JobStatus.RUNNING,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}


def openai_start(job: FineTuneJob) -> None:
    """Upload the snapshot and create the remote job; polling mirrors it from then on."""
    from training.engine.errors import TrainingNotAvailable

    reporter = JobReporter(job)
    try:
        # A job queued before the cut-off and run after it: refused here, not by the API.
        check_new_job_allowed(job.base_model)
        reporter.phase("uploading the snapshot to OpenAI")
        backend = base_models.openai_backend(job.base_model)
        file_id = backend.upload_training_file(snapshot_jsonl(job.snapshot).encode())
        hp = job.hyperparameters
        remote_id = backend.create_job(
            job.base_model.model_id,
            file_id,
            n_epochs=hp["epochs"],
            batch_size=hp.get("openai_batch_size", "auto"),
            learning_rate_multiplier=hp.get("learning_rate_multiplier", "auto"),
            seed=hp["seed"],
            suffix=f"palms-{job.arm}-{job.snapshot.short_hash}"[:64],
            metadata={"palmsweb_job": str(job.pk), "snapshot": job.snapshot.content_hash},
        )
    except TrainingNotAvailable as refused:
        reason = training_not_available_reason(job.base_model, refused.server_message)
        fail_job(job, reporter, TrainingError(reason))
        return
    except Exception as exc:
        fail_job(job, reporter, exc)
        return
    FineTuneJob.objects.filter(pk=job.pk).update(remote_file_id=file_id, remote_job_id=remote_id)
    reporter.log(f"created OpenAI job {remote_id} from file {file_id}")
    reporter.flush()


def openai_poll(job_id: int) -> str:
    """Mirror one OpenAI job's status, events and checkpoints. Returns our status."""
    job = FineTuneJob.objects.select_related("base_model", "snapshot").get(pk=job_id)
    if job.status != JobStatus.RUNNING or not job.remote_job_id:
        return job.status
    reporter = JobReporter(job)
    backend = base_models.openai_backend(job.base_model)
    state = backend.poll(job.remote_job_id, after=job.remote_events_cursor)
    for event in state.events:
        reporter.log(f"openai {event.level}: {event.message}")
    losses = [[c.step_number, c.train_loss] for c in state.checkpoints if c.train_loss is not None]
    fields = {
        "remote_events_cursor": state.events_cursor or job.remote_events_cursor,
        "phase": f"OpenAI reports the job {state.status.replace('_', ' ')}",
    }
    if losses:
        # OpenAI gives no ETA: the page shows none.
        fields.update(loss_history=sorted(losses), progress_done=max(s for s, _ in losses),
                      eta_seconds=None)
    reporter.update(force=True, **fields)
    status = OPENAI_STATUS.get(state.status, JobStatus.RUNNING)
    if status == JobStatus.SUCCEEDED:
        shutdown = listed_shutdown_date(backend, state.fine_tuned_model, reporter)
        reporter.flush()
        version = ModelVersion.objects.create(
            base_model=job.base_model,
            name=f"{state.fine_tuned_model} · #{job.pk}",
            arm=job.arm,
            remote_model_id=state.fine_tuned_model or "",
            parameter_count=job.base_model.parameter_count,
            metadata={"snapshot_hash": job.snapshot.content_hash, "openai_job": job.remote_job_id,
                      "dataset_kind": job.snapshot.dataset.kind, "arm_override": job.arm_override,
                      "trained_tokens": state.trained_tokens, "hyperparameters":
                      job.hyperparameters, **shutdown},
        )
        finish_job(FineTuneJob, job.pk, status, result=version)
    elif status == JobStatus.FAILED:
        finish_job(FineTuneJob, job.pk, status, error=state.error or "The OpenAI job failed.")
    elif status == JobStatus.CANCELLED:
        finish_job(FineTuneJob, job.pk, status)
    return status


def listed_shutdown_date(backend, model_id: str | None, reporter: JobReporter) -> dict:
    """``{"shutdown_date": ...}`` when the provider's model listing gives ``model_id`` one
    (stored on the version; hosted_dates.version_shutdown prefers it), else nothing: the
    configured date of the model's family applies. A failed lookup only says so in the log."""
    if not model_id:
        return {}
    try:
        listed = backend.model_shutdown_date(model_id)
    except Exception as exc:  # the date is a nicety: the fine-tune has succeeded regardless
        reporter.log(f"could not read the shutdown date of {model_id}: {exc}")
        return {}
    if listed:
        reporter.log(f"OpenAI lists {model_id} as shutting down on {listed}")
    return {"shutdown_date": listed} if listed else {}


def openai_poll_all() -> int:
    ids = list(
        FineTuneJob.objects.filter(
            backend=FineTuneJob.Backend.OPENAI, status=JobStatus.RUNNING
        ).exclude(remote_job_id="").values_list("pk", flat=True)
    )
    for job_id in ids:
        try:
            openai_poll(job_id)
        except Exception:  # one job's outage must not stop the others' polling
            logger.exception("polling OpenAI job %s failed", job_id)
    return len(ids)

