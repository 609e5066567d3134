"""A local fake of OpenAI: a real HTTP server on 127.0.0.1 speaking the REST protocol the
``openai`` SDK uses for fine-tuning and sampling, with OpenAI's error bodies
(``{"error": {"message", "type", "param", "code"}}``).

Routes (as the SDK calls them; ``base_url`` ends in ``/v1``):

- ``POST /v1/files`` (multipart: ``file``, ``purpose``) → the file object; ``GET /v1/files/<id>``.
- ``POST /v1/fine_tuning/jobs``; ``GET /v1/fine_tuning/jobs/<id>``; ``GET …/events`` and
  ``…/checkpoints`` (cursor pages, newest first, ``limit`` and ``after``); ``POST …/cancel``.
- ``GET /v1/models``, ``GET /v1/models/<id>``; ``DELETE /v1/models/<id>`` (a fine-tune's
  owner deletes it).
- ``POST /v1/chat/completions`` for a model the fake serves (one in ``models``: the base
  models below and every succeeded job's ``fine_tuned_model``); any other answers 404
  ``model_not_found``, as OpenAI does for a deleted or retired model.

A test drives it with :meth:`FakeOpenAI.advance` (a job's status, events, checkpoints, error),
:meth:`FakeOpenAI.fault` (the next ``times`` requests to a path prefix get an error: 429 with
``retry-after``, 5xx, or ``status=0``, a dropped connection), :meth:`FakeOpenAI.retire` (a
model that disappears, at once or after ``after`` more completions) and
``training_available = False`` (job creation answers ``403 training_not_available``, as for an
organisation past OpenAI's fine-tuning cut-off). ``api_key``: any other bearer token gets 401.
Every request is kept in ``requests`` (its body, and ``at``, when it arrived). The server,
that record and the faults are ``tests/fake_http.py``'s, shared with the other fakes.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fake_http import Answer, FakeServer, Seen, serving

API_KEY = "sk-fake-openai"
CREATED = 1_767_225_600  # 2026-01-01, Unix seconds
# The models the fake serves and fine-tunes from the start (dated snapshots included).
BASE_MODELS = (
    "gpt-4o-mini",
    "gpt-4o-mini-2024-07-18",
    "gpt-4o",
    "gpt-4o-2024-08-06",
    "gpt-4.1",
    "gpt-4.1-2025-04-14",
    "gpt-4.1-mini",
    "gpt-4.1-mini-2025-04-14",
)
# What OpenAI resolves an undated model name to when it fine-tunes it (the job's "model").
SNAPSHOTS = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
}
# What OpenAI says, with 403 training_not_available, to an organisation that may no longer
# fine-tune.
NOT_AVAILABLE = "Fine-tuning is not available for your organization."
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_FAULT_MESSAGES = {
    429: ("Rate limit reached for requests. Please try again shortly.", "requests",
          "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!",
          "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}  # fmt: skip


def error_body(message: str, type_: str = "invalid_request_error", code=None, param=None):
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@dataclass
class FakeOpenAI(FakeServer):
    api_key: str | None = API_KEY
    training_available: bool = True
    files: dict[str, dict] = field(default_factory=dict)
    jobs: dict[str, dict] = field(default_factory=dict)
    models: dict[str, dict] = field(default_factory=dict)
    retiring: dict[str, int] = field(default_factory=dict)  # model → completions left
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        for model in BASE_MODELS:
            self.models[model] = _model(model, "system")

    # --- what tests call (and fault(), calls(): FakeServer's) ---------------------------

    def advance(
        self,
        job_id: str,
        status: str,
        *,
        events: list[str | dict] | None = None,
        checkpoints: list[dict] | None = None,
        error: dict | None = None,
        trained_tokens: int = 9000,
    ) -> None:
        """Move a job on: its status, events appended (a message, or ``{"message",
        "level"}``), checkpoints appended (``{"step", "train_loss"}`` and any other metrics
        such as ``full_valid_loss``), an ``error`` object for a failed job. ``succeeded``
        names the fine-tuned model and serves it."""
        with self._lock:
            job = self.jobs[job_id]
            job["status"] = status
            for raw in events or []:
                event = {"message": raw} if isinstance(raw, str) else raw
                self._event(job, event["message"], event.get("level", "info"))
            for raw in checkpoints or []:
                self._checkpoint(job, dict(raw))
            if error is not None:
                job["error"] = {"param": None, **error}
            if status in FINISHED:
                job["finished_at"] = CREATED + 3600
            if status == "succeeded":
                job["trained_tokens"] = trained_tokens
                job["fine_tuned_model"] = self._fine_tuned_name(job)
                self.models[job["fine_tuned_model"]] = _model(job["fine_tuned_model"], "fake-org")

    def add_model(self, model: str) -> None:
        """Serve ``model`` (an earlier fine-tune of this organisation, say) from now on."""
        with self._lock:
            self.models[model] = _model(model, "fake-org")

    def list_shutdown(self, model: str, shutdown_date: Any) -> None:
        """The model listing gives ``model`` this ``shutdown_date`` from now on."""
        with self._lock:
            self.models[model]["shutdown_date"] = shutdown_date

    def retire(self, model: str, *, after: int = 0) -> None:
        """The model disappears: after ``after`` more completions, every request for it
        (chat, listing) answers 404 ``model_not_found``."""
        with self._lock:
            if after <= 0:
                self.models.pop(model, None)
            else:
                self.retiring[model] = after

    # --- the protocol ----------------------------------------------------------------------

    def unauthorised(self) -> Answer:
        return 401, error_body(
            "Incorrect API key provided. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        ), {}  # fmt: skip

    def fault_body(self, status: int) -> Any:
        """OpenAI's usual body for the status."""
        message, type_, code = DEFAULT_FAULT_MESSAGES.get(
            status, (f"fake HTTP {status}", "invalid_request_error", None)
        )
        return error_body(message, type_, code)

    def fault_headers(self, status: int) -> dict[str, str]:
        """A 429 says ``retry-after: 0`` unless the test says otherwise."""
        return {"retry-after": "0"} if status == 429 else {}

    def route(self, seen: Seen) -> Answer:
        method, parts = seen.method, seen.path.strip("/").split("/")
        if parts[:1] != ["v1"]:
            return _not_found(f"Invalid URL ({method} {seen.path})")
        route = parts[1:]
        if route == ["files"] and method == "POST":
            return self._upload(seen)
        if len(route) == 2 and route[0] == "files" and method == "GET":
            if file := self.files.get(route[1]):
                return 200, _public(file), {}
            return _not_found(f"No such File object: {route[1]}")
        if route == ["fine_tuning", "jobs"] and method == "POST":
            return self._create_job(seen.json())
        if route[:2] == ["fine_tuning", "jobs"] and len(route) in (3, 4):
            return self._job_route(method, route[2], route[3] if len(route) == 4 else None, seen)
        if route == ["models"] and method == "GET":
            return 200, {"object": "list", "data": list(self.models.values())}, {}
        if route[:1] == ["models"] and len(route) == 2:
            return self._model_route(method, route[1])
        if route == ["chat", "completions"] and method == "POST":
            return self._complete(seen.json())
        return _not_found(f"Invalid URL ({method} {seen.path})")

    def _upload(self, seen: Seen) -> Answer:
        form = _multipart(seen.headers.get("content-type", ""), seen.body)
        if "file" not in form or "purpose" not in form:
            return 400, error_body("Missing file or purpose.", param="file"), {}
        filename, content = form["file"]
        purpose = form["purpose"][1].decode()
        if purpose == "fine-tune" and not _is_jsonl(content):
            return 400, error_body(
                "Invalid file format for Fine-Tuning API. Must be .jsonl", param="file"
            ), {}  # fmt: skip
        file_id = f"file-{next(self._ids):06d}"
        self.files[file_id] = {
            "id": file_id, "object": "file", "bytes": len(content), "created_at": CREATED,
            "filename": filename, "purpose": purpose, "status": "processed", "content": content,
        }  # fmt: skip
        return 200, _public(self.files[file_id]), {}

    def _create_job(self, body: dict) -> Answer:
        if not self.training_available:
            return 403, error_body(NOT_AVAILABLE, code="training_not_available"), {}
        problem = self._job_problem(body)
        if problem:
            return 400, error_body(*problem), {}
        job_id = f"ftjob-{next(self._ids):06d}"
        method = body.get("method") or {"type": "supervised", "supervised": {}}
        hyperparameters = method.get(method["type"], {}).get("hyperparameters", {})
        self.jobs[job_id] = {
            "id": job_id, "object": "fine_tuning.job", "created_at": CREATED,
            "model": SNAPSHOTS.get(body["model"], body["model"]),
            "organization_id": "org-fake", "result_files": [],
            "seed": body.get("seed", 42), "status": "validating_files",
            "training_file": body["training_file"],
            "validation_file": body.get("validation_file"),
            "hyperparameters": hyperparameters, "method": method,
            "suffix": body.get("suffix"), "metadata": body.get("metadata"),
            "fine_tuned_model": None, "trained_tokens": None, "finished_at": None,
            "error": None, "estimated_finish": None, "integrations": None,
            "events": [], "checkpoints": [], "request": body,
        }  # fmt: skip
        job = self.jobs[job_id]
        self._event(job, f"Validating training file: {body['training_file']}")
        self._event(job, f"Created fine-tuning job: {job_id}")
        return 200, _job(job), {}

    def _job_problem(self, body: dict) -> tuple[str, ...] | None:
        """What OpenAI's validation of a new job would refuse (message, type, code, param)."""
        model = body.get("model")
        if model not in self.models or not self._fine_tunable(model):
            return (f"Model {model} is not available for fine-tuning or does not exist.",
                    "invalid_request_error", "model_not_available", "model")  # fmt: skip
        for param in ("training_file", "validation_file"):
            file_id = body.get(param)
            if param in body and self.files.get(file_id, {}).get("purpose") != "fine-tune":
                return (f"invalid {param}: {file_id}", "invalid_request_error",
                        "invalid_file", param)  # fmt: skip
        if len(body.get("suffix") or "") > 64:
            return ("suffix is too long: at most 64 characters.", "invalid_request_error",
                    "invalid_value", "suffix")  # fmt: skip
        metadata = body.get("metadata") or {}
        if len(metadata) > 16 or not all(isinstance(v, str) for v in metadata.values()):
            return ("metadata: at most 16 string values.", "invalid_request_error",
                    "invalid_value", "metadata")  # fmt: skip
        return None

    def _fine_tunable(self, model: str) -> bool:
        return model in BASE_MODELS or model.startswith("ft:")

    def _job_route(self, method: str, job_id: str, part: str | None, seen: Seen) -> Answer:
        job = self.jobs.get(job_id)
        if job is None:
            return _not_found(f"Could not find fine-tune: {job_id}", code="fine_tune_not_found")
        if method == "GET" and part is None:
            return 200, _job(job), {}
        if method == "GET" and part in ("events", "checkpoints"):
            return 200, _cursor_page(job[part], seen.query), {}
        if method == "POST" and part == "cancel":
            if job["status"] in FINISHED:
                return 400, error_body(f"Job has already completed: {job_id}"), {}
            job["status"], job["finished_at"] = "cancelled", CREATED + 60
            self._event(job, "Fine-tuning job cancelled")
            return 200, _job(job), {}
        return _not_found(f"Invalid URL ({method} {seen.path})")

    def _model_route(self, method: str, model: str) -> Answer:
        if model not in self.models:
            return _model_not_found(model)
        if method == "GET":
            return 200, self.models[model], {}
        if method == "DELETE" and model.startswith("ft:"):
            del self.models[model]
            return 200, {"id": model, "object": "model", "deleted": True}, {}
        return 403, error_body(f"You do not have permission to delete {model}."), {}

    def _complete(self, body: dict) -> Answer:
        model = body.get("model", "")
        if model in self.retiring:
            self.retiring[model] -= 1
            if self.retiring[model] < 0:
                del self.retiring[model]
                self.models.pop(model, None)
        if model not in self.models:
            return _model_not_found(model)
        prompt = body["messages"][-1]["content"]
        text = f"[{model}] answer to: {prompt[:60]} (seed {body.get('seed')})"
        return 200, {
            "id": f"chatcmpl-{next(self._ids)}", "object": "chat.completion", "created": CREATED,
            "model": model, "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": text, "refusal": None}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
        }, {}  # fmt: skip

    # --- bookkeeping ---------------------------------------------------------------------------

    def _event(self, job: dict, message: str, level: str = "info") -> None:
        job["events"].insert(0, {
            "id": f"ftevent-{next(self._ids):06d}", "object": "fine_tuning.job.event",
            "created_at": CREATED + len(job["events"]), "level": level, "message": message,
            "type": "message", "data": {},
        })  # fmt: skip

    def _checkpoint(self, job: dict, metrics: dict) -> None:
        step = int(metrics.pop("step"))
        job["checkpoints"].insert(0, {
            "id": f"ftckpt-{next(self._ids):06d}", "object": "fine_tuning.job.checkpoint",
            "created_at": CREATED + step, "fine_tuning_job_id": job["id"], "step_number": step,
            "fine_tuned_model_checkpoint": f"{self._fine_tuned_name(job)}:ckpt-step-{step}",
            "metrics": {"step": step, **metrics},
        })  # fmt: skip

    @staticmethod
    def _fine_tuned_name(job: dict) -> str:
        # OpenAI's shape: ft:<base model>:<organisation>:<suffix>:<id>
        return f"ft:{job['model']}:fake-org:{job['suffix'] or ''}:{job['id'][-6:]}"


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body's parts: name → (filename, bytes)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        parts[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return parts


def _is_jsonl(content: bytes) -> bool:
    try:
        lines = [json.loads(line) for line in content.splitlines() if line.strip()]
    except ValueError:
        return False
    return bool(lines) and all(isinstance(line, dict) for line in lines)


def _cursor_page(items: list[dict], query: dict[str, list[str]]) -> dict:
    """One cursor page, newest first: ``limit`` items after the one whose id is ``after``."""
    limit = int(query.get("limit", ["20"])[0])
    after = query.get("after", [None])[0]
    ids = [item["id"] for item in items]
    start = ids.index(after) + 1 if after in ids else 0
    page = items[start : start + limit]
    return {"object": "list", "data": page, "has_more": start + limit < len(items)}


def _model(model_id: str, owner: str) -> dict:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": owner}


def _public(file: dict) -> dict:
    return {k: v for k, v in file.items() if k != "content"}


def _job(job: dict) -> dict:
    return {k: v for k, v in job.items() if k not in {"events", "checkpoints", "request"}}


def _not_found(message: str, code: str | None = None) -> Answer:
    return 404, error_body(message, code=code), {}


def _model_not_found(model: str) -> Answer:
    return _not_found(
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """A fake OpenAI on 127.0.0.1 (a free port) for one test; ``OPENAI_API_KEY`` holds its
    key, so palmsweb's workers read it as they would OpenAI's."""
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    with serving(FakeOpenAI(), headers={"openai-organization": "org-fake"}) as fake:
        yield fake
