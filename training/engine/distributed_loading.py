"""Loading a model that is to be sharded (FSDP2) with one copy of its weights, not one per
rank: rank 0 reads the checkpoint onto its CPU, every other rank builds the same modules on
the meta device (shapes, no storage). After ``fully_shard`` the other ranks allocate their
shards only, and rank 0 broadcasts the weights tensor by tensor; each rank keeps its shard
(``set_model_state_dict`` with ``broadcast_from_rank0``, as the FSDP2 docs advise for models
that do not fit). Rank 0's host memory still holds the full model once, so a node needs
room for one copy instead of ``nproc_per_node`` copies, and the devices only for shards.

This module imports torch; only the rank program imports it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

LOADER_RANK = 0
SUMMARY = "rank 0 read the weights; the other ranks built on the meta device and received their shards by broadcast"  # noqa: E501


def load_device(rank: int) -> torch.device:
    """Where this rank's copy of the model is built before sharding."""
    return torch.device("cpu") if rank == LOADER_RANK else torch.device("meta")


def full_state_before_sharding(root: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rank 0's full weights (keys as ``root`` names them), taken before ``fully_shard``
    replaces the parameters with shards; {} on the other ranks, which have none."""
    if dist.get_rank() != LOADER_RANK:
        return {}
    return dict(root.state_dict())


def fill_shards(root: torch.nn.Module, full_state: dict[str, Any], device: torch.device) -> None:
    """Give every rank's shards their values from rank 0, and every rank rank 0's buffers."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if dist.get_rank() != LOADER_RANK:
        root.to_empty(device=device)  # storage for this rank's shards and buffers, unset
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(root, full_state, options=options)
    # Buffers outside the state dict (the rotary inverse frequencies are non-persistent)
    # are computed at construction, which the meta device skipped: rank 0's are the truth.
    for buffer in root.buffers():
        dist.broadcast(buffer, src=LOADER_RANK)
