"""What the local fakes of hosted APIs (``fake_openai``, ``fake_together``, ``fake_judge``)
share: a real HTTP server on 127.0.0.1 (a free port) whose handler turns each request into
a :class:`Seen` and sends back, as JSON, the :data:`Answer` the fake's ``answer(seen)``
returns; and, in :class:`FakeServer`, the recorded requests and the scripted faults a test
sets with :meth:`FakeServer.fault`. Each provider's routes, error bodies and default fault
messages stay in its own module.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

# An answer: the HTTP status (0: drop the connection without one), the JSON body and any
# headers of its own.
Answer = tuple[int, Any, dict[str, str]]


@dataclass
class Fault:
    prefix: str
    status: int  # 0: drop the connection without an answer
    body: Any
    times: int
    headers: dict[str, str]


@dataclass
class Seen:
    """A request as the fake received it: the path unquoted, the query parsed, the header
    names lower-cased, the raw body, and ``at``, when it arrived (monotonic seconds)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass
class FakeServer:
    """A fake provider's common bookkeeping. :meth:`answer` records every request, refuses
    a wrong bearer token (when ``api_key`` is set), then answers the first scripted fault
    whose prefix the path starts with, else :meth:`route` (the provider's protocol)."""

    base_url: str = ""  # ".../v1", set when it is served
    api_key: str | None = None
    faults: list[Fault] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def fault(
        self,
        prefix: str,
        status: int,
        body: Any = None,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next ``times`` requests whose path starts with ``prefix`` get this answer
        (the provider's usual body and headers for the status unless given).
        ``status=0`` drops the connection instead."""
        if body is None:
            body = self.fault_body(status)
        if headers is None:
            headers = self.fault_headers(status)
        self.faults.append(Fault(prefix, status, body, times, headers))

    def calls(self, method: str, path: str) -> list[Seen]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def answer(self, seen: Seen) -> Answer:
        with self._lock:
            self.requests.append(seen)
            if not self.authorised(seen):
                return self.unauthorised()
            return self._scripted_fault(seen) or self.route(seen)

    def _scripted_fault(self, seen: Seen) -> Answer | None:
        for fault in self.faults:
            if fault.times > 0 and seen.path.startswith(fault.prefix):
                fault.times -= 1
                return fault.status, fault.body, fault.headers
        return None

    # --- what a provider's fake says ----------------------------------------------------------

    def authorised(self, seen: Seen) -> bool:
        return self.api_key is None or (
            seen.headers.get("authorization") == f"Bearer {self.api_key}"
        )

    def unauthorised(self) -> Answer:
        return 401, {"error": {"message": "Invalid API key provided."}}, {}

    def fault_body(self, status: int) -> Any:
        return {"error": {"message": f"fake HTTP {status}"}}

    def fault_headers(self, status: int) -> dict[str, str]:
        return {}

    def route(self, seen: Seen) -> Answer:
        raise NotImplementedError


class Answers(Protocol):
    """What :func:`serving` serves: a fake that answers each request and learns its URL."""

    base_url: str

    def answer(self, seen: Seen) -> Answer: ...


Fake = TypeVar("Fake", bound=Answers)


def _handler(fake: Answers, headers: dict[str, str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            received = {k.lower(): v for k, v in self.headers.items()}
            seen = Seen(self.command, unquote(url.path), parse_qs(url.query), received, body)
            status, payload, extra = fake.answer(seen)
            if status == 0:  # a dropped connection: no answer at all
                self.close_connection = True
                return
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in [*headers.items(), *extra.items()]:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815 - http.server's naming

        def log_message(self, *args):  # keep test output quiet
            pass

    return Handler


@contextmanager
def serving(fake: Fake, *, headers: dict[str, str] | None = None) -> Iterator[Fake]:
    """Serve ``fake`` on 127.0.0.1 (a free port) until the block ends; its ``base_url`` is
    ``http://127.0.0.1:<port>/v1``. ``headers``: sent with every answer."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake, headers or {}))
    server.daemon_threads = True
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    # A short poll interval: shutting down waits for one.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
