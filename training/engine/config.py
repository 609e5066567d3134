"""What a local fine-tune is asked to do and what it reports: the settings, the defaults by
model size, the progress event after each step and the result. Shared by the one-process
loop (``finetune.py``) and the ranks of a distributed run (``distributed.py``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from training.engine.errors import EngineError
from training.engine.runtime import Bf16Setting


@dataclass(frozen=True)
class FineTuneConfig:
    """Hyperparameters of a local fine-tune.

    ``batch_size`` is examples per forward pass; an optimizer step sees
    ``batch_size * grad_accum`` examples. ``bf16="auto"`` uses bf16 where the hardware has
    fast bf16 (CUDA, or CPUs with AVX512-BF16/AMX).
    """

    method: Literal["full", "lora"] = "full"
    epochs: int = 3
    learning_rate: float = 5e-5
    batch_size: int = 8
    grad_accum: int = 1
    max_seq_len: int = 1024
    warmup_steps: int = 0
    seed: int = 0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    bf16: Bf16Setting = "auto"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # Stop after this many optimizer steps, cycling through the data as often as needed
    # (``epochs`` is then ignored). Re-alignment counts in steps, not epochs.
    max_steps: int | None = None
    # Recompute each decoder layer's activations in the backward pass instead of keeping
    # them: about 1.3x the compute, a fraction of the memory (see docs/engine.md).
    activation_checkpointing: bool = False
    # Save the weights of the validation measurement with the lowest loss instead of the
    # last step's (needs validation examples; the metadata records which step was saved).
    keep_best_validation: bool = False

    def validate(self) -> None:
        """Raise EngineError naming the first unusable value."""
        checks = [
            (self.method in ("full", "lora"), "method must be 'full' or 'lora'"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.grad_accum >= 1, "grad_accum must be at least 1"),
            (self.max_seq_len >= 8, "max_seq_len must be at least 8"),
            (self.warmup_steps >= 0, "warmup_steps must not be negative"),
            (self.lora_r >= 1 and self.lora_alpha >= 1, "lora_r and lora_alpha must be >= 1"),
            (0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
            (self.bf16 in ("auto", True, False), "bf16 must be 'auto', true or false"),
            (self.max_grad_norm > 0, "max_grad_norm must be positive"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be at least 1"),
            (
                isinstance(self.activation_checkpointing, bool),
                "activation_checkpointing must be true or false",
            ),
            (
                isinstance(self.keep_best_validation, bool),
                "keep_best_validation must be true or false",
            ),
        ]
        for ok, reason in checks:
            if not ok:
                raise EngineError(f"Invalid fine-tune settings: {reason}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_config_for(param_count: int) -> FineTuneConfig:
    """Sensible settings for a model of ``param_count`` parameters on ~80 curated examples.

    Small models are fully fine-tuned; from 1B parameters LoRA keeps memory and time in
    reach of one accelerator.
    """
    if param_count < 20_000_000:  # test-sized models learn fast and need a high rate
        return FineTuneConfig(method="full", epochs=3, learning_rate=1e-3, batch_size=4)
    if param_count < 500_000_000:
        # The sweep on SmolLM2-135M and the demo content (docs/engine.md, issue 16): of
        # full fine-tunes at 5e-5…5e-4 for 1 or 3 epochs, 1e-4 for 3 epochs reached the
        # lowest validation loss, at its last step (no over-fitting to undo), with general
        # text perplexity falling, not rising; 2e-4 and 5e-4 over-fit after the first epoch.
        return FineTuneConfig(
            method="full", epochs=3, learning_rate=1e-4, batch_size=8, warmup_steps=2
        )
    if param_count < 1_000_000_000:  # not measured: the rate before the sweep
        return FineTuneConfig(
            method="full", epochs=3, learning_rate=5e-5, batch_size=8, warmup_steps=2
        )
    if param_count < 10_000_000_000:
        return FineTuneConfig(
            method="lora",
            epochs=3,
            learning_rate=2e-4,
            batch_size=4,
            grad_accum=2,
            warmup_steps=2,
        )
    return FineTuneConfig(
        method="lora",
        epochs=2,
        learning_rate=1e-4,
        batch_size=2,
        grad_accum=4,
        max_seq_len=1024,
        warmup_steps=2,
    )


@dataclass(frozen=True)
class ProgressEvent:
    """Reported after every optimizer step. ``epoch`` is fractional (1.5 = half-way through
    the second epoch); ``loss`` is the step's mean loss per answer token."""

    step: int
    total_steps: int
    epoch: float
    loss: float
    tokens_per_second: float
    eta_seconds: float
    lr: float


@dataclass(frozen=True)
class FineTuneResult:
    """What a finished fine-tune produced; the same figures are in ``palms_metadata.json``."""

    output_dir: Path
    total_steps: int
    duration_seconds: float
    tokens_per_second: float
    final_loss: float
    loss_history: list[tuple[int, float]]
    train_tokens: int
    metadata: dict[str, Any] = field(default_factory=dict)
    # [(step, mean validation loss per answer token), ...]; empty without validation data.
    validation_history: list[tuple[int, float]] = field(default_factory=list)
