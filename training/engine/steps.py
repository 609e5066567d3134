"""One optimizer step of a local fine-tune: the plan (which examples go into which step),
the learning-rate schedule, the optimizer, the attention and activation-checkpointing
choices, and the loss over answer tokens. torch is imported inside the functions."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from training.engine.data import IGNORE_INDEX, EncodedExample, length_grouped_batches

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from training.engine.config import FineTuneConfig

EAGER_ATTENTION_MAX_TOKENS = 1024


# --- the plan: which examples go into which step ------------------------------------------


@dataclass(frozen=True)
class Step:
    epoch: int
    micro_batches: list[list[int]]
    tokens: int
    label_tokens: int


def plan_steps(encoded: Sequence[EncodedExample], config: FineTuneConfig) -> list[Step]:
    rng = random.Random(config.seed)
    lengths = [e.n_tokens for e in encoded]
    steps: list[Step] = []
    epochs = config.epochs
    if config.max_steps is not None:
        per_epoch = math.ceil(math.ceil(len(encoded) / config.batch_size) / config.grad_accum)
        epochs = math.ceil(config.max_steps / per_epoch)
    for epoch in range(epochs):
        batches = length_grouped_batches(lengths, config.batch_size, rng)
        for start in range(0, len(batches), config.grad_accum):
            group = batches[start : start + config.grad_accum]
            members = [i for batch in group for i in batch]
            steps.append(
                Step(
                    epoch=epoch,
                    micro_batches=group,
                    tokens=sum(encoded[i].n_tokens for i in members),
                    label_tokens=sum(encoded[i].n_label_tokens for i in members),
                )
            )
    if config.max_steps is not None:
        del steps[config.max_steps :]
    return steps


def lr_at(step_index: int, total: int, config: FineTuneConfig) -> float:
    """Linear warmup, then linear decay; never exactly zero, so no step is wasted."""
    base = config.learning_rate
    warmup = min(config.warmup_steps, total - 1)
    if step_index < warmup:
        return base * (step_index + 1) / (warmup + 1)
    return base * (total - step_index) / (total - warmup)


def make_optimizer(params: list[torch.nn.Parameter], config: FineTuneConfig) -> Any:
    """AdamW with exact fp32 masters for bf16 weights, in little memory (master_weights.py)."""
    from training.engine.master_weights import MasterWeightOptimizer

    return MasterWeightOptimizer(
        params,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
    )


def pick_attention(model: PreTrainedModel, device: torch.device, longest: int) -> None:
    """Use our plain CPU attention (see ``attention.py``) for short sequences on a CPU.

    It keeps a T x T matrix per head for the backward pass, so long sequences, and GPUs,
    stay on SDPA.
    """
    from training.engine import attention

    if device.type != "cpu" or longest > EAGER_ATTENTION_MAX_TOKENS:
        return
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    # A model whose attention cannot be swapped keeps its default.
    with suppress(ValueError, ImportError, AttributeError):
        target.set_attn_implementation(attention.register())


def checkpoint_activations(model: PreTrainedModel) -> None:
    """Keep only each decoder layer's input for the backward pass and recompute the rest.

    Non-reentrant checkpointing: it needs no inputs that require grad (LoRA's frozen
    embeddings) and keeps seeded dropout identical between the two passes.
    """
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    kwargs = {"use_reentrant": False}
    if hasattr(target, "activation_checkpointing_enable"):  # transformers >= 5
        target.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


# --- the loss ------------------------------------------------------------------------------


def batch_tensors(
    encoded: Sequence[EncodedExample], indices: list[int], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Right-padded ids, attention mask (None when no row is padded) and labels."""
    import torch

    width = max(encoded[i].n_tokens for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        n = encoded[i].n_tokens
        ids[row, :n] = torch.tensor(encoded[i].input_ids)
        labels[row, :n] = torch.tensor(encoded[i].labels)
        mask[row, :n] = 1
    # Without padding the attention can take the plain causal path, which is faster.
    attention = None if bool(mask.all()) else mask.to(device)
    return ids.to(device), attention, labels.to(device)


def head_parts(model: PreTrainedModel) -> tuple[Any, Any] | None:
    """(decoder, lm_head) when the loss can skip the full logits; None to use forward()."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings()
    plain_head = type(head) is torch.nn.Linear and head.bias is None
    # Models that rescale logits (softcapping, logit_scale) must go through their forward().
    rescales = any(
        getattr(base.config, name, None) for name in ("final_logit_softcapping", "logit_scale")
    )
    if decoder is None or not plain_head or rescales:
        return None
    return decoder, head


def loss_sum(model, parts, ids, attention, labels) -> torch.Tensor:
    """Summed cross-entropy over answer tokens of one micro-batch."""
    import torch.nn.functional as F

    from training.engine.losses import linear_cross_entropy_sum

    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    if parts is None:
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
        return F.cross_entropy(logits[keep].float(), targets[keep], reduction="sum")
    decoder, head = parts
    hidden = decoder(input_ids=ids, attention_mask=attention).last_hidden_state[:, :-1]
    return linear_cross_entropy_sum(hidden[keep], head.weight, targets[keep])
