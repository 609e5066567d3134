"""A plain attention for training on a CPU, registered with transformers as "palms_cpu".

At our sequence lengths (100–1,000 tokens) torch's CPU flash-attention kernel is slower than
two bf16 matmuls and a softmax. transformers' own "eager" attention does those too, but
upcasts the T x T scores to fp32 for the softmax; torch's bf16 softmax already computes in
fp32 internally and rounds the result to bf16 — the same numbers eager gets after its cast —
without the extra copies. Scaling the queries instead of the scores also touches T x D
instead of T x T values. Together about 5% of a SmolLM2 training step. Grouped-query models
share a key/value head among several query heads; the matmuls here take each key/value head
once instead of copying it per query head, which saves those copies and their memory in the
backward pass. This module imports torch and transformers: import it only where the training
loop runs.
"""

from __future__ import annotations

import torch

NAME = "palms_cpu"


def cpu_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' attention-function signature: (batch, heads, seq, dim) in, output as
    (batch, seq, heads, dim) and the attention weights out."""
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    # Grouped-query attention without copying keys and values once per query head: the
    # queries that share a key/value head are stacked along the sequence axis, so each
    # matmul multiplies one key/value head by all its queries at once.
    grouped = (query * scaling).reshape(batch, kv_heads, heads // kv_heads * length, dim)
    scores = torch.matmul(grouped, key.transpose(2, 3)).view(batch, heads, length, -1)
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.softmax(scores, dim=-1)
    if dropout and module.training:
        weights = torch.nn.functional.dropout(weights, p=dropout)
    stacked = weights.view(batch, kv_heads, heads // kv_heads * length, -1)
    output = torch.matmul(stacked, value).view(batch, heads, length, dim)
    return output.transpose(1, 2).contiguous(), weights


def register() -> str:
    """Make "palms_cpu" usable with ``model.set_attn_implementation``; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, cpu_attention)
    AttentionMaskInterface.register(NAME, eager_mask)  # the same additive float mask
    return NAME
