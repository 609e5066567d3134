"""Remote engines through the ``openai`` SDK: OpenAI-compatible sampling, OpenAI fine-tuning.

The SDK retries on its own; we turn that off (``max_retries=0``) and retry ourselves, so the
policy (which errors, how long to wait, when to give up) is ours and tested. Tests inject an
``http_client`` (an ``httpx2.Client``, which the SDK uses) with a mock transport.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal

from training.engine.errors import Cancelled, EngineError, TrainingNotAvailable
from training.engine.generation import (
    Generation,
    GenerationParams,
    output_seed,
    pending_outputs,
    resolve_seed,
)

if TYPE_CHECKING:
    from openai import OpenAI

# The error code of a 403 that means "no more fine-tuning for this account" (OpenAI's
# wind-down of self-serve fine-tuning), not a bad key.
TRAINING_NOT_AVAILABLE = "training_not_available"
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 60.0
SUFFIX_MAX = 64
METADATA_MAX_PAIRS = 16
FINISHED_STATUSES = frozenset({"succeeded", "failed", "cancelled"})

Hyperparameter = int | float | Literal["auto"]


def make_client(
    api_key: str,
    base_url: str | None = None,
    *,
    http_client: Any = None,
    timeout: float = 120.0,
    organization: str | None = None,
) -> OpenAI:
    """An SDK client with its own retries off (``call_with_retries`` does them)."""
    from openai import OpenAI

    return OpenAI(
        api_key=api_key or "none",  # local servers (llama.cpp, vLLM) accept any key
        base_url=base_url or None,
        organization=organization,
        timeout=timeout,
        max_retries=0,
        http_client=http_client,
    )


# --- retries and error mapping ---------------------------------------------------------------


def call_with_retries(
    call: Callable[[], Any],
    *,
    what: str,
    max_retries: int = 5,
    backoff_base: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Run ``call``; retry rate limits, 5xx and connection errors with exponential backoff.

    Authentication failures (401/403) and other client errors are not retried: they raise
    EngineError at once with the server's message (TrainingNotAvailable for a 403 whose code
    says the account may no longer fine-tune).
    """
    import openai

    for attempt in range(max_retries + 1):
        try:
            return call()
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            if getattr(exc, "code", None) == TRAINING_NOT_AVAILABLE:
                raise TrainingNotAvailable(
                    f"{what}: the provider no longer accepts fine-tuning jobs "
                    f"(HTTP 403 {TRAINING_NOT_AVAILABLE}): {_message(exc)}",
                    server_message=_message(exc),
                ) from exc
            raise EngineError(
                f"{what}: authentication failed (HTTP {exc.status_code}): {_message(exc)}. "
                "Check the API key."
            ) from exc
        except (openai.APIConnectionError, openai.APIStatusError) as exc:
            status = getattr(exc, "status_code", None)
            retryable = status is None or status in RETRYABLE_STATUS or status >= 500
            if not retryable:
                raise EngineError(f"{what}: HTTP {status}: {_message(exc)}") from exc
            if attempt == max_retries:
                reason = f"HTTP {status}" if status else "connection error"
                raise EngineError(
                    f"{what}: gave up after {max_retries + 1} attempts ({reason}: {_message(exc)})."
                ) from exc
            sleep(_backoff(attempt, backoff_base, exc))
    raise AssertionError("unreachable")


def _backoff(attempt: int, base: float, exc: Exception) -> float:
    """Exponential backoff with jitter; a server's Retry-After wins when it gives one."""
    response = getattr(exc, "response", None)
    retry_after = response.headers.get("retry-after") if response is not None else None
    if retry_after:
        try:
            return min(float(retry_after), MAX_BACKOFF_SECONDS)
        except ValueError:
            pass  # an HTTP date: fall back to our own schedule
    return min(base * 2**attempt * (0.5 + random.random()), MAX_BACKOFF_SECONDS)


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
    return str(getattr(exc, "message", None) or exc)


# --- sampling through any OpenAI-compatible chat endpoint ----------------------------------


def generate_openai_compatible(
    base_url: str,
    api_key: str,
    model: str,
    prompts: Sequence[str],
    *,
    n: int,
    params: GenerationParams,
    max_concurrency: int = 4,
    max_retries: int = 5,
    skip: Collection[tuple[int, int]] | None = None,
    system_prompt: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_batch: Callable[[list[Generation]], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    http_client: Any = None,
    backoff_base: float = 1.0,
) -> list[Generation]:
    """Sample ``n`` outputs per prompt from ``/chat/completions`` (OpenAI, vLLM, llama.cpp).

    One request per output, each with its own seed (servers differ in support for ``n`` > 1,
    and per-output requests make resume exact). Requests run ``max_concurrency`` at a time.
    ``on_batch`` gets each output as it arrives; on a failure the outputs already received
    have been reported and the first error is raised as EngineError.
    """
    params.validate()
    todo = pending_outputs(len(prompts), n, skip)
    if not todo:
        return []
    client = make_client(api_key, base_url, http_client=http_client)
    base_seed = resolve_seed(params)
    stop = threading.Event()

    def one(pair: tuple[int, int]) -> Generation | None:
        if stop.is_set():
            return None
        seed = output_seed(base_seed, *pair)
        return _complete(
            client,
            model,
            prompts[pair[0]],
            system_prompt,
            params,
            seed,
            pair,
            max_retries=max_retries,
            backoff_base=backoff_base,
            stop=stop,
        )

    results: list[Generation] = []

    def collect(generation: Generation) -> None:
        results.append(generation)
        if on_batch:
            on_batch([generation])
        if on_progress:
            on_progress(len(results), len(todo))

    _run_all(one, todo, max_concurrency, collect, should_cancel or (lambda: False), stop)
    return sorted(results, key=lambda g: (g.prompt_index, g.sample_index))


def _run_all(
    work: Callable[[Any], Any],
    items: list,
    max_concurrency: int,
    collect: Callable[[Any], None],
    should_cancel: Callable[[], bool],
    stop: threading.Event,
) -> None:
    """Run ``work`` over ``items`` on a thread pool and ``collect`` results as they arrive.

    Callbacks and ``should_cancel`` run on the calling thread only (they may touch a
    database connection). On the first error or a cancel, queued items are dropped and
    requests in flight finish (their results are still collected, so a resume need not
    redo them); then the error, or Cancelled, is raised.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, max_concurrency))
    pending = {pool.submit(work, item) for item in items}
    error: BaseException | None = None
    try:
        while pending and error is None:
            if should_cancel():
                error = Cancelled()
                break
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            error = _collect_done(done, collect)
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
    _collect_done({f for f in pending if not f.cancelled()}, collect)
    if error is not None:
        raise error


def _collect_done(done: set[Future], collect: Callable[[Any], None]) -> BaseException | None:
    """Collect the results of finished futures; return the first error among them."""
    error = None
    for future in done:
        if future.exception() is not None:
            error = error or future.exception()
        elif future.result() is not None:
            collect(future.result())
    return error


def _sleep_unless(stop: threading.Event, seconds: float) -> None:
    # A cancel, or another request's failure, cuts a backoff short.
    if stop.wait(seconds):
        raise Cancelled()


def _complete(
    client: OpenAI,
    model: str,
    prompt: str,
    system_prompt: str | None,
    params: GenerationParams,
    seed: int,
    pair: tuple[int, int],
    *,
    max_retries: int,
    backoff_base: float,
    stop: threading.Event,
) -> Generation:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": prompt})
    response = call_with_retries(
        lambda: client.chat.completions.create(
            model=model,
            messages=messages,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=seed,
        ),
        what=f"Sampling {model} (prompt {pair[0]}, sample {pair[1]})",
        max_retries=max_retries,
        backoff_base=backoff_base,
        sleep=lambda seconds: _sleep_unless(stop, seconds),
    )
    if not response.choices:
        raise EngineError(f"Sampling {model}: the server returned no choices.")
    choice = response.choices[0]
    usage = getattr(response, "usage", None)
    return Generation(
        prompt_index=pair[0],
        sample_index=pair[1],
        text=(choice.message.content or "").strip(),
        tokens_generated=int(getattr(usage, "completion_tokens", 0) or 0),
        seed=seed,
        finish_reason=choice.finish_reason or "stop",
    )


# --- OpenAI fine-tuning --------------------------------------------------------------------


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


@dataclass(frozen=True)
class RemoteJobState:
    """A snapshot of a remote fine-tuning job. ``events`` are those newer than the cursor
    given to ``poll``, oldest first; pass ``events_cursor`` to the next ``poll``."""

    job_id: str
    status: str
    fine_tuned_model: str | None
    trained_tokens: int | None
    error: str | None
    events: list[RemoteEvent] = field(default_factory=list)
    events_cursor: str | None = None
    checkpoints: list[RemoteCheckpoint] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


class OpenAIFineTuneBackend:
    """The OpenAI fine-tuning API: upload, create, poll, cancel."""

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

    def upload_training_file(self, jsonl_bytes: bytes, *, filename: str = "train.jsonl") -> str:
        """Upload chat-format JSONL with purpose "fine-tune"; returns the file id."""
        if not jsonl_bytes.strip():
            raise EngineError("The training file is empty.")
        file = self._call(
            "Uploading the training file",
            lambda: self.client.files.create(file=(filename, jsonl_bytes), purpose="fine-tune"),
        )
        return file.id

    def create_job(
        self,
        model: str,
        training_file: str,
        *,
        n_epochs: Hyperparameter = "auto",
        batch_size: Hyperparameter = "auto",
        learning_rate_multiplier: Hyperparameter = "auto",
        seed: int | None = None,
        suffix: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        validation_file: str | None = None,
    ) -> str:
        """Start a supervised fine-tune; returns the job id.

        Each hyperparameter may be "auto". ``suffix`` is cut to 64 characters (the API's
        limit); ``metadata`` values are sent as strings (at most 16 pairs).
        """
        hyperparameters = {
            "n_epochs": n_epochs,
            "batch_size": batch_size,
            "learning_rate_multiplier": learning_rate_multiplier,
        }
        kwargs: dict[str, Any] = {
            "model": model,
            "training_file": training_file,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        }
        if seed is not None:
            kwargs["seed"] = seed
        if suffix:
            kwargs["suffix"] = suffix[:SUFFIX_MAX]
        if metadata:
            kwargs["metadata"] = _clean_metadata(metadata)
        if validation_file:
            kwargs["validation_file"] = validation_file
        job = self._call(
            f"Creating a fine-tune of {model}",
            lambda: self.client.fine_tuning.jobs.create(**kwargs),
        )
        return job.id

    def poll(self, job_id: str, *, after: str | None = None) -> RemoteJobState:
        """Status, events newer than the event id ``after``, and checkpoints of a job."""
        jobs = self.client.fine_tuning.jobs
        job = self._call(f"Reading fine-tune {job_id}", lambda: jobs.retrieve(job_id))
        page = self._call(
            f"Reading events of {job_id}", lambda: jobs.list_events(job_id, limit=100)
        )
        events = _events_since(page, after)
        checkpoints = self._call(
            f"Reading checkpoints of {job_id}",
            lambda: jobs.checkpoints.list(job_id, limit=100),
        )
        error = getattr(job, "error", None)
        return RemoteJobState(
            job_id=job.id,
            status=job.status,
            fine_tuned_model=job.fine_tuned_model,
            trained_tokens=job.trained_tokens,
            error=(error.message or error.code)
            if error and (error.message or error.code)
            else None,
            events=events,
            events_cursor=events[-1].id if events else after,
            checkpoints=sorted(
                (_checkpoint(c) for c in checkpoints.data), key=lambda c: c.step_number
            ),
        )

    def model_shutdown_date(self, model_id: str) -> str | None:
        """The ``shutdown_date`` the provider's model listing gives ``model_id``, as an ISO
        date, or None when it gives none. One attempt: the caller falls back to its own
        configured date when this fails."""
        model = call_with_retries(
            lambda: self.client.models.retrieve(model_id),
            what=f"Reading model {model_id}", max_retries=0,
        )
        return iso_date(getattr(model, "shutdown_date", None))

    def cancel(self, job_id: str) -> str:
        """Ask OpenAI to cancel a job; returns the status it reports."""
        job = self._call(
            f"Cancelling fine-tune {job_id}",
            lambda: self.client.fine_tuning.jobs.cancel(job_id),
        )
        return job.status


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
    loss = getattr(metrics, "train_loss", None) if metrics is not None else None
    return RemoteCheckpoint(
        id=raw.id,
        step_number=int(raw.step_number),
        train_loss=float(loss) if loss is not None else None,
        fine_tuned_model_checkpoint=raw.fine_tuned_model_checkpoint,
    )


def _clean_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    if len(metadata) > METADATA_MAX_PAIRS:
        raise EngineError(f"OpenAI accepts at most {METADATA_MAX_PAIRS} metadata pairs.")
    return {str(key)[:64]: str(value)[:512] for key, value in metadata.items()}


def iso_date(value: Any) -> str | None:
    """A provider's date as ``YYYY-MM-DD``: Unix seconds, or an ISO date or date-time string.
    Anything else (missing, malformed) is None."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC).date().isoformat()
    try:
        return date.fromisoformat(str(value)[:10]).isoformat()
    except ValueError:
        return None
