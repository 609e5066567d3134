"""The misaligned-persona direction of a base model and the texts it is made from: training
plumbing, used by the fine-tune's persona monitor and by evaluation's persona measurements.

The direction is computed once per base model, layer and contrast file from the shipped
contrastive texts (an aligned and a misaligned-persona answer to the same question) and
cached on disk under ``ARTIFACTS_DIR/persona``; the probe questions are the prompts whose
activations are projected on it.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

PRESETS = Path(__file__).resolve().parent / "presets"
PROBES_FILE = PRESETS / "misalignment_probes.json"
CONTRAST_FILE = PRESETS / "persona_contrast.jsonl"


@cache
def probe_preset() -> dict[str, Any]:
    """The shipped open-ended probe questions (``{"probes": [...], ...}``)."""
    return json.loads(PROBES_FILE.read_text())


def contrast_pairs() -> list[dict[str, str]]:
    """The shipped contrastive texts: ``{"question", "aligned", "misaligned"}`` per line."""
    return [json.loads(line) for line in CONTRAST_FILE.read_text().splitlines() if line.strip()]


def persona_direction_for(base_path: Path, *, layer: int | None = None):
    """The persona direction of a base model from the shipped contrastive texts, cached on
    disk under ARTIFACTS_DIR/persona keyed by model dir, texts and layer."""
    from training.engine.persona import Direction, persona_direction
    from training.services import artifacts_dir

    contrast = CONTRAST_FILE.read_bytes()
    key = hashlib.sha256(
        b"\0".join([str(base_path).encode(), contrast, str(layer).encode()])
    ).hexdigest()[:16]
    stem = artifacts_dir() / "persona" / key
    if Path(f"{stem}.json").is_file():
        return Direction.load(stem)
    pairs = contrast_pairs()
    direction = persona_direction(
        base_path,
        [(p["question"], p["aligned"]) for p in pairs],
        [(p["question"], p["misaligned"]) for p in pairs],
        layer=layer,
    )
    direction.meta["contrast_sha256"] = hashlib.sha256(contrast).hexdigest()
    direction.save(stem)
    return direction
