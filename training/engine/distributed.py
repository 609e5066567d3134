"""One rank of a distributed fine-tune: ``python -m training.engine.distributed RUN_DIR``,
started by torchrun (``distributed_launch.py`` builds the command).

Every rank loads the model, plans the same optimizer steps as a one-process run and takes
its share of each step's examples, so the effective batch and the loss curve are those of
one device. DDP keeps a replica per device; FSDP2 (``fully_shard``) shards each decoder
layer and the rest. Rank 0 writes progress to ``RUN_DIR/events.jsonl`` and saves the model;
a rank that fails writes ``RUN_DIR/error-rank-N.json`` with a readable reason. Cancelling is
a file, ``RUN_DIR/cancel``, that rank 0 reads before every step and shares with the others.
The run directory sits on ``ARTIFACTS_DIR``, which every node shares.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from training.engine.config import FineTuneConfig
from training.engine.errors import Cancelled, EngineError

SPEC_FILE = "spec.json"
EXAMPLES_FILE = "examples.json"
VALIDATION_FILE = "validation.json"
EVENTS_FILE = "events.jsonl"
CANCEL_FILE = "cancel"
CANCELLED_FILE = "cancelled"


def error_file(run_dir: Path, rank: int) -> Path:
    return run_dir / f"error-rank-{rank}.json"


def pid_file(run_dir: Path, rank: int) -> Path:
    return run_dir / f"rank-{rank}.pid"


def main(argv: list[str] | None = None) -> int:
    """Run this rank; 0 when it finished or was cancelled, 1 when it failed."""
    from training.engine.finetune import readable_failures

    run_dir = Path((argv or sys.argv[1:])[0])
    rank = int(os.environ["RANK"])
    _die_with_parent()
    # The launcher stops leftover ranks of its own torchrun (the parent) only.
    pid_file(run_dir, rank).write_text(f"{os.getpid()} {os.getppid()}")
    spec = json.loads((run_dir / SPEC_FILE).read_text())
    config = FineTuneConfig(**spec["config"])
    try:
        with readable_failures(config):
            _train(run_dir, spec, config)
    except Cancelled:
        if rank == 0:
            (run_dir / CANCELLED_FILE).touch()
        return 0
    except BaseException as exc:  # the launcher reads the reason; torchrun stops the rest
        reason = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
        record = {"rank": rank, "host": os.uname().nodename, "reason": reason, "at": time.time()}
        error_file(run_dir, rank).write_text(json.dumps(record))
        return 1
    finally:
        _leave_group()
    return 0


def _die_with_parent() -> None:
    """Have Linux kill this rank if torchrun dies, so a killed launcher leaves no orphan
    (torchrun starts each rank in a session of its own)."""
    import ctypes
    import signal
    from contextlib import suppress

    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def _leave_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _device() -> Any:
    import torch

    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def _train(run_dir: Path, spec: dict[str, Any], config: FineTuneConfig) -> None:
    import torch.distributed as dist

    from training.engine.distributed_loop import DistributedTrainer

    device = _device()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    examples = json.loads((run_dir / EXAMPLES_FILE).read_text())
    trainer = DistributedTrainer.prepare(
        base_model_path=Path(spec["base_model_path"]),
        examples=examples,
        config=config,
        strategy=spec["plan"]["strategy"],
        device=device,
    )
    validation_file = run_dir / VALIDATION_FILE
    if validation_file.exists():
        trainer.attach_validation(
            json.loads(validation_file.read_text()), spec.get("eval_every_steps", 0)
        )
    trainer.train(run_dir)
    trainer.save(Path(spec["output_dir"]), spec.get("metadata", {}))
    # Every rank leaves together, once rank 0 has saved. CI once saw rank 1 die with
    # SIGABRT after the last step, while rank 0 was still saving: a rank tearing down its
    # gloo connections alone failed a fine-tune whose model was complete.
    dist.barrier()


def write_spec(
    run_dir: Path,
    *,
    base_model_path: Path,
    examples: list[dict[str, Any]],
    output_dir: Path,
    config: FineTuneConfig,
    plan: dict[str, Any],
    metadata: dict[str, Any],
    validation_examples: list[dict[str, Any]] | None = None,
    eval_every_steps: int = 0,
) -> None:
    """The rank program's input, written by the launcher before torchrun starts."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / EXAMPLES_FILE).write_text(json.dumps(examples))
    if validation_examples:
        (run_dir / VALIDATION_FILE).write_text(json.dumps(validation_examples))
    spec = {
        "base_model_path": str(Path(base_model_path).resolve()),
        "output_dir": str(Path(output_dir).resolve()),
        "config": asdict(replace(config)),
        "plan": plan,
        "metadata": metadata,
        "eval_every_steps": eval_every_steps,
    }
    (run_dir / SPEC_FILE).write_text(json.dumps(spec, default=str))


def _exit_now(code: int) -> None:
    """Leave without the interpreter's teardown: every file is written and the group is
    gone, and finalizing torch's C++ objects (gloo threads, the DDP reducer) in whatever
    order Python frees them is where a finished rank can still abort."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main())
