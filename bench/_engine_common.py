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
    """The 1-, 5- and 15-minute load averages: other work on a 2-core machine skews every
    figure."""
    try:
        return "/".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "?"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports kB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fast_dtype():
    """bf16 where this machine has bf16 matrix units (AVX512-BF16, AMX, CUDA), else fp32: what
    an informed user picks, and what the engine's ``bf16="auto"`` picks. Emulated bf16 on a
    plain AVX2 CPU is ~100x slower than fp32."""
    import torch

    from training.engine.runtime import bf16_is_fast

    return torch.bfloat16 if bf16_is_fast(torch.device("cpu")) else torch.float32


def bf16_matmul_peak(model_dir: Path, seconds: float = 3.0, dtype=None, rows: int = 2048) -> dict:
    """What this machine's bf16 matrix multiplies reach, at the model's own shapes.

    A 2,048-token micro-batch through the MLP's and attention's projections, with torch's
    default thread count: the ceiling a training loop can hope for here, to express its
    tokens/s as a fraction of it. ``dtype`` measures another type (fp32 where bf16 is slow);
    ``rows`` another micro-batch (a decode step's batch: every weight read for one row each).
    """
    import time

    import torch

    dtype = dtype or torch.bfloat16

    config = json.loads((model_dir / "config.json").read_text())
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    from training.engine.loading import count_parameters

    shapes = [(rows, hidden, inner), (rows, inner, hidden), (rows, hidden, hidden)]
    pairs = [(torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)) for m, k, n in shapes]
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in pairs)
    for a, b in pairs:  # warm-up: oneDNN picks its kernels on the first call
        a @ b
    rounds, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for a, b in pairs:
            a @ b
        rounds += 1
    gflops = flops * rounds / (time.perf_counter() - started) / 1e9
    return {
        "gflops": gflops,
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
        "parameters": count_parameters(model_dir),
    }


def spawn_side(script: str, side: str, argv: list[str]) -> dict:
    """Run one side of ``script`` in a fresh Python process, so that its peak RSS is its own;
    the side writes its figures to the JSON file named by ``--side-json``."""
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, script, *argv, "--side", side, "--side-json", out.name]
        load = load_average()
        subprocess.run(command, check=True)
        return json.loads(Path(out.name).read_text()) | {"load_before": load}
