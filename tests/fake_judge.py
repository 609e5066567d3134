"""A local fake LLM judge: a real HTTP server on 127.0.0.1 speaking OpenAI's
``POST /v1/chat/completions``, with ``top_logprobs`` when the request asks for them.

Use it from any test module::

    from tests.fake_judge import fake_judge_server  # noqa: F401  (the fixture)

    def test_something(fake_judge_server):
        fake_judge_server.rule = lambda prompt: 4   # every answer gets a 4
        Judge(fake_judge_server.base_url, "sk-fake", "fake-judge").score_palms(...)
        assert len(fake_judge_server.requests) == 1

``rule(prompt)`` receives the user message and returns what the judge says:

- an ``int`` or ``float``: that number as text; with logprobs, all the mass on that token;
- a ``dict`` ``{token: probability}``: the top logprobs (the text is the likeliest token);
- a ``str``: that text, with no logprobs even when asked;
- a ``Reply(status, body)``: that HTTP answer as is (errors, odd bodies).

``api_key``: when set, a request with another bearer token gets HTTP 401.
``fail_after``: when set, every request after that many gets HTTP 400 with an error body.
The server is ``tests/fake_http.py``'s, shared with the other fakes.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fake_http import Answer, Seen, serving


@dataclass
class Reply:
    status: int
    body: Any


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def prompt(self) -> str:
        return self.body["messages"][-1]["content"]


@dataclass
class FakeJudge:
    base_url: str
    rule: Callable[[str], Any] = lambda prompt: 3
    api_key: str | None = None
    fail_after: int | None = None
    requests: list[SeenRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def answer(self, seen: Seen) -> Answer:
        try:
            body = json.loads(seen.body or b"{}")
        except ValueError:
            body = {}
        reply = self.reply(SeenRequest(seen.path, seen.headers, body))
        return reply.status, reply.body, {}

    def reply(self, seen: SeenRequest) -> Reply:
        with self._lock:
            self.requests.append(seen)
            count = len(self.requests)
        if seen.path.rstrip("/") != "/v1/chat/completions":
            return Reply(404, {"error": {"message": f"no route {seen.path}"}})
        if self.api_key is not None and seen.headers.get("authorization") != (
            f"Bearer {self.api_key}"
        ):
            return Reply(401, {"error": {"message": "Incorrect API key provided."}})
        if self.fail_after is not None and count > self.fail_after:
            return Reply(400, {"error": {"message": "The fake judge is switched off."}})
        said = self.rule(seen.prompt)
        if isinstance(said, Reply):
            return said
        return Reply(200, completion(said, logprobs=bool(seen.body.get("logprobs"))))


def completion(said: Any, *, logprobs: bool) -> dict[str, Any]:
    """An OpenAI chat completion body for what the judge says (see the module docstring)."""
    top: dict[str, float] | None
    if isinstance(said, dict):
        top = {str(k): float(v) for k, v in said.items()}
        text = max(top, key=top.get)
    elif isinstance(said, str):
        top, text = None, said
    else:
        text = f"{said:g}" if isinstance(said, float) else str(said)
        top = {text: 1.0}
    choice: dict[str, Any] = {
        "index": 0,
        "finish_reason": "stop",
        "message": {"role": "assistant", "content": text},
        "logprobs": None,
    }
    if logprobs and top:
        entries = [
            {"token": t, "logprob": math.log(p) if p > 0 else -9999.0, "bytes": None}
            for t, p in sorted(top.items(), key=lambda kv: -kv[1])
        ]
        choice["logprobs"] = {
            "content": [
                {
                    "token": text,
                    "logprob": entries[0]["logprob"],
                    "bytes": None,
                    "top_logprobs": entries,
                }
            ]
        }
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-judge",
        "choices": [choice],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


_PART = {
    name: re.compile(rf"\[{tag} START\]\n(.*?)\n\[{tag} END\]", re.S)
    for name, tag in (("position", "POSITION"), ("prompt", "PROMPT"), ("output", "ANSWER"))
}


def palms_parts(prompt: str) -> dict[str, str]:
    """The position, prompt and output quoted in ``Judge.score_palms``'s prompt."""
    return {name: (m.group(1) if (m := rx.search(prompt)) else "") for name, rx in _PART.items()}


@pytest.fixture
def fake_judge_server() -> Iterator[FakeJudge]:
    """A fake judge listening on 127.0.0.1 (a free port) for the length of one test."""
    with serving(FakeJudge(base_url="")) as judge:
        yield judge
