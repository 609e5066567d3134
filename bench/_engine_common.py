"""Shared helpers for the engine benchmarks: paths, demo data, the packaged model."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

PRESETS = ROOT / "curation" / "presets"
DEFAULT_DATA = PRESETS / "palms_values_targeted.jsonl"
DATA_PARTS = sorted((PRESETS / "parts").glob("values_targeted_part*.jsonl"))
DEFAULT_PROMPTS = PRESETS / "palms_eval_prompts.jsonl"
PROMPT_PARTS = sorted((PRESETS / "parts").glob("eval_prompts_part*.jsonl"))


def artifacts_dir() -> Path:
    """Where the converted base model lives: $ARTIFACTS_DIR, as in the app, else var/."""
    return Path(os.environ.get("ARTIFACTS_DIR", ROOT / "var" / "artifacts"))


def base_model_dir() -> Path:
    from training.engine.loading import default_model_dir

    return default_model_dir(artifacts_dir())


def read_jsonl(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def data_files(explicit: str | None, default: Path, parts: list[Path]) -> list[Path]:
    """The file given, else the merged preset, else its parts (while they are being written)."""
    if explicit:
        return [Path(explicit)]
    if default.is_file():
        return [default]
    if parts:
        return parts
    raise SystemExit(f"No data: pass --data, or create {default.relative_to(ROOT)}.")


def chat_examples(rows: list[dict]) -> list[dict]:
    """Import-format rows ({"prompt", "completion"}) or chat rows ({"messages"}) as chat."""
    examples = []
    for row in rows:
        if "messages" in row:
            examples.append({"messages": row["messages"]})
        else:
            examples.append(
                {
                    "messages": [
                        {"role": "user", "content": row["prompt"]},
                        {"role": "assistant", "content": row["completion"]},
                    ]
                }
            )
    return examples


def quiet_transformers() -> None:
    """No per-load progress bars between the figures."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def load_average() -> str:
    """The 1-minute load average: other work on a 2-core machine skews every figure."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"
