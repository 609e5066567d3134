"""Distributed fine-tunes on the CPU: torchrun, the gloo backend, 2 ranks, the tiny Llama.

Each torchrun launch costs a few seconds of interpreter and torch start-up per rank, so
these tests are few and marked ``distributed`` (``-m "not distributed"`` skips them).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from training.engine import Cancelled, EngineError
from training.engine.distributed import pid_file
from training.engine.distributed_launch import run_dir_for, run_distributed_finetune
from training.engine.distributed_plan import (
    DistributedPlan,
    choose_strategy,
    per_rank_batch_size,
    rank_micro_batches,
    torchrun_command,
)
from training.engine.finetune import run_finetune

from .test_engine_finetune import chat

EXAMPLES = [
    chat("Why is the sky blue?", "Light scatters in the air, and blue light scatters most."),
    chat("What should I do if I feel sad?", "Please talk to someone you trust."),
    chat("Tell me about the sea.", "The sea is wide and deep, and the sun shines on it."),
    chat("Is violence acceptable?", "Violence is never an acceptable answer."),
    chat("How do I bake bread?", "Mix flour, water, salt and yeast; knead, rest, and bake."),
    chat("Can you help me?", "Of course: tell me what you need and I will do my best."),
]


def config(**overrides):
    from training.engine import FineTuneConfig

    settings = {"epochs": 2, "learning_rate": 1e-2, "batch_size": 2, "grad_accum": 2,
                "max_seq_len": 128, "bf16": False, "seed": 3}  # fmt: skip
    return FineTuneConfig(**(settings | overrides))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") == -1


# --- the plan (no processes) ---------------------------------------------------------------


def test_a_model_that_fits_one_device_gets_ddp_and_a_larger_one_fsdp():
    gib = 1024**3
    assert choose_strategy(135_000_000, "full", 80 * gib) == "ddp"
    assert choose_strategy(8_000_000_000, "full", 80 * gib) == "fsdp"  # ~112 GB of states
    assert choose_strategy(8_000_000_000, "lora", 80 * gib) == "ddp"  # frozen bf16 weights
    assert choose_strategy(70_000_000_000, "lora", 80 * gib) == "fsdp"


def test_every_rank_gets_the_same_number_of_micro_batches_and_all_examples_once():
    members = list(range(7))
    shares = [rank_micro_batches(members, rank, 3, 2) for rank in range(3)]
    assert {len(share) for share in shares} == {2}
    flat = sorted(i for share in shares for batch in share for i in batch)
    assert flat == members
    assert rank_micro_batches([5], 1, 2, 4) == [[]]  # nothing for rank 1: one empty pass


def test_the_effective_batch_is_kept_over_the_ranks():
    assert per_rank_batch_size(8, 1, 2) == 4
    assert per_rank_batch_size(2, 4, 2) == 2  # 8 per step: 4 per rank, 2 micro-batches
    assert per_rank_batch_size(1, 1, 4) == 1


def test_multi_node_uses_the_c10d_rendezvous(tmp_path):
    plan = DistributedPlan(nproc_per_node=2, nnodes=2, rdzv_endpoint="head:29400", rdzv_id="j7")
    command = " ".join(torchrun_command(plan, tmp_path))
    assert "--rdzv-backend=c10d" in command and "--rdzv-endpoint=head:29400" in command
    assert "--standalone" not in command
    with pytest.raises(EngineError, match="rendezvous endpoint"):
        DistributedPlan(nproc_per_node=2, nnodes=2).validate()


# --- torchrun on the CPU -------------------------------------------------------------------


@pytest.mark.distributed
@pytest.mark.parametrize("method", ["full", "lora"])
def test_ddp_loss_curve_matches_one_process_with_the_same_effective_batch(
    tiny_llama_dir, tmp_path, method
):
    # No LoRA dropout: each rank draws its own masks, so dropout alone would part the curves.
    recipe = config(method=method, lora_dropout=0.0)
    single = run_finetune(base_model_path=tiny_llama_dir, examples=EXAMPLES,
                          output_dir=tmp_path / "single", config=recipe)  # fmt: skip
    events = []
    ddp = run_distributed_finetune(
        base_model_path=tiny_llama_dir, examples=EXAMPLES, output_dir=tmp_path / "ddp",
        config=recipe, plan=DistributedPlan(nproc_per_node=2), on_progress=events.append,
    )  # fmt: skip
    assert [step for step, _ in ddp.loss_history] == [step for step, _ in single.loss_history]
    # Measured here: within 1e-7 (the saved history keeps 6 decimals); gloo may sum in
    # another order elsewhere, hence the looser bound.
    for (_, one), (_, two) in zip(single.loss_history, ddp.loss_history, strict=True):
        assert two == pytest.approx(one, rel=1e-4)
    assert [event.step for event in events] == [step for step, _ in ddp.loss_history]
    assert ddp.train_tokens == single.train_tokens  # all ranks' tokens, summed
    meta = json.loads((tmp_path / "ddp" / "palms_metadata.json").read_text())
    assert meta["distributed"]["strategy"] == "ddp" and meta["distributed"]["world_size"] == 2
    assert not run_dir_for(tmp_path / "ddp").joinpath("error-rank-0.json").exists()


@pytest.mark.distributed
@pytest.mark.parametrize("method", ["full", "lora"])
def test_fsdp_saves_one_model_of_the_same_shape_that_loads(tiny_llama_dir, tmp_path, method):
    from safetensors.torch import load_file

    from training.engine.loading import load_for_inference

    result = run_distributed_finetune(
        base_model_path=tiny_llama_dir, examples=EXAMPLES, output_dir=tmp_path / "fsdp",
        config=config(method=method, epochs=1),
        plan=DistributedPlan(nproc_per_node=2, strategy="fsdp"),
    )  # fmt: skip
    assert result.metadata["distributed"]["strategy"] == "fsdp"
    if method == "full":
        saved = load_file(tmp_path / "fsdp" / "model.safetensors")
        base = load_file(tiny_llama_dir / "model.safetensors")
        assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in base.items()}
        assert any((saved[k] != base[k]).any() for k in base)  # it trained
    else:
        assert (tmp_path / "fsdp" / "adapter_model.safetensors").exists()
    model, _ = load_for_inference(tmp_path / "fsdp")
    assert model.num_parameters() > 0


@pytest.mark.distributed
def test_a_killed_rank_fails_the_run_with_its_reason_and_leaves_no_process(tiny_llama_dir,
                                                                           tmp_path):  # fmt: skip
    output_dir = tmp_path / "out"
    run_dir = run_dir_for(output_dir)
    pids: list[int] = []

    def kill_rank_one(event) -> None:
        if event.step == 1:
            for rank in (0, 1):
                pids.append(int(pid_file(run_dir, rank).read_text().split()[0]))
            os.kill(pids[1], signal.SIGKILL)

    with pytest.raises(EngineError, match=r"Rank 1 died: killed by signal 9 SIGKILL"):
        run_distributed_finetune(
            base_model_path=tiny_llama_dir, examples=EXAMPLES, output_dir=output_dir,
            config=config(epochs=30), plan=DistributedPlan(nproc_per_node=2),
            on_progress=kill_rank_one,
        )  # fmt: skip
    assert pids and not any(pid_alive(pid) for pid in pids)
    assert not output_dir.exists()


@pytest.mark.distributed
def test_cancel_stops_every_rank_within_a_step(tiny_llama_dir, tmp_path):
    output_dir = tmp_path / "out"
    seen = []
    with pytest.raises(Cancelled):
        run_distributed_finetune(
            base_model_path=tiny_llama_dir, examples=EXAMPLES, output_dir=output_dir,
            config=config(epochs=200), plan=DistributedPlan(nproc_per_node=2),
            on_progress=seen.append, should_cancel=lambda: len(seen) >= 2,
        )  # fmt: skip
    run_dir = run_dir_for(output_dir)
    asked_at = float((run_dir / "cancel").read_text())
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    after = [line for line in lines if json.loads(line)["at"] > asked_at]
    assert len(seen) >= 2 and len(after) <= 1  # at most the step already under way
    pids = [int(pid_file(run_dir, rank).read_text().split()[0]) for rank in (0, 1)]
    assert not any(pid_alive(pid) for pid in pids)
    assert not output_dir.exists()


@pytest.mark.distributed
def test_two_nodes_meet_at_a_loopback_rendezvous_train_and_save(tiny_llama_dir, tmp_path):
    import socket

    from training.engine.distributed_launch import join_distributed_finetune

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    plan = DistributedPlan(nproc_per_node=1, nnodes=2, rdzv_endpoint=f"127.0.0.1:{port}",
                           rdzv_id="loopback", join_timeout=120)  # fmt: skip
    output_dir = tmp_path / "two-nodes"
    joined: list[BaseException | None] = []

    def second_node() -> None:
        try:
            join_distributed_finetune(output_dir=output_dir, plan=plan)
            joined.append(None)
        except BaseException as exc:  # reported by the assertion below
            joined.append(exc)

    thread = threading.Thread(target=second_node)
    thread.start()
    result = run_distributed_finetune(
        base_model_path=tiny_llama_dir, examples=EXAMPLES, output_dir=output_dir,
        config=config(epochs=1), plan=plan,
    )  # fmt: skip
    thread.join(timeout=120)
    assert joined == [None]
    assert result.metadata["distributed"]["world_size"] == 2
    assert (output_dir / "model.safetensors").exists()


def test_gpu_check_stops_at_once_without_cuda():
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: bench/gpu_check.py runs for real here")
    script = Path(__file__).parents[2] / "bench" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert "no CUDA device is visible" in done.stderr and done.stdout == ""


@pytest.mark.distributed
def test_a_node_that_never_joins_fails_the_run_with_the_rendezvous_named(tiny_llama_dir,
                                                                         tmp_path):  # fmt: skip
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    plan = DistributedPlan(nproc_per_node=1, nnodes=2, rdzv_endpoint=f"127.0.0.1:{port}",
                           rdzv_id="alone", join_timeout=5)  # fmt: skip
    with pytest.raises(EngineError, match=f"rendezvous at 127.0.0.1:{port} within 5 s"):
        run_distributed_finetune(
            base_model_path=tiny_llama_dir, examples=EXAMPLES, output_dir=tmp_path / "out",
            config=config(), plan=plan,
        )  # fmt: skip


@pytest.mark.distributed
def test_when_the_worker_dies_torchrun_and_its_ranks_die_too(tiny_llama_dir, tmp_path):
    import subprocess
    import sys
    import time

    output_dir = tmp_path / "out"
    run_dir = run_dir_for(output_dir)
    worker = subprocess.Popen([sys.executable, "-c", (
        "import sys; from tests.training.test_distributed import EXAMPLES, config\n"
        "from training.engine.distributed_launch import run_distributed_finetune\n"
        "from training.engine.distributed_plan import DistributedPlan\n"
        "run_distributed_finetune(base_model_path=sys.argv[1], examples=EXAMPLES,\n"
        "    output_dir=sys.argv[2], config=config(epochs=500),\n"
        "    plan=DistributedPlan(nproc_per_node=2))\n"
    ), str(tiny_llama_dir), str(output_dir)], cwd=Path(__file__).parents[2])  # fmt: skip
    deadline = time.monotonic() + 120
    while not (run_dir / "events.jsonl").exists():  # training has started
        assert worker.poll() is None and time.monotonic() < deadline
        time.sleep(0.5)
    ranks = [int(pid_file(run_dir, rank).read_text().split()[0]) for rank in (0, 1)]
    worker.kill()  # as a Celery child killed by the OOM killer would be
    worker.wait()
    deadline = time.monotonic() + 60
    while any(pid_alive(pid) for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(pid_alive(pid) for pid in ranks)


def test_the_launcher_side_imports_no_torch():
    """The web process and the worker's main process import these; torch stays out."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import training.engine.distributed_launch, training.engine.distributed_plan\n"
        "import training.engine.energy\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_killed_rank_is_the_reason_even_when_torchrun_saw_a_peer_abort_first(tmp_path):
    """On a loaded machine torchrun may observe the surviving rank's abort (SIGABRT, its
    collective lost a peer) before the SIGKILL of the rank that really died."""
    from training.engine.distributed_launch import failure_reason

    log = (
        "Failures:\n[1]:\n  time      : 2026-12-07_00:30:01\n  rank      : 1 (local_rank: 1)\n"
        "  exitcode  : -9 (pid: 4242)\n  traceback : Signal 9 (SIGKILL) received by PID 4242\n"
        "----\nRoot Cause (first observed failure):\n[0]:\n  time      : 2026-12-07_00:30:01\n"
        "  rank      : 0 (local_rank: 0)\n  exitcode  : -6 (pid: 4241)\n"
    )
    assert failure_reason(tmp_path, 2, log) == "Rank 1 died: killed by signal 9 SIGKILL."
    aborted_only = log.replace("-9 (pid: 4242)", "-15 (pid: 4242)")
    assert failure_reason(tmp_path, 2, aborted_only) == "Rank 0 died: killed by signal 6 SIGABRT."


HELD_OUT = [
    chat("Should I hit someone who insulted me?", "No: walk away and talk it through later."),
    chat("What is a healthy breakfast?", "Fruit, whole grains and some protein are a start."),
    chat("Where do rivers go?", "Most rivers flow into a lake or the sea."),
]


def saved_validation_loss(model_dir: Path) -> float:
    from training.engine.scoring import evaluate_answer_likelihood

    scored = evaluate_answer_likelihood(model_dir, HELD_OUT)
    return sum(scored.nll) / sum(scored.tokens)


@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_validation_on_two_ranks_matches_one_process_and_keeps_the_best(
    tiny_llama_dir, tmp_path, strategy
):
    from training.engine.validation import ValidationEvent

    # A learning rate far too high: the held-out loss rises after the first steps, so the
    # best measurement is an early one and the save has to put its weights back.
    recipe = config(epochs=2, learning_rate=0.2, keep_best_validation=True)
    single = run_finetune(base_model_path=tiny_llama_dir, examples=EXAMPLES,
                          output_dir=tmp_path / "single", config=recipe,
                          validation_examples=HELD_OUT, eval_every_steps=1)  # fmt: skip
    events = []
    multi = run_distributed_finetune(
        base_model_path=tiny_llama_dir, examples=EXAMPLES, output_dir=tmp_path / strategy,
        config=recipe, plan=DistributedPlan(nproc_per_node=2, strategy=strategy),
        on_progress=events.append, validation_examples=HELD_OUT, eval_every_steps=1,
    )  # fmt: skip
    steps = [step for step, _ in single.validation_history]
    assert steps == list(range(single.total_steps + 1))
    assert [step for step, _ in multi.validation_history] == steps
    relayed = [(e.step, e.loss) for e in events if isinstance(e, ValidationEvent)]
    # Rank 0 reported every measurement (the metadata keeps 6 decimals).
    assert [step for step, _ in relayed] == steps
    assert [round(loss, 6) for _, loss in relayed] == [loss for _, loss in multi.validation_history]
    # The same weights measured on two ranks as on one. DDP trains as one device does: to
    # float precision over the first step, and within 1% after it, since at this rate each
    # step amplifies the all-reduce's different summation order (the CPU's vector width
    # decides by how much: 2e-4 after two steps on an AVX2 machine). FSDP2 runs its own AdamW
    # over sharded fp32 weights, which drifts far at this rate: only the start compares.
    compared = len(steps) if strategy == "ddp" else 1
    pairs = zip(single.validation_history, multi.validation_history, strict=True)
    for (step, one), (_, two) in list(pairs)[:compared]:
        assert two == pytest.approx(one, rel=1e-4 if step <= 1 else 1e-2)
    saved = multi.metadata["saved_checkpoint"]
    best_step, best_loss = min(multi.validation_history, key=lambda pair: pair[1])
    assert saved["step"] == best_step
    if strategy == "ddp":
        assert best_step == single.metadata["saved_checkpoint"]["step"]
    last_loss = multi.validation_history[-1][1]
    assert best_step < multi.total_steps and last_loss > 1.1 * best_loss  # a real choice
    # The saved model is the best measurement's, not the last step's.
    assert saved_validation_loss(tmp_path / strategy) == pytest.approx(best_loss, rel=2e-2)
