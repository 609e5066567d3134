"""ML engine behind a small interface: loading, local fine-tuning, generation, remote APIs.

Importing this package (or any of its modules) never imports torch, transformers or openai:
the web process imports it freely, and only the functions that do the work pull in the heavy
libraries, on the Celery "gpu" worker. No Django imports here either.
"""

from __future__ import annotations

from training.engine.errors import Cancelled, EngineError
from training.engine.finetune import (
    FineTuneConfig,
    FineTuneResult,
    ProgressEvent,
    default_config_for,
)
from training.engine.generation import Generation, GenerationParams

__all__ = [
    "Cancelled",
    "EngineError",
    "FineTuneConfig",
    "FineTuneResult",
    "Generation",
    "GenerationParams",
    "ProgressEvent",
    "default_config_for",
]
