"""Remote engines: sampling through any OpenAI-compatible endpoint, and the retry policy
every hosted backend shares (the fine-tuning backends are in ``training.engine.hosted``).

The SDKs retry on their own; we turn that off (``max_retries=0``) and retry ourselves, so the
policy (which errors, how long to wait, when to give up) is ours and tested. The tests point
the SDKs at local fake servers that speak each provider's REST protocol
(``tests/fake_openai.py``, ``tests/fake_together.py``).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, date, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

from training.engine.errors import (
    Cancelled,
    EngineError,
    NotFoundAtProvider,
    TrainingNotAvailable,
)
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
# The error code of a 404 for a model the server does not (or no longer) serve.
MODEL_NOT_FOUND = "model_not_found"
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 60.0


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
    errors: ModuleType | None = None,
) -> Any:
    """Run ``call``; retry rate limits, 5xx and connection errors with exponential backoff.

    Authentication failures (401/403) and other client errors are not retried: they raise
    EngineError at once with the server's message (TrainingNotAvailable for a 403 whose code
    says the account may no longer fine-tune). ``errors`` is the SDK whose exceptions
    ``call`` raises (``openai`` unless given; ``together``'s have the same names).
    """
    if errors is None:
        import openai as errors

    for attempt in range(max_retries + 1):
        try:
            return call()
        except (errors.AuthenticationError, errors.PermissionDeniedError) as exc:
            if _error_code(exc) == TRAINING_NOT_AVAILABLE:
                raise TrainingNotAvailable(
                    f"{what}: the provider no longer accepts fine-tuning jobs "
                    f"(HTTP 403 {TRAINING_NOT_AVAILABLE}): {_message(exc)}",
                    server_message=_message(exc),
                ) from exc
            raise EngineError(
                f"{what}: authentication failed (HTTP {exc.status_code}): {_message(exc)}. "
                "Check the API key."
            ) from exc
        except (errors.APIConnectionError, errors.APIStatusError) as exc:
            status = getattr(exc, "status_code", None)
            retryable = status is None or status in RETRYABLE_STATUS or status >= 500
            if status == 404 and _error_code(exc) == MODEL_NOT_FOUND:
                raise NotFoundAtProvider(
                    f"{what}: the model is not served there (HTTP 404 {MODEL_NOT_FOUND}: "
                    f"{_message(exc)}). A hosted model its provider has retired cannot be "
                    "sampled again; the outputs already sampled stay, and the exit kit "
                    "keeps them with their ratings."
                ) from exc
            if status == 404:
                raise NotFoundAtProvider(f"{what}: HTTP 404: {_message(exc)}") from exc
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


def _error_code(exc: Exception) -> str | None:
    """The error code of an SDK error: openai's errors carry it, together's only in the body."""
    code = getattr(exc, "code", None)
    body = _body(exc)
    if code is None and isinstance(body, Mapping):
        error = body.get("error", body)
        code = error.get("code") if isinstance(error, Mapping) else None
    return code


def _body(exc: Exception) -> Any:
    """The error's body; together's upload step passes it on as JSON text, so parse that."""
    body = getattr(exc, "body", None)
    if isinstance(body, str | bytes):
        try:
            return json.loads(body)
        except ValueError:
            return body
    return body


def _message(exc: Exception) -> str:
    body = _body(exc)
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
