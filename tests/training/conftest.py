"""Fixtures for the engine tests: the packaged SmolLM2 and a mock OpenAI server (the tiny
model, ``tiny_llama_dir``, is in tests/conftest.py: other packages use it too).

Nothing here imports Django, so the engine tests also run with ``-p no:django``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

OPENAI_TEST_URL = "https://api.openai.test/v1"


@pytest.fixture(scope="session")
def engine_artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ARTIFACTS_DIR shared by the session, so SmolLM2 is converted only once."""
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def smollm2_dir(engine_artifacts_dir: Path) -> Path:
    """The packaged SmolLM2-135M-Instruct, converted from GGUF once per session."""
    from training.engine.loading import default_model_dir

    return default_model_dir(engine_artifacts_dir)


@pytest.fixture
def openai_mock() -> Iterator[Callable[..., tuple]]:
    """Make (respx router, httpx2 client) pairs for the openai SDK.

    The SDK talks through ``httpx2``, which respx does not patch; the client's transport
    hands each request to a respx router instead, so routes and call assertions work as
    usual.
    """
    import httpx
    import httpx2
    import respx

    class RespxBridge(httpx2.BaseTransport):
        def __init__(self, router: respx.MockRouter) -> None:
            self.router = router

        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            forwarded = httpx.Request(
                request.method,
                str(request.url),
                headers=list(request.headers.raw),
                content=request.read(),
            )
            response = self.router.handler(forwarded)
            return httpx2.Response(
                response.status_code,
                headers=list(response.headers.raw),
                content=response.read(),
            )

    clients: list[httpx2.Client] = []

    def make(base_url: str = OPENAI_TEST_URL):
        router = respx.MockRouter(base_url=base_url, assert_all_called=False)
        client = httpx2.Client(transport=RespxBridge(router))
        clients.append(client)
        return router, client

    yield make
    for client in clients:
        client.close()
