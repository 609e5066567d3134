"""A local fake of Together AI: a real HTTP server on 127.0.0.1 speaking the REST protocol
the official ``together`` SDK uses, plus the OpenAI-compatible chat endpoint its models are
sampled through.

Routes (as the SDK calls them):

- ``POST /v1/files`` (multipart) → ``302`` with ``Location`` (where to ``PUT`` the bytes)
  and ``X-Together-File-Id``; ``PUT /upload/<file id>``; ``POST /v1/files/<id>/preprocess``
  → the file object; ``GET /v1/files/<id>``.
- ``GET /v1/fine-tunes/models/limits?model_name=`` and ``POST /v1/fine-tunes/estimate-price``
  (the SDK asks both before it creates a job).
- ``POST /v1/fine-tunes``; ``GET /v1/fine-tunes/<id>``; ``GET …/events``,
  ``…/checkpoints``, ``…/metrics``; ``POST …/cancel``.
- ``POST /v1/chat/completions`` for a model the fake serves (a finished job's
  ``model_output_name``, or one in ``served``); others get 404 ``model_not_found``. The reply
  never names the model (a study would hold it for review as identifying): it carries
  :func:`reply_tag` of the model instead, a short digest that tells models apart in tests.
- Model limits are known only for the base models in ``trainable`` (404 for any other name,
  a fine-tune's output name included, as the real API answers); a job started
  ``from_checkpoint`` (an earlier job's id or output name, ``:step`` optional) trains that
  job's base model.

A test drives it with :meth:`FakeTogether.advance` (a job's status, events, metrics,
checkpoints), :meth:`FakeTogether.fault` (the next ``times`` requests to a path prefix get
an error answer: 429 with ``Retry-After``, 403, 500…) and :meth:`FakeTogether.retire`
(a model that disappears). ``api_key``: when set, any other bearer token gets 401 (the
upload URL excepted). The server, the recorded requests and the faults are
``tests/fake_http.py``'s, shared with the other fakes.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fake_http import Answer, FakeServer, Seen, serving

LIMITS = {
    "model_name": "",
    "default_gradient_accumulation_steps": 1,
    "lora_training": {
        "default_rank": 16,
        "max_batch_size": 64,
        "max_batch_size_dpo": 32,
        "max_rank": 64,
        "min_batch_size": 8,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    },
    "full_training": {"max_batch_size": 32, "max_batch_size_dpo": 16, "min_batch_size": 8},
    "max_learning_rate": 1.0,
    "min_learning_rate": 1e-8,
    "max_num_checkpoints": 10,
    "max_num_epochs": 20,
    "max_num_evals": 10,
    "max_seq_length_dpo": 8192,
    "max_seq_length_sft": 8192,
    "merge_output_lora": True,
    "min_max_seq_length": 512,
    "supports_full_training": True,
    "supports_reasoning": False,
    "supports_tools": True,
    "supports_vision": False,
}
# The base models the fake fine-tunes (their limits are LIMITS).
TRAINABLE = {"meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"}


def reply_tag(model: str) -> str:
    """The mark the fake's chat replies carry for ``model``: distinct per model, and no
    piece of its name (a rater must not be able to tell the model from it)."""
    return "tag " + hashlib.sha256(model.encode()).hexdigest()[:6]


@dataclass
class FakeTogether(FakeServer):
    # base_url: the OpenAI-compatible URL, ".../v1", as a base model stores it
    files: dict[str, dict] = field(default_factory=dict)
    jobs: dict[str, dict] = field(default_factory=dict)
    served: set[str] = field(default_factory=set)
    trainable: set[str] = field(default_factory=lambda: set(TRAINABLE))
    retired: set[str] = field(default_factory=set)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def root(self) -> str:
        return self.base_url[: -len("/v1")]

    # --- what tests call (and fault(), calls(): FakeServer's) ---------------------------

    def advance(
        self,
        job_id: str,
        status: str,
        *,
        events: list[dict] | None = None,
        metrics: list[dict] | None = None,
        checkpoints: list[dict] | None = None,
        seconds_remaining: int | None = None,
    ) -> None:
        """Move a job on: a status, events appended (``{"type", "message", "level"}``),
        metrics and checkpoints appended. ``completed`` makes its output model servable."""
        with self._lock:
            job = self.jobs[job_id]
            job["status"] = status
            for event in events or []:
                job["events"].append(
                    {
                        "object": "fine-tune-event",
                        "created_at": _now(len(job["events"])),
                        "level": event.get("level", "info"),
                        "type": event.get("type", "warning"),
                        "message": event.get("message", ""),
                    }
                )
            job["metrics"].extend(metrics or [])
            job["checkpoints"].extend(checkpoints or [])
            if seconds_remaining is not None:
                job["progress"] = {
                    "estimate_available": True,
                    "seconds_remaining": seconds_remaining,
                }
            if status == "completed":
                job["token_count"] = 1234
                self.served.add(job["model_output_name"])

    def finished_job(self, model: str, output_name: str) -> str:
        """A fine-tune of base ``model`` that completed earlier, served as ``output_name``
        (what a job may continue ``from_checkpoint``); returns the output name."""
        with self._lock:
            job_id = f"ft-{next(self._ids):04d}"
            self.jobs[job_id] = {
                "id": job_id, "status": "completed", "model": model,
                "model_output_name": output_name, "created_at": "2026-11-01T00:00:00Z",
                "updated_at": "2026-11-01T00:00:00Z", "events": [], "metrics": [],
                "checkpoints": [], "request": {},
            }  # fmt: skip
            self.served.add(output_name)
        return output_name

    def retire(self, model: str) -> None:
        """The model disappears: chat requests for it get 404 from now on."""
        with self._lock:
            self.retired.add(model)

    # --- the protocol ----------------------------------------------------------------------

    def authorised(self, seen: Seen) -> bool:
        # The upload URL Together redirects to is presigned: no bearer key is checked there.
        return seen.path.startswith("/upload/") or super().authorised(seen)

    def route(self, seen: Seen) -> Answer:
        method, path = seen.method, seen.path
        if method == "POST" and path == "/v1/files":
            return self._start_upload(seen)
        if method == "PUT" and (m := re.fullmatch(r"/upload/([\w.-]+)", path)):
            return self._receive_upload(m.group(1), seen.body)
        if m := re.fullmatch(r"/v1/files/([\w.-]+)(/preprocess)?", path):
            file = self.files.get(m.group(1))
            return (200, _public(file), {}) if file else _not_found("file")
        if method == "GET" and path == "/v1/fine-tunes/models/limits":
            return self._limits(seen.query.get("model_name", [""])[0])
        if method == "POST" and path == "/v1/fine-tunes/estimate-price":
            return (
                200,
                {
                    "estimation_available": True,
                    "allowed_to_proceed": True,
                    "estimated_total_price": 1.5,
                },
                {},
            )
        if method == "POST" and path == "/v1/fine-tunes":
            return self._create_job(seen.json())
        if m := re.fullmatch(r"/v1/fine-tunes/([\w-]+)(?:/(\w+))?", path):
            return self._job_route(method, m.group(1), m.group(2))
        if method == "POST" and path == "/v1/chat/completions":
            return self._complete(seen.json())
        return _not_found(f"route {method} {path}")

    def _start_upload(self, seen: Seen) -> Answer:
        form = dict(re.findall(rb'name="(\w+)"\r\n\r\n([^\r]*)\r\n', seen.body))
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": 0,
            "created_at": 1_767_225_600,
            "filename": form.get(b"file_name", b"").decode(),
            "FileType": "jsonl",
            "purpose": form.get(b"purpose", b"").decode(),
            "processing_status": "COMPLETED",
            "content": b"",
        }
        return 302, {}, {"Location": f"{self.root}/upload/{file_id}", "X-Together-File-Id": file_id}

    def _receive_upload(self, file_id: str, body: bytes) -> Answer:
        file = self.files.get(file_id)
        if file is None:
            return _not_found("upload")
        file.update(content=body, bytes=len(body))
        return 200, {}, {}

    def _limits(self, model: str) -> Answer:
        if model not in self.trainable:
            return _not_found(f"model {model}")
        return 200, {**LIMITS, "model_name": model}, {}

    def _parent(self, checkpoint: str) -> dict | None:
        """The job a ``from_checkpoint`` names: by job id or output model name."""
        name = checkpoint.split(":", 1)[0]
        return next(
            (j for j in self.jobs.values() if name in {j["id"], j["model_output_name"]}), None
        )

    def _create_job(self, body: dict) -> Answer:
        if body.get("training_file") not in self.files:
            return _invalid("training_file not found")
        if body.get("model") and body.get("from_checkpoint"):
            return _invalid("Specify either a model or a checkpoint to start from, not both")
        model = body.get("model")
        if body.get("from_checkpoint"):
            parent = self._parent(body["from_checkpoint"])
            if parent is None or parent["status"] != "completed":
                return _invalid(f"checkpoint {body['from_checkpoint']} not found")
            model = parent["model"]
        if model not in self.trainable:
            return _invalid(f"model {model} is not available for fine-tuning")
        job_id = f"ft-{next(self._ids):04d}"
        output = f"fakeuser/{model.rsplit('/', 1)[-1]}-{body.get('suffix', 'ft')}-{job_id}"
        self.jobs[job_id] = {
            **_echoed(body),
            "id": job_id,
            "status": "pending",
            "user_id": "fakeuser",
            "model": model,
            "created_at": "2026-12-01T00:00:00Z",
            "updated_at": "2026-12-01T00:00:00Z",
            "training_file": body["training_file"],
            "model_output_name": output,
            "n_epochs": body.get("n_epochs"),
            "batch_size": body.get("batch_size"),
            "learning_rate": body.get("learning_rate"),
            "suffix": body.get("suffix"),
            "training_type": body.get("training_type"),
            "training_method": body.get("training_method"),
            "random_seed": body.get("random_seed"),
            "events": [],
            "metrics": [],
            "checkpoints": [],
            "request": body,
        }
        return 200, _job(self.jobs[job_id]), {}

    def _job_route(self, method: str, job_id: str, part: str | None):
        job = self.jobs.get(job_id)
        if job is None:
            return _not_found(f"fine-tune {job_id}")
        if method == "GET" and part is None:
            return 200, _job(job), {}
        if method == "GET" and part == "events":
            return 200, {"data": job["events"]}, {}
        if method == "GET" and part == "checkpoints":
            return 200, {"data": job["checkpoints"]}, {}
        if method == "GET" and part == "metrics":
            return 200, {"metrics": job["metrics"]}, {}
        if method == "POST" and part == "cancel":
            if job["status"] in {"completed", "error", "cancelled"}:
                return 400, {"error": {"message": f"job is {job['status']}"}}, {}
            job["status"] = "cancel_requested"
            return 200, _job(job), {}
        return _not_found(f"route {method} {part}")

    def _complete(self, body: dict) -> Answer:
        model = body.get("model", "")
        if model not in self.served or model in self.retired:
            return (
                404,
                {
                    "error": {
                        "message": f"Unable to access model {model}. Please visit "
                        "https://api.together.ai/models to view the list of supported models.",
                        "type": "invalid_request_error",
                        "code": "model_not_found",
                    }
                },
                {},
            )
        prompt = body["messages"][-1]["content"]
        # The seed as a digest too: a bare number could be a piece of a model's name.
        take = hashlib.sha256(str(body.get("seed")).encode()).hexdigest()[:6]
        text = f"A considered answer ({reply_tag(model)}) to: {prompt[:60]} (take {take})"
        return (
            200,
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "logprobs": None,
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
            },
            {},
        )


def _now(offset: int) -> str:
    return f"2026-12-01T00:{offset // 60:02d}:{offset % 60:02d}Z"


def _public(file: dict) -> dict:
    return {k: v for k, v in file.items() if k != "content"}


def _job(job: dict) -> dict:
    hidden = {"events", "metrics", "checkpoints", "request"}
    return {k: v for k, v in job.items() if k not in hidden}


def _echoed(body: dict) -> dict:
    """The request's hyperparameters, as the real API echoes them on the job."""
    names = ("max_seq_length", "warmup_ratio", "gradient_accumulation_steps", "n_evals",
             "n_checkpoints", "lr_scheduler", "training_type", "from_checkpoint")  # fmt: skip
    return {name: body[name] for name in names if name in body}


def _invalid(message: str) -> Answer:
    return 400, {"error": {"message": message, "type": "invalid_request_error"}}, {}


def _not_found(what: str) -> Answer:
    return 404, {"error": {"message": f"{what} not found", "type": "not_found"}}, {}


@pytest.fixture
def fake_together() -> Iterator[FakeTogether]:
    """A fake Together listening on 127.0.0.1 (a free port) for the length of one test."""
    with serving(FakeTogether()) as fake:
        yield fake
