"""A plain attention for training on a CPU, registered with transformers as "palms_cpu".

At our sequence lengths (100–1,000 tokens) torch's CPU flash-attention kernel is slower than
two bf16 matmuls and a softmax. transformers' own "eager" attention does those too, but
upcasts the T x T scores to fp32 for the softmax; torch's bf16 softmax already computes in
fp32 internally and rounds the result to bf16 — the same numbers eager gets after its cast —
without the extra copies. Scaling the queries instead of the scores also touches T x D
instead of T x T values. Together about 5% of a SmolLM2 training step. This module imports
torch and transformers: import it only where the training loop runs.
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
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:  # grouped-query attention: share each key/value head among its queries
        key, value = _repeat_heads(key, groups), _repeat_heads(value, groups)
    scores = torch.matmul(query * scaling, key.transpose(2, 3))
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.softmax(scores, dim=-1)
    if dropout and module.training:
        weights = torch.nn.functional.dropout(weights, p=dropout)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


def _repeat_heads(states: torch.Tensor, groups: int) -> torch.Tensor:
    batch, heads, length, dim = states.shape
    expanded = states[:, :, None].expand(batch, heads, groups, length, dim)
    return expanded.reshape(batch, heads * groups, length, dim)


def register() -> str:
    """Make "palms_cpu" usable with ``model.set_attn_implementation``; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, cpu_attention)
    AttentionMaskInterface.register(NAME, eager_mask)  # the same additive float mask
    return NAME
