"""Fixtures for the engine tests: the packaged SmolLM2 (the tiny model, ``tiny_llama_dir``,
is in tests/conftest.py: other packages use it too). OpenAI and Together are local fake
servers: tests/fake_openai.py, tests/fake_together.py.

Nothing here imports Django, so the engine tests also run with ``-p no:django``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def engine_artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ARTIFACTS_DIR shared by the session, so SmolLM2 is converted only once."""
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def smollm2_dir(engine_artifacts_dir: Path) -> Path:
    """The packaged SmolLM2-135M-Instruct, converted from GGUF once per session."""
    from training.engine.loading import default_model_dir

    return default_model_dir(engine_artifacts_dir)
