"""How a fine-tune spreads over several devices, decided without torch: DDP or FSDP2 by the
model's size, which examples of a step each rank takes, and the torchrun command line.

The web process imports this module (the launch form shows the choice), so it imports
neither torch nor Django.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from training.engine.errors import EngineError

Strategy = Literal["ddp", "fsdp"]
MAX_DEVICES_PER_NODE = 8
MAX_NODES = 16
# Bytes per parameter a training step holds on one device, weights to optimizer states:
# full fine-tune: bf16 weights + bf16 grads + fp32 AdamW moments (8) + master low bits (2);
# LoRA: the frozen bf16 weights, the adapter's share being small (counted as 10%).
BYTES_PER_PARAMETER = {"full": 2 + 2 + 8 + 2, "lora": 2.2}
# Activations, the CUDA context and fragmentation: leave this share of the device free.
HEADROOM = 0.35


def training_bytes(parameter_count: int, method: str) -> int:
    """Estimated device memory for the weights, gradients and optimizer states of one
    model replica (activations are in ``HEADROOM``)."""
    return round(parameter_count * BYTES_PER_PARAMETER.get(method, BYTES_PER_PARAMETER["full"]))


def choose_strategy(parameter_count: int, method: str, device_memory_bytes: int) -> Strategy:
    """DDP when a whole replica fits one device with headroom; FSDP2 (parameters, gradients
    and optimizer states sharded over the ranks) when it does not."""
    fits = training_bytes(parameter_count, method) <= device_memory_bytes * (1 - HEADROOM)
    return "ddp" if fits else "fsdp"


def strategy_label(strategy: Strategy) -> str:
    return {
        "ddp": "DDP (a full replica per device, gradients averaged)",
        "fsdp": "FSDP2 (weights, gradients and optimizer states sharded over the devices)",
    }[strategy]


@dataclass(frozen=True)
class DistributedPlan:
    """Where the ranks run. ``nnodes > 1`` needs ``rdzv_endpoint`` (host:port of the c10d
    store, on the first node) and the same ``rdzv_id`` on every node."""

    nproc_per_node: int
    nnodes: int = 1
    strategy: Strategy = "ddp"
    rdzv_endpoint: str = ""
    rdzv_id: str = "palmsweb"
    # Seconds every node waits for the others to join the rendezvous.
    join_timeout: int = 600

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def validate(self) -> None:
        if not 1 <= self.nproc_per_node <= MAX_DEVICES_PER_NODE:
            raise EngineError(f"Devices per node must be 1 to {MAX_DEVICES_PER_NODE}.")
        if not 1 <= self.nnodes <= MAX_NODES:
            raise EngineError(f"Nodes must be 1 to {MAX_NODES}.")
        if self.strategy not in ("ddp", "fsdp"):
            raise EngineError("The strategy must be 'ddp' or 'fsdp'.")
        if self.nnodes > 1 and ":" not in self.rdzv_endpoint:
            raise EngineError("A multi-node fine-tune needs a rendezvous endpoint host:port.")

    def to_dict(self) -> dict:
        return asdict(self)


def torchrun_command(plan: DistributedPlan, run_dir: Path) -> list[str]:
    """torchrun (``python -m torch.distributed.run``) starting the rank program on this
    node. One node: a private c10d store on a free port (``--standalone``); several: the
    shared c10d rendezvous, which gives every node its rank."""
    command = [sys.executable, "-m", "torch.distributed.run",
               f"--nproc-per-node={plan.nproc_per_node}", f"--nnodes={plan.nnodes}",
               "--max-restarts=0", "--monitor-interval=0.5"]  # fmt: skip
    if plan.nnodes == 1:
        command.append("--standalone")
    else:
        command += [
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={plan.rdzv_endpoint}",
            f"--rdzv-id={plan.rdzv_id}",
            f"--rdzv-conf=join_timeout={plan.join_timeout}",
        ]
    return command + ["-m", "training.engine.distributed", str(run_dir)]


def rank_micro_batches(
    members: Sequence[int], rank: int, world_size: int, per_rank_batch: int
) -> list[list[int]]:
    """This rank's share of one optimizer step's examples, in micro-batches of at most
    ``per_rank_batch``. Every rank gets the same number of micro-batches (an empty one means
    "run a forward pass that counts for nothing"): DDP and FSDP2 synchronise at every
    backward pass, so a rank with fewer would leave the others waiting."""
    mine = list(members[rank::world_size])
    most = -(-len(members[::world_size]) // per_rank_batch) or 1
    batches = [mine[i : i + per_rank_batch] for i in range(0, len(mine), per_rank_batch)]
    return batches + [[] for _ in range(most - len(batches))]


def per_rank_batch_size(batch_size: int, grad_accum: int, world_size: int) -> int:
    """Examples per forward pass on each rank so that the step still sees
    ``batch_size * grad_accum`` examples: the effective batch split over the ranks, never
    more than ``batch_size`` at once (the rest is gradient accumulation)."""
    effective = batch_size * grad_accum
    return max(1, min(batch_size, -(-effective // world_size)))
