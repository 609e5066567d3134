"""What every hosted fine-tuning backend offers: upload a snapshot, create a job, poll its
status, events and metrics, cancel it, and name the model that samples the result.

The backends differ in vocabulary (OpenAI says "succeeded", Together "completed"; OpenAI's
hyperparameters are "auto"-able multipliers, Together's absolute values): each one maps its
own words onto :class:`RemoteJobState` and :class:`HostedJobSpec`, so the job service
needs no provider switch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# Our own words for where a remote job stands; each backend maps its provider's statuses.
Outcome = Literal["running", "succeeded", "failed", "cancelled"]
FINISHED_OUTCOMES = frozenset({"succeeded", "failed", "cancelled"})
# "supervised": chat examples (our snapshots); "preference": DPO pairs.
TrainingKind = Literal["supervised", "preference"]


@dataclass(frozen=True)
class RemoteEvent:
    id: str
    created_at: int
    level: str
    message: str


@dataclass(frozen=True)
class RemoteCheckpoint:
    id: str
    step_number: int
    train_loss: float | None
    fine_tuned_model_checkpoint: str
    # The loss on the whole validation file at this checkpoint, where the provider gives it.
    validation_loss: float | None = None


@dataclass(frozen=True)
class RemoteJobState:
    """A snapshot of a remote fine-tuning job. ``status`` is the provider's own word,
    ``outcome`` ours. ``events`` are those newer than the cursor given to ``poll``, oldest
    first; pass ``events_cursor`` to the next ``poll``. ``losses`` are ``(step, train
    loss)`` pairs, ``validation_losses`` ``(step, loss on the validation file)`` pairs (a job
    given one), ``eta_seconds`` the provider's estimate of the time left (None: none)."""

    job_id: str
    status: str
    fine_tuned_model: str | None
    trained_tokens: int | None
    error: str | None
    outcome: Outcome = "running"
    events: list[RemoteEvent] = field(default_factory=list)
    events_cursor: str | None = None
    checkpoints: list[RemoteCheckpoint] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    validation_losses: list[tuple[int, float]] = field(default_factory=list)
    eta_seconds: float | None = None
    # The job's hyperparameters as the provider now reports them, in its own names (OpenAI
    # resolves "auto" once the job runs); empty when it reports none.
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.outcome in FINISHED_OUTCOMES


@dataclass(frozen=True)
class HostedJobSpec:
    """One fine-tuning job in our own terms; each backend sends what its API takes.

    ``model`` is always the base model; ``start_from`` names an earlier fine-tune of it at
    the same provider (its model id) to continue from. ``learning_rate`` is absolute
    (Together takes it as is; OpenAI only takes a multiplier, ``learning_rate_multiplier``,
    so it ignores this one). ``lora`` False is a full fine-tune. ``dpo_beta`` applies to
    preference jobs only. ``validation_file``: an uploaded file of held-out examples the
    provider measures the loss of; ``n_evals``: how many times over the run (Together;
    OpenAI picks its own schedule and ignores it). ``max_seq_len`` and ``warmup_ratio``
    (warm-up as a share of all steps): Together takes them, OpenAI sets its own.
    """

    model: str
    training_file: str
    kind: TrainingKind = "supervised"
    lora: bool = True
    epochs: int | Literal["auto"] = "auto"
    batch_size: int | Literal["auto"] = "auto"
    learning_rate: float | None = None
    learning_rate_multiplier: float | Literal["auto"] = "auto"
    grad_accum: int | None = None
    lora_r: int | None = None
    lora_alpha: int | None = None
    dpo_beta: float | None = None
    seed: int | None = None
    suffix: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    validation_file: str | None = None
    n_evals: int | None = None
    start_from: str | None = None
    max_seq_len: int | None = None
    warmup_ratio: float | None = None


@dataclass(frozen=True)
class CreatedJob:
    """A job the provider accepted: its id, and the hyperparameters it runs with in the
    provider's own names (what was sent, with the values the provider filled in)."""

    id: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)


class HostedBackend(Protocol):
    """The hosted fine-tuning interface the job service drives."""

    label: str  # "OpenAI", "Together AI": how pages and failure reasons name the provider

    def upload_training_file(
        self, jsonl_bytes: bytes, *, filename: str = "train.jsonl", kind: TrainingKind = ...
    ) -> str:
        """Upload a JSONL training file; returns the provider's file id."""

    def create_job(self, spec: HostedJobSpec) -> CreatedJob:
        """Start a fine-tune; returns the provider's job id and what it runs with."""

    def poll(self, job_id: str, *, after: str | None = None) -> RemoteJobState:
        """Status, events newer than the cursor ``after``, checkpoints and losses."""

    def cancel(self, job_id: str) -> str:
        """Ask the provider to cancel a job; returns the status it reports."""

    def model_shutdown_date(self, model_id: str) -> str | None:
        """The date the provider lists ``model_id`` as shutting down (ISO), or None."""


def preference_jsonl(pairs: Iterable[Mapping[str, str]]) -> bytes:
    """Preference (DPO) pairs in the format OpenAI and Together both take: one line per
    ``{"prompt", "chosen", "rejected"}`` pair, the prompt as the input's user message and
    each answer as a one-message assistant output. An optional ``system`` key becomes the
    input's system message."""
    lines = []
    for pair in pairs:
        messages = [{"role": "system", "content": pair["system"]}] if pair.get("system") else []
        messages.append({"role": "user", "content": pair["prompt"]})
        lines.append(
            json.dumps(
                {
                    "input": {"messages": messages},
                    "preferred_output": [{"role": "assistant", "content": pair["chosen"]}],
                    "non_preferred_output": [{"role": "assistant", "content": pair["rejected"]}],
                },
                ensure_ascii=False,
            )
        )
    return ("\n".join(lines) + "\n").encode() if lines else b""
