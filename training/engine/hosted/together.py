"""Together AI fine-tuning through its official SDK (PyPI ``together``).

Uploads go through the SDK's own upload flow (``POST /v1/files`` answered by a redirect to
storage, a ``PUT`` of the bytes there, then ``POST /v1/files/{id}/preprocess``); jobs are
``/v1/fine-tunes``. The fine-tuned model is sampled through Together's OpenAI-compatible
``/v1/chat/completions`` by the shared sampler, under the job's ``model_output_name``.

Our hyperparameters, mapped to Together's: epochs → ``n_epochs``, batch_size →
``batch_size``, learning_rate → ``learning_rate`` (absolute, as ours), grad_accum →
``gradient_accumulation_steps``, seed → ``random_seed``, lora_r / lora_alpha → ``lora_r`` /
``lora_alpha``, the method LoRA / full → ``lora`` True / False, a preference job →
``training_method="dpo"`` with ``dpo_beta``, a validation snapshot or held-out share →
``validation_file`` with ``n_evals`` (its ``eval/loss`` metrics become the validation
curve), max_seq_len → ``max_seq_length`` (within the model's limits), warm-up steps →
``warmup_ratio`` (the share of all steps, computed by the job service). A job that continues
an earlier fine-tune sends it as ``from_checkpoint`` and no ``model`` (the SDK takes one or
the other); the SDK would then read the limits of the checkpoint's name, which Together
lists only for base models, so the base model's limits are read here and passed in.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from training.engine.errors import EngineError
from training.engine.hosted.base import (
    CreatedJob,
    HostedJobSpec,
    RemoteCheckpoint,
    RemoteEvent,
    RemoteJobState,
    TrainingKind,
)
from training.engine.remote import call_with_retries

DEFAULT_SAMPLING_URL = "https://api.together.xyz/v1"
SUFFIX_MAX = 40  # Together's limit on the model-name suffix
OUTCOMES = {
    "pending": "running",
    "queued": "running",
    "running": "running",
    "compressing": "running",
    "uploading": "running",
    "cancel_requested": "running",
    "completed": "succeeded",
    "error": "failed",
    "cancelled": "cancelled",
}


def sdk_root(base_url: str) -> str:
    """The SDK's base URL (it adds ``/v1/...`` itself) for an OpenAI-compatible ``…/v1``."""
    url = (base_url or DEFAULT_SAMPLING_URL).rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class TogetherFineTuneBackend:
    """The Together fine-tuning API: upload, create, poll, cancel."""

    label = "Together AI"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_SAMPLING_URL,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        timeout: float = 120.0,
    ) -> None:
        import together

        self.errors = together
        self.client = together.Together(
            api_key=api_key or "none",
            base_url=sdk_root(base_url),
            max_retries=0,  # call_with_retries does them
            timeout=timeout,
        )
        self.max_retries = max_retries
        self.backoff_base = backoff_base

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        def guarded() -> Any:
            try:
                return call()
            except ValueError as exc:
                # The SDK checks files and hyperparameters against the model's limits
                # before it sends anything: its message says what to change.
                raise EngineError(f"{what}: {exc}") from exc

        return call_with_retries(
            guarded,
            what=what,
            max_retries=self.max_retries,
            backoff_base=self.backoff_base,
            errors=self.errors,
        )

    def upload_training_file(
        self,
        jsonl_bytes: bytes,
        *,
        filename: str = "train.jsonl",
        kind: TrainingKind = "supervised",
    ) -> str:
        """Upload JSONL (chat examples, or preference pairs for DPO: Together tells the
        formats apart by their keys) and return the file id."""
        if not jsonl_bytes.strip():
            raise EngineError("The training file is empty.")
        with tempfile.TemporaryDirectory() as tmp:
            # The SDK uploads from a path and takes the file type from its suffix.
            path = Path(tmp) / (filename if filename.endswith(".jsonl") else f"{filename}.jsonl")
            path.write_bytes(jsonl_bytes)
            file = self._call(
                "Uploading the training file",
                lambda: self.client.files.upload(path, purpose="fine-tune", check=True),
            )
        return file.id

    def create_job(self, spec: HostedJobSpec) -> CreatedJob:
        """Start a supervised (``sft``) or preference (``dpo``) fine-tune, LoRA or full, of
        the base model or (``start_from``) from an earlier fine-tune of it; returns the job
        id and its hyperparameters. The SDK checks values against the base model's limits
        and refuses those outside them (EngineError with its message)."""
        api = self.client.fine_tuning
        limits = self._call(
            f"Reading the fine-tuning limits of {spec.model}",
            lambda: api.model_limits(model_name=spec.model),
        )
        kwargs = self._request(spec, limits)
        job = self._call(
            f"Creating a fine-tune of {spec.start_from or spec.model}",
            lambda: api.create(**kwargs, model_limits=limits),
        )
        sent = {k: v for k, v in kwargs.items() if k not in NOT_HYPERPARAMETERS}
        return CreatedJob(id=job.id, hyperparameters={**sent, **_resolved(job)})

    def _request(self, spec: HostedJobSpec, limits: Any) -> dict[str, Any]:
        """The SDK's ``fine_tuning.create`` arguments for ``spec``."""
        kwargs: dict[str, Any] = {
            "training_file": spec.training_file,
            "lora": spec.lora,
            "training_method": "dpo" if spec.kind == "preference" else "sft",
        }
        if spec.start_from:
            kwargs["from_checkpoint"] = spec.start_from
        else:
            kwargs["model"] = spec.model
        if spec.epochs != "auto":
            kwargs["n_epochs"] = int(spec.epochs)
        if spec.batch_size != "auto":
            kwargs["batch_size"] = int(spec.batch_size)
        optional = {
            "learning_rate": spec.learning_rate,
            "gradient_accumulation_steps": spec.grad_accum,
            "random_seed": spec.seed,
            "validation_file": spec.validation_file,
            # Without n_evals Together evaluates a validation file zero times.
            "n_evals": spec.n_evals if spec.validation_file else None,
            "suffix": spec.suffix[:SUFFIX_MAX] if spec.suffix else None,
            "max_seq_length": _within_limits(spec, limits),
            "warmup_ratio": spec.warmup_ratio,
        }
        if spec.lora:
            optional.update(lora_r=spec.lora_r, lora_alpha=spec.lora_alpha)
        if spec.kind == "preference":
            optional["dpo_beta"] = spec.dpo_beta
        else:
            kwargs["train_on_inputs"] = "auto"  # answers only, as our local trainer does
        kwargs.update({name: value for name, value in optional.items() if value is not None})
        return kwargs

    def poll(self, job_id: str, *, after: str | None = None) -> RemoteJobState:
        """Status, events after the first ``after`` (a count: Together's events have no
        ids and come oldest first), checkpoints and training losses of a job."""
        api = self.client.fine_tuning
        job = self._call(f"Reading fine-tune {job_id}", lambda: api.retrieve(job_id))
        listed = self._call(f"Reading events of {job_id}", lambda: api.list_events(job_id))
        raw_events = list(listed.data or [])
        seen = int(after) if after and after.isdigit() else 0
        events = [_event(job_id, i, e) for i, e in enumerate(raw_events)][seen:]
        checkpoints = self._call(
            f"Reading checkpoints of {job_id}", lambda: api.list_checkpoints(job_id)
        )
        metrics = self._call(f"Reading metrics of {job_id}", lambda: api.list_metrics(job_id))
        progress = getattr(job, "progress", None)
        return RemoteJobState(
            job_id=job.id,
            status=job.status,
            outcome=OUTCOMES.get(job.status, "running"),
            fine_tuned_model=job.x_model_output_name,
            trained_tokens=job.token_count,
            error=_error_of(raw_events) if job.status == "error" else None,
            events=events,
            events_cursor=str(len(raw_events)),
            checkpoints=sorted(
                (_checkpoint(c) for c in checkpoints.data or []), key=lambda c: c.step_number
            ),
            losses=_losses(metrics.metrics or []),
            validation_losses=_validation_losses(metrics.metrics or []),
            eta_seconds=float(progress.seconds_remaining)
            if progress is not None and progress.estimate_available
            else None,
            hyperparameters=_resolved(job),
        )

    def cancel(self, job_id: str) -> str:
        """Ask Together to cancel a job; returns the status it reports."""
        job = self._call(
            f"Cancelling fine-tune {job_id}", lambda: self.client.fine_tuning.cancel(job_id)
        )
        return job.status

    def model_shutdown_date(self, model_id: str) -> str | None:
        """Together's model listing gives no retirement dates: the configured date of the
        model's family (``HOSTED_PROVIDER_DATES["together"]``) applies, if any."""
        return None


# Arguments of fine_tuning.create that name files or the output rather than how it trains.
NOT_HYPERPARAMETERS = {"training_file", "validation_file", "suffix"}
# What Together's job answer reports it runs with (the SDK fills in what we leave out).
RESOLVED = ("n_epochs", "batch_size", "learning_rate", "warmup_ratio", "max_seq_length",
            "gradient_accumulation_steps", "n_evals", "from_checkpoint")  # fmt: skip


def _within_limits(spec: HostedJobSpec, limits: Any) -> int | None:
    """Our max_seq_len within the model's limits: Together refuses a value under its
    minimum or over its maximum, and a longer limit only truncates less."""
    if spec.max_seq_len is None:
        return None
    ceiling = limits.max_seq_length_dpo if spec.kind == "preference" else limits.max_seq_length_sft
    return max(limits.min_max_seq_length, min(spec.max_seq_len, ceiling))


def _resolved(job: Any) -> dict[str, Any]:
    """The hyperparameters Together reports on the created job, in its names."""
    found = {name: getattr(job, name, None) for name in RESOLVED}
    training_type = getattr(job, "training_type", None)
    if training_type is not None:
        found["lora"] = getattr(training_type, "type", "") == "Lora"
        found["lora_r"] = getattr(training_type, "lora_r", None)
        found["lora_alpha"] = getattr(training_type, "lora_alpha", None)
    method = getattr(job, "training_method", None)
    if method is not None and getattr(method, "method", None) == "dpo":
        found["dpo_beta"] = getattr(method, "dpo_beta", None)
    return {name: value for name, value in found.items() if value is not None}


def _event(job_id: str, index: int, raw: Any) -> RemoteEvent:
    return RemoteEvent(
        id=f"{job_id}:{index}",
        created_at=_seconds(raw.created_at),
        level=str(raw.level or "info"),
        message=f"{raw.type}: {raw.message}" if raw.message else str(raw.type),
    )


def _seconds(created_at: str) -> int:
    try:
        return int(datetime.fromisoformat(str(created_at).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def _error_of(events: list[Any]) -> str | None:
    """Together puts a failed job's reason in its last error event, not on the job."""
    for raw in reversed(events):
        if raw.type == "job_error" or raw.level == "error":
            return str(raw.message or raw.type)
    return None


def _checkpoint(raw: Any) -> RemoteCheckpoint:
    return RemoteCheckpoint(
        id=raw.object_name or raw.path,
        step_number=int(raw.step),
        train_loss=None,  # Together reports losses as metrics, not with checkpoints
        fine_tuned_model_checkpoint=raw.object_name or raw.path,
    )


def _losses(metrics: list[dict[str, float]]) -> list[tuple[int, float]]:
    """(step, training loss) from Together's metric snapshots (``train/global_step``,
    ``train/loss``); evaluation snapshots carry ``eval/*`` keys and are skipped."""
    by_step = {}
    for row in metrics:
        if "train/loss" in row and "train/global_step" in row:
            by_step[int(row["train/global_step"])] = float(row["train/loss"])
    return sorted(by_step.items())


def _validation_losses(metrics: list[dict[str, float]]) -> list[tuple[int, float]]:
    """(step, loss on the validation file) from Together's evaluation snapshots
    (``eval/loss``, at ``eval/global_step`` or else ``train/global_step``)."""
    by_step = {}
    for row in metrics:
        step = row.get("eval/global_step", row.get("train/global_step"))
        if "eval/loss" in row and step is not None:
            by_step[int(step)] = float(row["eval/loss"])
    return sorted(by_step.items())
