"""Validation loss during a local fine-tune: the mean loss per answer token of held-out
examples, with the same answer-only masking and the same loss as training (``steps.py``),
measured without gradients on the weights as they are now. torch is imported inside."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from training.engine.data import EncodedExample


@dataclass(frozen=True)
class ValidationEvent:
    """Handed to the fine-tune's ``on_progress`` when the validation loss was measured:
    at step 0 (the starting weights), every ``eval_every_steps`` steps and at each epoch
    end. ``loss`` is the mean loss per answer token over all validation examples."""

    step: int
    total_steps: int
    epoch: float
    loss: float
    examples: int


def check_validation_settings(examples: Sequence[Any], eval_every_steps: int) -> None:
    """Refuse malformed validation examples or a negative interval before loading a model."""
    from training.engine.data import validate_examples
    from training.engine.errors import EngineError

    if examples:
        validate_examples(examples)
    if not isinstance(eval_every_steps, int) or eval_every_steps < 0:
        raise EngineError("Invalid fine-tune settings: eval_every_steps must be 0 or more.")


def wants_validation(step: int, *, epoch_end: bool, every: int) -> bool:
    """Step 0, each epoch end, and every ``every`` steps (0: no periodic measurement)."""
    return step == 0 or epoch_end or (every > 0 and step % every == 0)


def validation_loss(
    model: Any,
    parts: Any,
    encoded: Sequence[EncodedExample],
    pad_id: int,
    device: Any,
    batch_size: int,
) -> float:
    """Mean cross-entropy per answer token over ``encoded``, in eval mode (no dropout) and
    without gradients; the model is put back in training mode afterwards."""
    import torch

    from training.engine.steps import batch_tensors, loss_sum

    order = sorted(range(len(encoded)), key=lambda i: encoded[i].n_tokens)
    total, tokens = 0.0, 0
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                ids, attention, labels = batch_tensors(encoded, batch, pad_id, device)
                total += float(loss_sum(model, parts, ids, attention, labels))
                tokens += sum(encoded[i].n_label_tokens for i in batch)
    finally:
        model.train()
    return total / max(tokens, 1)


def validation_metadata(history: Sequence[tuple[int, float]], examples: int) -> dict[str, Any]:
    """What ``palms_metadata.json`` records of the validation: each measurement and the
    best one (its step says which weights scored it); nothing without validation data."""
    if not history:
        return {}
    rounded = [[step, round(loss, 6)] for step, loss in history]
    best = min(rounded, key=lambda pair: pair[1])
    return {
        "validation_examples": examples,
        "validation_loss_history": rounded,
        "best_validation_loss": {"step": best[0], "loss": best[1]},
    }


@dataclass
class BestValidation:
    """With ``keep_best_validation``: the trainable weights of the measurement with the
    lowest validation loss so far, copied off the device (for LoRA only the adapter's), to
    be put back before the save. A later measurement must beat it strictly, so of equal
    losses the earliest weights are kept."""

    step: int = -1
    loss: float = math.inf
    weights: object = None

    def offer(self, step: int, loss: float, copy_weights: Callable[[], object]) -> None:
        """Keep a copy of the weights now if ``loss`` is the best yet."""
        if not loss < self.loss:
            return
        self.weights = None  # the old copy goes first: one copy in memory at a time
        self.step, self.loss, self.weights = step, loss, copy_weights()

    def metadata(self, total_steps: int) -> dict[str, Any]:
        """What ``palms_metadata.json`` records of the weights saved ({} if none kept)."""
        if self.step < 0:
            return {}
        return {
            "saved_checkpoint": {
                "step": self.step,
                "of_steps": total_steps,
                "validation_loss": round(self.loss, 6),
                "chosen_by": "best validation loss",
            }
        }
