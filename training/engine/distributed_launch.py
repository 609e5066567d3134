"""Running a fine-tune under torchrun from a worker: the run directory, the child process
group, progress and cancel relayed between the ranks and the caller, failures turned into
one readable reason, and no process left behind.

The caller sees the same contract as ``finetune.run_finetune``: ``on_progress`` gets a
ProgressEvent per optimizer step (from rank 0), ``should_cancel`` is asked twice a second,
and the result is a FineTuneResult read from the saved model's metadata. Imports no torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from training.engine.config import FineTuneConfig, FineTuneResult, ProgressEvent
from training.engine.distributed import (
    CANCEL_FILE,
    CANCELLED_FILE,
    EVENTS_FILE,
    error_file,
    pid_file,
    write_spec,
)
from training.engine.distributed_plan import DistributedPlan, torchrun_command
from training.engine.errors import Cancelled, EngineError
from training.engine.saving import METADATA_FILE
from training.engine.validation import ValidationEvent

POLL_SECONDS = 0.5
# After a cancel the ranks stop at their next step; one that does not is stopped by force.
CANCEL_GRACE_SECONDS = 120
TERMINATE_GRACE_SECONDS = 15
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_distributed_finetune(
    *,
    base_model_path: Path | str,
    examples: Sequence[Mapping[str, Any]],
    output_dir: Path | str,
    config: FineTuneConfig,
    plan: DistributedPlan,
    on_progress: Callable[[ProgressEvent | ValidationEvent], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    metadata: Mapping[str, Any] | None = None,
    validation_examples: Sequence[Mapping[str, Any]] = (),
    eval_every_steps: int = 0,
) -> FineTuneResult:
    """Fine-tune under torchrun on this node (the first node of a multi-node run) and
    return what rank 0 saved to ``output_dir``. The run directory (inputs, events, errors)
    is a hidden sibling of ``output_dir``, which every node must see at the same path.
    ``validation_examples`` and ``eval_every_steps`` as in ``finetune.run_finetune``:
    ``on_progress`` then gets ValidationEvents too."""
    from training.engine.data import validate_examples
    from training.engine.validation import check_validation_settings

    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise EngineError(f"The output directory {output_dir} already exists and is not empty.")
    validate_examples(examples)
    check_validation_settings(validation_examples, eval_every_steps)
    config.validate()
    if config.keep_best_validation and not validation_examples:
        raise EngineError("keep_best_validation needs validation examples.")
    plan.validate()
    run_dir = run_dir_for(output_dir)
    _fresh_dir(run_dir)
    write_spec(run_dir, base_model_path=Path(base_model_path), examples=list(examples),
               output_dir=output_dir, config=config, plan=plan.to_dict(),
               metadata=dict(metadata or {}), validation_examples=list(validation_examples),
               eval_every_steps=eval_every_steps)  # fmt: skip
    launch = TorchrunProcess(plan, run_dir)
    launch.run(on_progress or (lambda event: None), should_cancel or (lambda: False))
    return _result(output_dir)


def join_distributed_finetune(
    *, output_dir: Path | str, plan: DistributedPlan, should_stop: Callable[[], bool] | None = None
) -> None:
    """Run this node's ranks of a multi-node fine-tune that another node launched (its
    run directory, on the shared ``ARTIFACTS_DIR``, already holds the inputs)."""
    plan.validate()
    run_dir = run_dir_for(Path(output_dir))
    deadline = time.monotonic() + plan.join_timeout
    while not (run_dir / "spec.json").exists():  # the first node may still be writing it
        if time.monotonic() > deadline:
            raise EngineError(f"No fine-tune to join at {run_dir}.")
        time.sleep(POLL_SECONDS)
    TorchrunProcess(plan, run_dir).run(lambda event: None, should_stop or (lambda: False))


def run_dir_for(output_dir: Path) -> Path:
    return output_dir.parent / f".{output_dir.name}.run"


def _fresh_dir(run_dir: Path) -> None:
    import shutil

    if run_dir.exists():
        shutil.rmtree(run_dir)  # a re-run after a crash starts clean
    run_dir.mkdir(parents=True)


class TorchrunProcess:
    """torchrun as a child in a session of its own, watched until it ends."""

    def __init__(self, plan: DistributedPlan, run_dir: Path) -> None:
        self.plan = plan
        self.run_dir = run_dir
        self.log_path = run_dir / f"torchrun-{os.uname().nodename}-{os.getpid()}.log"
        self.events_offset = 0
        self.cancel_sent_at: float | None = None

    def run(self, on_progress: Callable[[ProgressEvent | ValidationEvent], None],
            should_cancel: Callable[[], bool]) -> None:  # fmt: skip
        env = os.environ | {"PYTHONPATH": _python_path()}
        with self.log_path.open("wb") as log:
            # Through a shim that arms the parent-death signal and execs torchrun: a
            # preexec_fn could deadlock in a worker that runs threads (the heartbeat).
            command = [sys.executable, "-c", DIE_WITH_PARENT_SHIM,
                       *torchrun_command(self.plan, self.run_dir)]  # fmt: skip
            process = subprocess.Popen(
                command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            try:
                self._watch(process, on_progress, should_cancel)
            finally:
                self._stop(process)
        self._raise_for_outcome(process.returncode)

    def _watch(self, process: subprocess.Popen, on_progress, should_cancel) -> None:
        while process.poll() is None:
            self._relay_events(on_progress)
            if self.cancel_sent_at is None and should_cancel():
                # The time goes inside: a file's mtime comes from a coarse clock that can
                # read a few milliseconds behind time.time(), which stamps the events.
                (self.run_dir / CANCEL_FILE).write_text(f"{time.time()!r}\n")
                self.cancel_sent_at = time.monotonic()
            elif (
                self.cancel_sent_at
                and time.monotonic() - self.cancel_sent_at > CANCEL_GRACE_SECONDS
            ):
                break  # _stop ends it by force
            time.sleep(POLL_SECONDS)
        self._relay_events(on_progress)

    def _relay_events(self, on_progress: Callable[[ProgressEvent | ValidationEvent], None]) -> None:
        """Hand on the whole lines rank 0 appended since the last call."""
        events = self.run_dir / EVENTS_FILE
        if not events.exists():
            return
        with events.open("rb") as stream:
            stream.seek(self.events_offset)
            chunk = stream.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # rank 0 may be writing the last one
        self.events_offset += len(complete)
        for line in complete.decode().splitlines():
            record = json.loads(line)
            kind = record.pop("kind", "progress")
            record.pop("at", None)  # not an event field
            event = ValidationEvent if kind == "validation" else ProgressEvent
            on_progress(event(**record))

    def _stop(self, process: subprocess.Popen) -> None:
        """End torchrun's session, then any rank still alive: none outlives the job."""
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(TERMINATE_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        for pid in self._rank_pids(process.pid):
            _signal_group(pid, signal.SIGKILL)

    def _rank_pids(self, torchrun_pid: int) -> list[int]:
        """This node's ranks still alive, started by our torchrun (the pid files of the
        other nodes' ranks are in the same shared directory)."""
        pids = []
        for rank in range(self.plan.world_size):
            path = pid_file(self.run_dir, rank)
            fields = path.read_text().split() if path.exists() else []
            if len(fields) == 2 and fields[1] == str(torchrun_pid):
                pids.append(int(fields[0]))
        return [pid for pid in pids if _is_rank_process(pid)]

    def _raise_for_outcome(self, returncode: int | None) -> None:
        if (self.run_dir / CANCELLED_FILE).exists() or (
            self.cancel_sent_at is not None and returncode != 0
        ):
            raise Cancelled()
        if returncode == 0:
            return
        log = self._log_tail()
        if "RendezvousTimeoutError" in log:
            raise EngineError(
                f"Not every node joined the rendezvous at {self.plan.rdzv_endpoint} within "
                f"{self.plan.join_timeout} s: start a gpu worker with {self.plan.nproc_per_node} "
                "device(s) on each node, free to take the join task."
            )
        raise EngineError(failure_reason(self.run_dir, self.plan.world_size, log))

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-20_000:]


def failure_reason(run_dir: Path, world_size: int, torchrun_log: str) -> str:
    """Why a distributed run failed, in one sentence: the rank torchrun saw fail first,
    killed by a signal or with the reason it wrote; else the earliest reason written."""
    first = _killed_rank(torchrun_log) or _torchrun_root_cause(torchrun_log)
    if first is not None:
        rank, exitcode = first
        if exitcode < 0:
            name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else ""
            return f"Rank {rank} died: killed by signal {-exitcode} {name}".rstrip() + "."
        written = _written_reason(run_dir, rank)
        if written:
            return f"Rank {rank} failed: {written}"
    reasons = [json.loads(error_file(run_dir, r).read_text()) for r in range(world_size)
               if error_file(run_dir, r).exists()]  # fmt: skip
    if reasons:
        earliest = min(reasons, key=lambda record: record["at"])
        return f"Rank {earliest['rank']} failed: {earliest['reason']}"
    lines = [line for line in torchrun_log.splitlines() if line.strip()]
    return "torchrun failed: " + (lines[-1] if lines else "no output")


def _killed_rank(log: str) -> tuple[int, int] | None:
    """(rank, exit code) of a rank SIGKILLed (the OOM killer, ``kill -9``), among every
    failure torchrun reports. Its peers then abort (SIGABRT, from the collective that lost
    it) or are stopped by torchrun (SIGTERM); on a loaded machine torchrun may observe a
    peer's abort first and call that the root cause, so the killed rank is the reason."""
    for block in re.split(r"\n\[\d+\]:", log):
        rank = re.search(r"\brank\s*:\s*(\d+)", block)
        exitcode = re.search(r"exitcode\s*:\s*(-?\d+)", block)
        if rank and exitcode and int(exitcode.group(1)) == -signal.SIGKILL:
            return int(rank.group(1)), -signal.SIGKILL
    return None


def _torchrun_root_cause(log: str) -> tuple[int, int] | None:
    """(rank, exit code) of torchrun's "Root Cause (first observed failure)" section."""
    section = log.split("Root Cause", 1)[-1] if "Root Cause" in log else ""
    rank = re.search(r"rank\s*:\s*(\d+)", section)
    exitcode = re.search(r"exitcode\s*:\s*(-?\d+)", section)
    if rank and exitcode:
        return int(rank.group(1)), int(exitcode.group(1))
    return None


def _written_reason(run_dir: Path, rank: int) -> str:
    path = error_file(run_dir, rank)
    return json.loads(path.read_text())["reason"] if path.exists() else ""


def _is_rank_process(pid: int) -> bool:
    """Whether ``pid`` is still one of our ranks (a finished rank's pid may be reused)."""
    try:
        return b"training.engine.distributed" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal a process's whole group (torchrun and its helpers; a rank and its own)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# Runs as ``python -c SHIM torchrun-command...``: SIGTERM this process if the worker that
# started it dies (Linux keeps the setting across exec), so torchrun then stops its ranks,
# which in turn die with torchrun; then become torchrun.
DIE_WITH_PARENT_SHIM = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL('libc.so.6').prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def _python_path() -> str:
    existing = os.environ.get("PYTHONPATH", "")
    return f"{PROJECT_ROOT}{os.pathsep}{existing}" if existing else str(PROJECT_ROOT)


def _result(output_dir: Path) -> FineTuneResult:
    meta = json.loads((output_dir / METADATA_FILE).read_text())
    history = [(int(step), float(loss)) for step, loss in meta["loss_history"]]
    return FineTuneResult(
        output_dir=output_dir,
        total_steps=meta["total_steps"],
        duration_seconds=meta["duration_seconds"],
        tokens_per_second=meta["tokens_per_second"],
        final_loss=meta["final_loss"],
        loss_history=history,
        train_tokens=meta["train_tokens"],
        metadata=meta,
        validation_history=[
            (int(step), float(loss)) for step, loss in meta.get("validation_loss_history", [])
        ],
    )
