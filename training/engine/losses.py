"""Cross-entropy through the LM head, chunked so the full fp32 logits never exist.

With a 49k vocabulary, fp32 logits for 2,000 answer tokens are 400 MB; creating, soft-maxing
and zero-filling them took a third of a SmolLM2 training step on CPU. Here the head matmul,
the softmax and both gradients are computed chunk by chunk in the forward pass (the loss is
a scalar, so the backward pass only has to scale them). This module imports torch: import it
only where the training loop runs.
"""

from __future__ import annotations

import torch

# Rows per softmax chunk: one chunk's fp32 logits stay around 32 MB (cache friendly).
_CHUNK_ELEMENTS = 8 * 1024 * 1024
# Rows whose logit gradients are kept (in the compute dtype) before being folded into the
# weight gradient with one matmul: folding every small chunk would convert and add a whole
# vocab x hidden fp32 matrix each time. ~680 rows of a 49k vocabulary: 64 MB in bf16, a
# fold costs a few percent of the loss's time, and the buffer stays small next to the model.
_WEIGHT_GRAD_ELEMENTS = 32 * 1024 * 1024


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor):
        vocab = weight.shape[0]
        rows = max(1, _CHUNK_ELEMENTS // vocab)
        group = max(rows, _WEIGHT_GRAD_ELEMENTS // vocab // rows * rows)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        underflow = torch.zeros((), dtype=torch.bool, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = None
        for group_start in range(0, hidden.shape[0], group):
            h_group = hidden[group_start : group_start + group]
            t_group = targets[group_start : group_start + group]
            grad_logits = torch.empty(
                (h_group.shape[0], vocab), dtype=hidden.dtype, device=hidden.device
            )
            for start in range(0, h_group.shape[0], rows):
                chunk = slice(start, start + rows)
                chunk_loss, chunk_underflow = _softmax_grad(
                    h_group[chunk], weight, t_group[chunk], grad_logits[chunk]
                )
                loss += chunk_loss
                underflow |= chunk_underflow
            if grad_hidden is not None:
                grad_hidden[group_start : group_start + group] = grad_logits @ weight
            if ctx.needs_input_grad[1]:
                partial = grad_logits.t() @ h_group
                # fp32 += bf16 in place: no fp32 copy of each partial (113 MB for SmolLM2).
                grad_weight = partial.float() if grad_weight is None else grad_weight.add_(partial)
        if bool(underflow):  # one check per call: on a GPU each one waits for the device
            loss = _exact_loss(hidden, weight, targets, rows)
        if ctx.needs_input_grad[1] and grad_weight is None:
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_output.to(grad_hidden.dtype)
        if grad_weight is not None:  # in place: this function's backward runs once
            grad_weight = grad_weight.mul_(grad_output).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None


def _softmax_grad(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss of one chunk, and whether a target's probability underflowed; writes
    d(loss)/d(logits) = softmax - one_hot into ``out``.

    One fused softmax over an fp32 copy of the logits, in place (the kernel reads each row
    before it writes it), and the loss from the targets' probabilities: two passes over the
    chunk fewer than logsumexp, subtract and exp, about a fifth of the loss's time.
    """
    probs = (hidden @ weight.t()).float()
    torch._softmax(probs, -1, False, out=probs)
    rows = torch.arange(targets.shape[0], device=targets.device)
    target_probs = probs[rows, targets]
    # -log(p) is exact while p is a normal fp32 number, i.e. for losses below ~87 nats.
    underflow = (target_probs < _SMALLEST_NORMAL).any()
    loss = -torch.log(target_probs).sum()
    probs[rows, targets] -= 1.0
    out.copy_(probs)
    return loss, underflow


_SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


def _exact_loss(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: int
) -> torch.Tensor:
    """The summed loss through logsumexp, for the rare call where a probability underflowed
    (a target far below the best logit: a diverging run)."""
    loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], rows):
        logits = (hidden[start : start + rows] @ weight.t()).float()
        picked = logits.gather(1, targets[start : start + rows, None]).squeeze(1)
        loss += (torch.logsumexp(logits, dim=-1) - picked).sum()
    return loss


def linear_cross_entropy_sum(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Sum over rows of cross-entropy(hidden @ weight.T, targets), as a fp32 scalar.

    ``hidden`` is (tokens, hidden_size), ``weight`` the (vocab, hidden_size) LM head,
    ``targets`` (tokens,) class ids. Gradients flow to ``hidden`` and, if it requires grad,
    to ``weight``.
    """
    if hidden.shape[0] == 0:
        return hidden.sum().float() * 0.0
    return _LinearCrossEntropy.apply(hidden, weight, targets)


# --- per-token log-probabilities (DPO) --------------------------------------------------------


class _LinearTokenLogProbs(torch.autograd.Function):
    """log p(target) of each row through the LM head, chunk by chunk. Unlike the summed
    cross-entropy above, each row's gradient has its own scale (DPO weighs every sequence
    differently), so the softmax is recomputed in the backward pass instead of kept: one
    more head matmul, and no (rows x vocab) tensor outlives its chunk."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor):
        rows = max(1, _CHUNK_ELEMENTS // weight.shape[0])
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            logits = (hidden[start : start + rows] @ weight.t()).float()
            picked = logits.gather(1, targets[start : start + rows, None]).squeeze(1)
            out[start : start + rows] = picked - torch.logsumexp(logits, dim=-1)
        ctx.save_for_backward(hidden, weight, targets)
        return out

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        hidden, weight, targets = ctx.saved_tensors
        vocab = weight.shape[0]
        rows = max(1, _CHUNK_ELEMENTS // vocab)
        group = max(rows, _WEIGHT_GRAD_ELEMENTS // vocab // rows * rows)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = None
        for group_start in range(0, hidden.shape[0], group):
            h_group = hidden[group_start : group_start + group]
            grad_logits = torch.empty((h_group.shape[0], vocab), dtype=hidden.dtype,
                                      device=hidden.device)  # fmt: skip
            for start in range(0, h_group.shape[0], rows):
                at = slice(group_start + start, group_start + start + rows)
                probs = (hidden[at] @ weight.t()).float()
                torch._softmax(probs, -1, False, out=probs)
                picked = torch.arange(probs.shape[0], device=probs.device)
                probs[picked, targets[at]] -= 1.0  # d(-log p)/d(logits)
                probs.mul_(-grad_output[at, None])  # d(log p) = -d(-log p), per-row scale
                grad_logits[start : start + rows].copy_(probs)
            if grad_hidden is not None:
                grad_hidden[group_start : group_start + group] = grad_logits @ weight
            if ctx.needs_input_grad[1]:
                partial = grad_logits.t() @ h_group
                grad_weight = partial.float() if grad_weight is None else grad_weight.add_(partial)
        if ctx.needs_input_grad[1] and grad_weight is None:
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None


def linear_token_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """log softmax(hidden @ weight.T)[row, targets[row]] for every row, as fp32 (rows,).
    Gradients flow to ``hidden`` and, if it requires grad, to ``weight``."""
    if hidden.shape[0] == 0:
        return hidden.sum(dim=-1).float()
    return _LinearTokenLogProbs.apply(hidden, weight, targets)
