"""AdamW over fp32 master weights for a model that computes in bf16, in little memory.

Forward and backward run on bf16 weights (the fast path on bf16 matrix units, with no
per-step casts as under autocast); updates are applied to fp32 masters so that small
learning rates are not rounded away. Two things keep the memory down:

- **No fp32 copy of the masters.** A bf16 number is the top 16 bits of an fp32 one, so the
  fp32 master is stored as the bf16 weight the model uses plus a 16-bit remainder: exactly
  the same number, in 2 bytes per parameter instead of 4 (270 MB less for SmolLM2-135M). The
  bf16 weight is the master rounded to nearest (ties away from zero, where a plain cast
  breaks ties to even: one weight in ~65,000 per step differs by one unit in the last
  place).
- **No fp32 gradient buffers.** Gradients stay in the model's dtype until the step, which
  clips them by their global norm (summed in fp32) and then updates slices of at most
  ``STEP_ELEMENTS`` parameters at a time, each with fp32 gradients and masters rebuilt for
  it alone. AdamW is elementwise, so slicing changes no number.

This module imports torch: import it only where the training loop runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Parameters updated together: ~32 MB of fp32 masters and as much of gradients at a time. A
# power of two, so slices keep the vector alignment the fused kernel has on whole tensors.
STEP_ELEMENTS = 8 * 1024 * 1024


@dataclass
class _Slice:
    """Elements ``start:stop`` of parameter ``index`` (flattened), as AdamW sees them."""

    index: int
    start: int
    stop: int
    holder: torch.Tensor  # an fp32 view of the parameter, or a placeholder filled per step


class MasterWeightOptimizer:
    """AdamW (fused where torch has it) with exact fp32 masters for bf16 parameters."""

    def __init__(self, params: list[torch.nn.Parameter], *, lr: float, weight_decay: float,
                 max_grad_norm: float) -> None:  # fmt: skip
        self.params = params
        # The storage the model computes with, kept even while a save casts the model.
        self.weights = [p.detach() for p in params]
        self.low = [
            torch.zeros(p.numel(), dtype=torch.int16, device=p.device)
            if p.dtype == torch.bfloat16
            else None
            for p in params
        ]
        for p in params:
            if p.dtype not in (torch.bfloat16, torch.float32):
                raise TypeError(f"parameters must be bf16 or fp32, not {p.dtype}")
        self.max_grad_norm = max_grad_norm
        slices = [
            _Slice(index, start, min(start + STEP_ELEMENTS, p.numel()), torch.empty(0))
            for index, p in enumerate(params)
            for start in range(0, p.numel(), STEP_ELEMENTS)
        ]
        for piece in slices:
            if self.low[piece.index] is None:  # fp32: AdamW updates the parameter in place
                piece.holder = self.weights[piece.index].view(-1)[piece.start : piece.stop]
            else:
                piece.holder = torch.empty(0, device=self.weights[piece.index].device)
        self.groups = [
            [slices[i] for i in group]
            for group in size_groups([s.stop - s.start for s in slices], STEP_ELEMENTS)
        ]
        self.optimizers = [
            _adamw([piece.holder for piece in group], lr=lr, weight_decay=weight_decay)
            for group in self.groups
        ]

    @torch.no_grad()
    def step(self, lr: float) -> float:
        """Apply the accumulated gradients; returns the gradient norm before clipping."""
        norm = float(global_norm([p.grad for p in self.params if p.grad is not None]))
        # As torch.nn.utils.clip_grad_norm_ does: scale only when the norm is over the limit.
        scale = min(1.0, self.max_grad_norm / (norm + 1e-6))
        for optimizer, group in zip(self.optimizers, self.groups, strict=True):
            optimizer.param_groups[0]["lr"] = lr
            for piece in group:
                self._load(piece, scale)
            optimizer.step()
            for piece in group:
                self._store(piece)
        for param in self.params:
            param.grad = None
        return norm

    def _load(self, piece: _Slice, scale: float) -> None:
        grad = self.params[piece.index].grad
        low = self.low[piece.index]
        if low is not None:
            weight = self.weights[piece.index].view(-1)[piece.start : piece.stop]
            piece.holder.data = join(weight, low[piece.start : piece.stop])
        if grad is not None:
            grad = grad.reshape(-1)[piece.start : piece.stop]
            grad = grad.float() if grad.dtype != torch.float32 else grad
            piece.holder.grad = grad.mul_(scale) if scale < 1.0 else grad

    def _store(self, piece: _Slice) -> None:
        piece.holder.grad = None
        low = self.low[piece.index]
        if low is None:
            return
        weight = self.weights[piece.index].view(-1)[piece.start : piece.stop]
        split_into(piece.holder.data, weight, low[piece.start : piece.stop])
        piece.holder.data = torch.empty(0, device=weight.device)

    def write_masters_into(self, dtype: torch.dtype) -> None:
        """Put the fp32 masters into the model, stored as ``dtype`` (for saving)."""
        with torch.no_grad():
            for param, weight, low in zip(self.params, self.weights, self.low, strict=True):
                if low is not None:
                    param.data = join(weight.view(-1), low).view(weight.shape).to(dtype)

    def copy_weights(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The exact fp32 masters as they are now, on the CPU (bf16 weight and remainder:
        4 bytes per trainable parameter), for :meth:`load_weights` to put back."""
        return [
            (weight.to("cpu", copy=True), None if low is None else low.to("cpu", copy=True))
            for weight, low in zip(self.weights, self.low, strict=True)
        ]

    def load_weights(self, saved: list[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        """Put back the masters :meth:`copy_weights` took (the model computes with them)."""
        with torch.no_grad():
            for weight, low, (high_copy, low_copy) in zip(
                self.weights, self.low, saved, strict=True
            ):
                weight.copy_(high_copy)
                if low is not None:
                    low.copy_(low_copy)


def join(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """The fp32 number whose top 16 bits are the bf16 ``high`` plus the int16 ``low``."""
    bits = high.view(torch.int16).to(torch.int32)
    bits <<= 16
    bits += low
    return bits.view(torch.float32)


def split_into(master: torch.Tensor, high: torch.Tensor, low: torch.Tensor) -> None:
    """Write fp32 ``master`` as ``high`` (bf16, rounded to nearest) and ``low`` (int16) such
    that ``join(high, low)`` is ``master`` exactly."""
    bits = master.view(torch.int32)
    top = bits + 0x8000  # rounding up from half-way: the remainder then fits in an int16
    top >>= 16
    high.view(torch.int16).copy_(top)
    top <<= 16
    torch.sub(bits, top, out=top)
    low.copy_(top)


def size_groups(sizes: Sequence[int], limit: int) -> list[list[int]]:
    """Consecutive indices in groups of at most ``limit`` elements (a bigger one alone)."""
    groups: list[list[int]] = []
    total = limit
    for index, size in enumerate(sizes):
        if total + size > limit:
            groups.append([])
            total = 0
        groups[-1].append(index)
        total += size
    return groups


def global_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all gradients together, accumulated in fp32 whatever their dtype."""
    if not grads:
        return torch.zeros(())
    norms = [torch.linalg.vector_norm(g, 2, dtype=torch.float32) for g in grads]
    return torch.linalg.vector_norm(torch.stack(norms), 2)


def _adamw(params: list[torch.Tensor], *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    try:
        # The fused kernel updates all parameters in one pass: faster on CPU and GPU alike.
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
