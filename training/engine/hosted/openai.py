"""OpenAI fine-tuning through the ``openai`` SDK: upload, create, poll, cancel."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from training.engine.errors import EngineError
from training.engine.hosted.base import (
    CreatedJob,
    HostedJobSpec,
    RemoteCheckpoint,
    RemoteEvent,
    RemoteJobState,
    TrainingKind,
)
from training.engine.remote import call_with_retries, iso_date, make_client

SUFFIX_MAX = 64
METADATA_MAX_PAIRS = 16
OUTCOMES = {
    "validating_files": "running",
    "queued": "running",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}

Hyperparameter = int | float | Literal["auto"]


class OpenAIFineTuneBackend:
    """The OpenAI fine-tuning API: upload, create, poll, cancel."""

    label = "OpenAI"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        organization: str | None = None,
        http_client: Any = None,
        max_retries: int = 5,
        backoff_base: float = 1.0,
    ) -> None:
        self.client = make_client(
            api_key, base_url, http_client=http_client, organization=organization
        )
        self.max_retries = max_retries
        self.backoff_base = backoff_base

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        return call_with_retries(
            call, what=what, max_retries=self.max_retries, backoff_base=self.backoff_base
        )

    def upload_training_file(
        self,
        jsonl_bytes: bytes,
        *,
        filename: str = "train.jsonl",
        kind: TrainingKind = "supervised",
    ) -> str:
        """Upload JSONL (chat examples or preference pairs: the purpose is "fine-tune" for
        both) and return the file id."""
        if not jsonl_bytes.strip():
            raise EngineError("The training file is empty.")
        file = self._call(
            "Uploading the training file",
            lambda: self.client.files.create(file=(filename, jsonl_bytes), purpose="fine-tune"),
        )
        return file.id

    def create_job(self, spec: HostedJobSpec) -> CreatedJob:
        """Start a supervised or DPO fine-tune; returns the job id. OpenAI fine-tunes its
        own way (no LoRA choice) and takes a learning-rate *multiplier*; ``suffix`` is cut
        to 64 characters and ``metadata`` values sent as strings (at most 16 pairs). With a
        ``validation_file`` OpenAI measures it on its own schedule (``n_evals`` is not sent):
        its checkpoints then carry ``full_valid_loss``. A job that continues an earlier
        fine-tune names it as the model (OpenAI fine-tunes its fine-tuned models)."""
        hyperparameters: dict[str, Any] = {
            "n_epochs": spec.epochs,
            "batch_size": spec.batch_size,
            "learning_rate_multiplier": spec.learning_rate_multiplier,
        }
        if spec.kind == "preference":
            if spec.dpo_beta is not None:
                hyperparameters["beta"] = spec.dpo_beta
            method = {"type": "dpo", "dpo": {"hyperparameters": hyperparameters}}
        else:
            method = {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}
        kwargs: dict[str, Any] = {
            "model": spec.start_from or spec.model,
            "training_file": spec.training_file,
            "method": method,
        }
        if spec.seed is not None:
            kwargs["seed"] = spec.seed
        if spec.suffix:
            kwargs["suffix"] = spec.suffix[:SUFFIX_MAX]
        if spec.metadata:
            kwargs["metadata"] = _clean_metadata(spec.metadata)
        if spec.validation_file:
            kwargs["validation_file"] = spec.validation_file
        job = self._call(
            f"Creating a fine-tune of {kwargs['model']}",
            lambda: self.client.fine_tuning.jobs.create(**kwargs),
        )
        sent = {"method": method["type"], **hyperparameters}
        if spec.seed is not None:
            sent["seed"] = spec.seed
        return CreatedJob(id=job.id, hyperparameters={**sent, **resolved_hyperparameters(job)})

    def poll(self, job_id: str, *, after: str | None = None) -> RemoteJobState:
        """Status, events newer than the event id ``after``, and checkpoints of a job."""
        jobs = self.client.fine_tuning.jobs
        job = self._call(f"Reading fine-tune {job_id}", lambda: jobs.retrieve(job_id))
        page = self._call(
            f"Reading events of {job_id}", lambda: jobs.list_events(job_id, limit=100)
        )
        events = _events_since(page, after)
        listed = self._call(
            f"Reading checkpoints of {job_id}",
            lambda: jobs.checkpoints.list(job_id, limit=100),
        )
        checkpoints = sorted((_checkpoint(c) for c in listed.data), key=lambda c: c.step_number)
        error = getattr(job, "error", None)
        return RemoteJobState(
            job_id=job.id,
            status=job.status,
            outcome=OUTCOMES.get(job.status, "running"),
            fine_tuned_model=job.fine_tuned_model,
            trained_tokens=job.trained_tokens,
            error=(error.message or error.code)
            if error and (error.message or error.code)
            else None,
            events=events,
            events_cursor=events[-1].id if events else after,
            checkpoints=checkpoints,
            # OpenAI reports losses only with its checkpoints, and no ETA.
            losses=[(c.step_number, c.train_loss) for c in checkpoints if c.train_loss is not None],
            validation_losses=[
                (c.step_number, c.validation_loss)
                for c in checkpoints
                if c.validation_loss is not None
            ],
            hyperparameters=resolved_hyperparameters(job),
        )

    def model_shutdown_date(self, model_id: str) -> str | None:
        """The ``shutdown_date`` the provider's model listing gives ``model_id``, as an ISO
        date, or None when it gives none. One attempt: the caller falls back to its own
        configured date when this fails."""
        model = call_with_retries(
            lambda: self.client.models.retrieve(model_id),
            what=f"Reading model {model_id}",
            max_retries=0,
        )
        return iso_date(getattr(model, "shutdown_date", None))

    def cancel(self, job_id: str) -> str:
        """Ask OpenAI to cancel a job; returns the status it reports."""
        job = self._call(
            f"Cancelling fine-tune {job_id}",
            lambda: self.client.fine_tuning.jobs.cancel(job_id),
        )
        return job.status


def resolved_hyperparameters(job: Any) -> dict[str, Any]:
    """The hyperparameters OpenAI reports on a job, without those still "auto": it picks
    the "auto" values once the job runs, and reports them on the job from then on."""
    method = getattr(job, "method", None)
    kind = getattr(method, "type", None)
    reported = getattr(getattr(method, kind, None), "hyperparameters", None) if kind else None
    if reported is None:
        reported = getattr(job, "hyperparameters", None)
    if reported is None:
        return {}
    values = reported.model_dump() if hasattr(reported, "model_dump") else dict(reported)
    return {name: value for name, value in values.items() if value not in (None, "auto")}


def _events_since(newest_first: Iterable[Any], cursor: str | None) -> list[RemoteEvent]:
    """Events after ``cursor``, oldest first.

    The API lists the newest first; iterating the SDK page fetches further pages until the
    cursor is reached.
    """
    fresh = []
    for event in newest_first:
        if cursor is not None and event.id == cursor:
            break
        fresh.append(
            RemoteEvent(
                id=event.id,
                created_at=int(event.created_at),
                level=str(event.level),
                message=str(event.message),
            )
        )
    return sorted(reversed(fresh), key=lambda e: e.created_at)


def _checkpoint(raw: Any) -> RemoteCheckpoint:
    metrics = getattr(raw, "metrics", None)
    loss = getattr(metrics, "train_loss", None)
    # full_valid_loss: the whole validation file at this checkpoint (valid_loss is one
    # batch of it); present only for a job created with a validation_file.
    validation = getattr(metrics, "full_valid_loss", None)
    return RemoteCheckpoint(
        id=raw.id,
        step_number=int(raw.step_number),
        train_loss=float(loss) if loss is not None else None,
        fine_tuned_model_checkpoint=raw.fine_tuned_model_checkpoint,
        validation_loss=float(validation) if validation is not None else None,
    )


def _clean_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    if len(metadata) > METADATA_MAX_PAIRS:
        raise EngineError(f"OpenAI accepts at most {METADATA_MAX_PAIRS} metadata pairs.")
    return {str(key)[:64]: str(value)[:512] for key, value in metadata.items()}
