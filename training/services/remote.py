"""Hosted fine-tunes (OpenAI, Together AI…): start a remote job, then mirror its state by
polling. The provider is behind ``training.services.hosted.hosted_backend``; nothing here
knows which one it is."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from training.models import FineTuneJob, JobStatus, ModelVersion
from training.services import hosted
from training.services.errors import TrainingError
from training.services.hosted_dates import check_new_job_allowed, training_not_available_reason
from training.services.jobs import JobReporter, fail_job, finish_job
from training.services.validation import examples_jsonl, split_examples, validation_provenance

logger = logging.getLogger(__name__)

# Our status for each backend outcome (training.engine.hosted.base.Outcome).
OUTCOME_STATUS = {
    "running": JobStatus.RUNNING,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}
# OpenAI's own statuses, kept for callers that read them.
OPENAI_STATUS = {
    "validating_files": JobStatus.RUNNING,
    "queued": JobStatus.RUNNING,
    "running": JobStatus.RUNNING,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}


def hosted_start(job: FineTuneJob) -> None:
    """Upload the snapshot and create the remote job; polling mirrors it from then on."""
    from training.engine.errors import TrainingNotAvailable

    reporter = JobReporter(job)
    try:
        # A job queued before the cut-off and run after it: refused here, not by the API.
        check_new_job_allowed(job.base_model)
        backend = hosted.hosted_backend(job.base_model)
        reporter.phase(f"uploading the snapshot to {backend.label}")
        file_id, validation_id, examples = _upload_files(job, backend, reporter)
        spec = hosted.job_spec(job, file_id, validation_id, examples=examples)
        created = backend.create_job(spec)
    except TrainingNotAvailable as refused:
        reason = training_not_available_reason(job.base_model, refused.server_message)
        fail_job(job, reporter, TrainingError(reason))
        return
    except Exception as exc:
        fail_job(job, reporter, exc)
        return
    FineTuneJob.objects.filter(pk=job.pk).update(
        remote_file_id=file_id, remote_job_id=created.id, remote_events_cursor="",
        provider_hyperparameters=created.hyperparameters,
    )  # fmt: skip
    reporter.log(f"created {backend.label} job {created.id} from file {file_id}")
    reporter.flush()


@dataclass(frozen=True)
class UploadData:
    """What a hosted job uploads: the training file, the validation file (None without
    validation) and how many examples each holds. The exit kit writes the same bytes."""

    training: bytes
    validation: bytes | None
    examples: int
    validation_examples: int = 0


def upload_data(job: FineTuneJob) -> UploadData:
    """The files of ``job`` as the provider gets them: chat JSONL of the examples trained on
    and, for a job with validation (a validation snapshot or a held-out share, never trained
    on), the validation examples' JSONL; a DPO job's pairs as preference JSONL (no validation
    file: its snapshot is the pairs)."""
    if job.is_dpo:
        from training.engine.hosted.base import preference_jsonl

        pairs = job.preference_pairs
        return UploadData(preference_jsonl(pairs), None, len(pairs))
    train, validation = split_examples(job)
    held = examples_jsonl(validation) if validation else None
    return UploadData(examples_jsonl(train), held, len(train), len(validation))


def _upload_files(job: FineTuneJob, backend, reporter: JobReporter) -> tuple[str, str | None, int]:
    """Upload :func:`upload_data`; the files' ids and how many training examples went up."""
    data = upload_data(job)
    if job.is_dpo:  # preference pairs, never a validation file (upload_data)
        file_id = backend.upload_training_file(
            data.training, filename="preferences.jsonl", kind="preference"
        )
    else:
        file_id = backend.upload_training_file(data.training)
    if data.validation is None:
        return file_id, None, data.examples
    validation_id = backend.upload_training_file(data.validation, filename="validation.jsonl")
    reporter.log(
        f"uploaded {data.validation_examples} validation examples as file {validation_id}"
    )
    return file_id, validation_id, data.examples


def hosted_poll(job_id: int) -> str:
    """Mirror one hosted job's status, events, losses and checkpoints. Returns our status."""
    related = ("base_model", "snapshot__dataset", "start_version")
    job = FineTuneJob.objects.select_related(*related).get(pk=job_id)
    if job.status != JobStatus.RUNNING or not job.remote_job_id:
        return job.status
    from training.engine.errors import NotFoundAtProvider

    reporter = JobReporter(job)
    backend = hosted.hosted_backend(job.base_model)
    try:
        state = backend.poll(job.remote_job_id, after=job.remote_events_cursor or None)
    except NotFoundAtProvider as gone:
        # Deleted at the provider (or another account's key): polling again cannot help.
        reason = f"{backend.label} no longer knows job {job.remote_job_id}. {gone}"
        fail_job(job, reporter, TrainingError(reason))
        return JobStatus.FAILED
    provider = backend.label.split()[0].lower()
    for event in state.events:
        reporter.log(f"{provider} {event.level}: {event.message}")
    fields = {
        "remote_events_cursor": state.events_cursor or job.remote_events_cursor,
        "phase": f"{backend.label} reports the job {state.status.replace('_', ' ')}",
        "eta_seconds": state.eta_seconds,  # None when the provider gives no estimate
    }
    if state.losses:
        fields.update(
            loss_history=[list(pair) for pair in state.losses],
            progress_done=max(step for step, _ in state.losses),
        )
    if state.validation_losses:
        fields["validation_loss_history"] = [list(pair) for pair in state.validation_losses]
    checkpoints = checkpoint_rows(state.checkpoints)
    if checkpoints and checkpoints != job.remote_checkpoints:  # every poll, whatever the status
        fields["remote_checkpoints"] = checkpoints
    resolved = {**job.provider_hyperparameters, **state.hyperparameters}
    if resolved != job.provider_hyperparameters:  # OpenAI's "auto" values, once it picks them
        fields["provider_hyperparameters"] = resolved
    reporter.update(force=True, **fields)
    status = OUTCOME_STATUS[state.outcome]
    if status == JobStatus.SUCCEEDED:
        _record_result(job, backend, state, reporter)
    elif status == JobStatus.FAILED:
        finish_job(
            FineTuneJob, job.pk, status, error=state.error or f"The {backend.label} job failed."
        )
    elif status == JobStatus.CANCELLED:
        finish_job(FineTuneJob, job.pk, status)
    return status


def _record_result(job: FineTuneJob, backend, state, reporter: JobReporter) -> None:
    """The fine-tuned model as a model version, sampled through the provider's
    OpenAI-compatible endpoint under the model id the provider gave it."""
    shutdown = listed_shutdown_date(backend, state.fine_tuned_model, reporter)
    reporter.flush()
    version = ModelVersion.objects.create(
        base_model=job.base_model,
        name=_version_name(job, state.fine_tuned_model or ""),
        arm=job.arm,
        remote_model_id=state.fine_tuned_model or "",
        parameter_count=job.base_model.parameter_count,
        metadata={
            **_data_provenance(job),
            "provider": job.backend,
            f"{job.backend}_job": job.remote_job_id,
            "remote_job": job.remote_job_id,
            "arm_override": job.arm_override,
            "trained_tokens": state.trained_tokens,
            "hyperparameters": job.hyperparameters,
            **validation_provenance(job),
            # The provider's checkpoints, as the job mirrors them (the exit kit reads the job).
            "remote_checkpoints": checkpoint_rows(state.checkpoints),
            **shutdown,
        },
    )
    finish_job(FineTuneJob, job.pk, JobStatus.SUCCEEDED, result=version)


def checkpoint_rows(checkpoints) -> list[dict]:
    """The provider's checkpoints (engine ``RemoteCheckpoint``) as the job stores them."""
    return [
        {
            "step": c.step_number,
            "id": c.id,
            "train_loss": c.train_loss,
            "model": c.fine_tuned_model_checkpoint,
            "validation_loss": c.validation_loss,
        }
        for c in checkpoints
    ]


# dpo.py builds on finetunes.py, which imports this module: its helpers are imported late.


def _version_name(job: FineTuneJob, model: str) -> str:
    from training.services.dpo import dpo_version_name

    return dpo_version_name(job, model) if job.is_dpo else f"{model} · #{job.pk}"


def _data_provenance(job: FineTuneJob) -> dict:
    """What the version was trained on: the dataset snapshot, or the preference snapshot."""
    if job.is_dpo:
        from training.services.dpo import dpo_provenance

        return dpo_provenance(job)
    return {"snapshot_hash": job.snapshot.content_hash, "dataset_kind": job.snapshot.dataset.kind}


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
        reporter.log(f"{backend.label} lists {model_id} as shutting down on {listed}")
    return {"shutdown_date": listed} if listed else {}


def hosted_poll_all() -> int:
    """Poll every running hosted fine-tune, whatever its provider."""
    ids = list(
        FineTuneJob.objects.filter(backend__in=hosted.HOSTED_BACKENDS, status=JobStatus.RUNNING)
        .exclude(remote_job_id="")
        .values_list("pk", flat=True)
    )
    for job_id in ids:
        try:
            hosted_poll(job_id)
        except Exception:  # one job's outage must not stop the others' polling
            logger.exception("polling hosted job %s failed", job_id)
    return len(ids)


# The names from before there was a second provider.
openai_start, openai_poll, openai_poll_all = hosted_start, hosted_poll, hosted_poll_all
