"""Local fine-tuning (full or LoRA) with our own torch loop.

Why not ``transformers.Trainer``: on a CPU the wins come from things it does not do by default
(bf16 weights with fp32 master copies, length-grouped batches without padding waste, a
chunked LM-head loss on answer tokens only), and we need progress events and cancellation
at every optimizer step. torch is imported inside the functions that use it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from training.engine.data import EncodedExample
from training.engine.data import estimate_tokens as estimate_tokens
from training.engine.errors import Cancelled, EngineError
from training.engine.runtime import Bf16Setting, is_out_of_memory
from training.engine.steps import (
    Step,
    batch_tensors,
    checkpoint_activations,
    head_parts,
    loss_sum,
    lr_at,
    make_optimizer,
    pick_attention,
    plan_steps,
)
from training.engine.validation import (
    ValidationEvent,
    check_validation_settings,
    validation_loss,
    validation_metadata,
    wants_validation,
)

if TYPE_CHECKING:
    import torch

METADATA_FILE = "palms_metadata.json"


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
    if param_count < 1_000_000_000:
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


ProgressCallback = Callable[[ProgressEvent | ValidationEvent], None]
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class Checkpoint:
    """The fine-tune as it stands after ``step`` optimizer steps (0: the starting weights),
    handed to ``on_checkpoint``. ``epoch_end`` is True at the last step of an epoch."""

    step: int
    epoch: float
    epoch_end: bool
    _job: _Job = field(repr=False)

    def projections(self, prompts: Sequence[Any], direction: Any) -> list[float]:
        """Persona projections of ``prompts`` with the weights as they are now, in fp32 from
        the master copies: the model a save would write, measured as a saved one is. (The
        bf16 working weights lag behind: small updates round away in bf16.)"""
        import torch

        from training.engine.persona import model_projections

        model = self._job.model
        with _tensors_restored(model):
            model.to(torch.float32)
            self._job.optimizer.write_masters_into(torch.float32)
            model.eval()
            try:
                return model_projections(model, self._job.tokenizer, prompts, direction)
            finally:
                model.train()

    def save(self, output_dir: Path | str, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the weights as they are now, laid out like a finished run's output."""
        output_dir = Path(output_dir)
        meta = self._job.metadata(time.perf_counter() - self._job.run.started)
        meta |= {"checkpoint_step": self.step} | dict(metadata or {})
        self._job.save(output_dir, meta, keep_training=True)
        return output_dir


CheckpointCallback = Callable[[Checkpoint], None]


# --- running -------------------------------------------------------------------------------


@dataclass
class _Run:
    """Mutable state of one fine-tune, for progress events and the metadata file."""

    total_steps: int
    total_tokens: int
    steps_per_epoch: int
    started: float = field(default_factory=time.perf_counter)
    tokens_done: int = 0
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    validation_history: list[tuple[int, float]] = field(default_factory=list)

    def tokens_per_second(self) -> float:
        return self.tokens_done / max(time.perf_counter() - self.started, 1e-9)

    def event(self, step: int, loss: float, lr: float) -> ProgressEvent:
        speed = self.tokens_per_second()
        remaining = self.total_tokens - self.tokens_done
        return ProgressEvent(
            step=step,
            total_steps=self.total_steps,
            epoch=step / self.steps_per_epoch,
            loss=loss,
            tokens_per_second=speed,
            eta_seconds=remaining / speed if speed > 0 else 0.0,
            lr=lr,
        )


def run_finetune(
    *,
    base_model_path: Path | str,
    examples: Sequence[Mapping[str, Any]],
    output_dir: Path | str,
    config: FineTuneConfig | None = None,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    metadata: Mapping[str, Any] | None = None,
    checkpoint_steps: Collection[int] = (),
    checkpoint_every_epoch: bool = False,
    on_checkpoint: CheckpointCallback | None = None,
    validation_examples: Sequence[Mapping[str, Any]] = (),
    eval_every_steps: int = 0,
) -> FineTuneResult:
    """Fine-tune a local model on chat examples and save the result to ``output_dir``.

    Loss is on assistant tokens only. ``on_progress`` gets a ProgressEvent after every
    optimizer step; ``should_cancel`` is asked before every forward pass, and True raises
    Cancelled. The output dir holds full weights (or the LoRA adapter), the tokenizer and
    ``palms_metadata.json`` (``metadata`` is merged into it). It is written atomically; an
    existing non-empty dir is refused. Failures raise EngineError with a readable reason.

    ``on_checkpoint`` gets a :class:`Checkpoint` after each step in ``checkpoint_steps``
    (0: before the first step) and, with ``checkpoint_every_epoch``, at step 0 and after
    each epoch's last step; the time it takes is not counted as training time.
    With ``validation_examples``, ``on_progress`` also gets a ``ValidationEvent`` (when:
    ``validation.wants_validation``), whose time is not training time either.
    """
    from training.engine.data import validate_examples
    from training.engine.loading import count_parameters

    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise EngineError(f"The output directory {output_dir} already exists and is not empty.")
    validate_examples(examples)  # bad data fails before the model is loaded
    check_validation_settings(validation_examples, eval_every_steps)
    if config is None:
        config = default_config_for(count_parameters(base_model_path))
    config.validate()
    hooks = _Hooks(
        on_progress=on_progress or (lambda event: None),
        should_cancel=should_cancel or (lambda: False),
        checkpoint_steps=frozenset(checkpoint_steps),
        checkpoint_every_epoch=checkpoint_every_epoch,
        on_checkpoint=on_checkpoint,
        eval_every_steps=eval_every_steps,
    )
    with _readable_failures(config):
        data = (examples, validation_examples)
        return _finetune(Path(base_model_path), data, output_dir, config, hooks,
                         dict(metadata or {}))  # fmt: skip


@contextmanager
def _readable_failures(config: FineTuneConfig) -> Iterator[None]:
    try:
        yield
    except (EngineError, Cancelled):
        raise
    except FileNotFoundError as exc:
        raise EngineError(f"A file the fine-tune needs is missing: {exc.filename or exc}") from exc
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise EngineError(
            f"Out of memory with batch_size={config.batch_size} and "
            f"max_seq_len={config.max_seq_len}: lower them, or use LoRA."
        ) from exc


@dataclass(frozen=True)
class _Hooks:
    """What the caller wants to hear about, and when."""

    on_progress: ProgressCallback
    should_cancel: CancelCheck
    checkpoint_steps: frozenset[int] = frozenset()
    checkpoint_every_epoch: bool = False
    on_checkpoint: CheckpointCallback | None = None
    eval_every_steps: int = 0

    def wants_checkpoint(self, step: int, epoch_end: bool) -> bool:
        if self.on_checkpoint is None:
            return False
        every_epoch = self.checkpoint_every_epoch and (step == 0 or epoch_end)
        return every_epoch or step in self.checkpoint_steps


def _finetune(
    base_model_path: Path,
    data: tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]],
    output_dir: Path,
    config: FineTuneConfig,
    hooks: _Hooks,
    extra_metadata: dict[str, Any],
) -> FineTuneResult:
    from training.engine.runtime import release_memory

    examples, validation_examples = data
    job = _Job.prepare(base_model_path, examples, config, validation_examples)
    try:
        job.train(hooks)
        duration = time.perf_counter() - job.run.started
        meta = job.metadata(duration) | extra_metadata
        job.save(output_dir, meta)
        return FineTuneResult(
            output_dir=output_dir,
            total_steps=job.run.total_steps,
            duration_seconds=duration,
            tokens_per_second=meta["tokens_per_second"],
            final_loss=job.run.loss_history[-1][1],
            loss_history=list(job.run.loss_history),
            train_tokens=job.run.tokens_done,
            metadata=meta,
            validation_history=list(job.run.validation_history),
        )
    finally:
        # A failure's traceback keeps this frame, and a caller may keep a Checkpoint: neither
        # should keep the model and the optimizer states alive.
        job.release()
        release_memory()


@dataclass
class _Job:
    """Everything one fine-tune works with, from loading to saving."""

    base_model_path: Path
    config: FineTuneConfig
    device: torch.device
    use_bf16: bool
    model: Any
    tokenizer: Any
    encoded: list[EncodedExample]
    steps: list[Step]
    optimizer: Any  # master_weights.MasterWeightOptimizer (a torch module)
    run: _Run
    started_at: datetime
    validation: list[EncodedExample] = field(default_factory=list)

    @classmethod
    def prepare(
        cls,
        base_model_path: Path,
        examples: Sequence[Mapping[str, Any]],
        config: FineTuneConfig,
        validation_examples: Sequence[Mapping[str, Any]] = (),
    ) -> _Job:
        import torch

        from training.engine.data import encode_examples
        from training.engine.loading import is_adapter_dir, load_for_training
        from training.engine.runtime import map_large_allocations, pick_device, resolve_bf16

        if config.method == "lora" and is_adapter_dir(base_model_path):
            raise EngineError("LoRA on top of a LoRA adapter is not supported: use 'full'.")
        device = pick_device()
        use_bf16 = resolve_bf16(config.bf16, device)
        if config.activation_checkpointing:
            # Memory over speed: freed blocks leave the process (each step re-faults them).
            map_large_allocations()
        torch.manual_seed(config.seed)  # LoRA initialisation and dropout
        lora = {"r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout}
        model, tokenizer = load_for_training(
            base_model_path, method=config.method, lora_config=lora, bf16=use_bf16, device=device
        )
        encoded = encode_examples(tokenizer, examples, config.max_seq_len)
        pick_attention(model, device, max(e.n_tokens for e in encoded))
        if config.activation_checkpointing:
            checkpoint_activations(model)
        steps = plan_steps(encoded, config)
        trainable = [p for p in model.parameters() if p.requires_grad]
        run = _Run(
            total_steps=len(steps),
            total_tokens=sum(s.tokens for s in steps),
            steps_per_epoch=sum(s.epoch == 0 for s in steps),
        )
        return cls(
            base_model_path, config, device, use_bf16, model, tokenizer, encoded, steps,
            make_optimizer(trainable, config), run, datetime.now(UTC),
            encode_examples(tokenizer, validation_examples, config.max_seq_len)
            if validation_examples else [],
        )  # fmt: skip

    def train(self, hooks: _Hooks) -> None:
        """Run every planned optimizer step, reporting after each."""
        from training.engine.runtime import trim_heap

        parts = head_parts(self.model)
        pad_id = self.tokenizer.pad_token_id
        self.run.started = time.perf_counter()
        self._validate(hooks, parts, 0, epoch_end=False)
        self._checkpoint(hooks, 0, epoch_end=False)
        for index, step in enumerate(self.steps):
            step_loss = 0.0
            for batch in step.micro_batches:
                if hooks.should_cancel():
                    raise Cancelled()
                ids, attention, labels = batch_tensors(self.encoded, batch, pad_id, self.device)
                loss = loss_sum(self.model, parts, ids, attention, labels) / step.label_tokens
                loss.backward()
                step_loss += float(loss.detach())
            if not math.isfinite(step_loss):
                raise EngineError(
                    f"The loss became {step_loss} at step {index + 1}: lower the learning rate."
                )
            lr = lr_at(index, len(self.steps), self.config)
            self.optimizer.step(lr)
            if self.config.activation_checkpointing:
                trim_heap()  # cheap here: without stored activations little is re-faulted
            self.run.tokens_done += step.tokens
            self.run.loss_history.append((index + 1, step_loss))
            hooks.on_progress(self.run.event(index + 1, step_loss, lr))
            is_last = index + 1 == len(self.steps)
            epoch_end = is_last or self.steps[index + 1].epoch != step.epoch
            self._validate(hooks, parts, index + 1, epoch_end=epoch_end)
            self._checkpoint(hooks, index + 1, epoch_end=epoch_end)

    def release(self) -> None:
        """Drop the model, the optimizer and the data, so their memory can be freed."""
        self.model = self.optimizer = None
        self.encoded, self.steps, self.validation = [], [], []

    def _validate(self, hooks: _Hooks, parts: Any, step: int, *, epoch_end: bool) -> None:
        """Measure and report the validation loss when it is due (not training time)."""
        every = hooks.eval_every_steps
        if not self.validation or not wants_validation(step, epoch_end=epoch_end, every=every):
            return
        began = time.perf_counter()
        loss = validation_loss(
            self.model, parts, self.validation, self.tokenizer.pad_token_id, self.device,
            self.config.batch_size,
        )  # fmt: skip
        self.run.validation_history.append((step, loss))
        epoch = step / self.run.steps_per_epoch if self.run.steps_per_epoch else 0.0
        event = ValidationEvent(step, self.run.total_steps, epoch, loss, len(self.validation))
        hooks.on_progress(event)
        self.run.started += time.perf_counter() - began

    def _checkpoint(self, hooks: _Hooks, step: int, *, epoch_end: bool) -> None:
        """Hand the caller a checkpoint if it asked for this step; its time is not
        training time, so the clock is moved on by as much."""
        if not hooks.wants_checkpoint(step, epoch_end):
            return
        began = time.perf_counter()
        epoch = step / self.run.steps_per_epoch if self.run.steps_per_epoch else 0.0
        hooks.on_checkpoint(Checkpoint(step=step, epoch=epoch, epoch_end=epoch_end, _job=self))
        self.run.started += time.perf_counter() - began

    def metadata(self, duration: float) -> dict[str, Any]:
        """Hyperparameters, figures and versions for ``palms_metadata.json``."""
        import peft
        import torch
        import transformers

        run, encoded = self.run, self.encoded
        return {
            "engine": "palmsweb-local",
            "method": self.config.method,
            "base_model_path": str(self.base_model_path.resolve()),
            "hyperparameters": self.config.to_dict(),
            "precision": "bf16 weights, fp32 master weights" if self.use_bf16 else "fp32",
            "device": str(self.device),
            "started_at": self.started_at.isoformat(),
            "duration_seconds": round(duration, 3),
            "tokens_per_second": round(run.tokens_done / max(duration, 1e-9), 2),
            "total_steps": run.total_steps,
            "examples": len(encoded),
            "truncated_examples": sum(e.truncated for e in encoded),
            "train_tokens_per_epoch": sum(e.n_tokens for e in encoded),
            "answer_tokens_per_epoch": sum(e.n_label_tokens for e in encoded),
            "train_tokens": run.tokens_done,
            "final_loss": run.loss_history[-1][1],
            "loss_history": [[step, round(loss, 6)] for step, loss in run.loss_history],
            **validation_metadata(self.run.validation_history, len(self.validation)),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "trainable_parameters": sum(p.numel() for p in self.optimizer.params),
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
            },
        }

    def save(self, output_dir: Path, meta: dict[str, Any], *, keep_training: bool = False) -> None:
        """Write weights or adapter, tokenizer and metadata to a temporary sibling dir,
        then rename it into place, so nobody ever sees half a model. ``keep_training``
        leaves the model as it was, so training can go on (a checkpoint)."""
        import shutil
        import tempfile

        output_dir.parent.mkdir(parents=True, exist_ok=True)
        if output_dir.exists():
            output_dir.rmdir()  # empty (checked before training)
        tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
        try:
            if self.config.method == "lora":
                _save_adapter(self.model, self.base_model_path, tmp)
            elif keep_training:
                with _tensors_restored(self.model):
                    _save_full(self.model, self.optimizer, self.base_model_path, tmp)
            else:
                _save_full(self.model, self.optimizer, self.base_model_path, tmp)
            self.tokenizer.save_pretrained(tmp)
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
            tmp.chmod(0o755)
            tmp.rename(output_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# --- saving --------------------------------------------------------------------------------


def _save_full(model, optimizer: Any, base_model_path: Path, tmp: Path):
    import torch

    from training.engine.loading import adapter_base_path, is_adapter_dir

    # Save in the base checkpoint's precision, from the fp32 masters: bf16 rounding would
    # erase much of a small-learning-rate fine-tune.
    source = adapter_base_path(base_model_path) if is_adapter_dir(base_model_path) else None
    config_file = (source or base_model_path) / "config.json"
    stored = json.loads(config_file.read_text())
    name = stored.get("dtype") or stored.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name), torch.float32)
    optimizer.write_masters_into(dtype)
    model.to(dtype)
    model.config.use_cache = True
    model.save_pretrained(tmp, safe_serialization=True)


@contextmanager
def _tensors_restored(model) -> Iterator[None]:
    """Put every parameter, buffer and the KV-cache setting back as they were on exit:
    ``_save_full`` casts the model and writes the fp32 masters into it."""
    params = [(p, p.data) for p in model.parameters()]
    buffers = [(m, name, b) for m in model.modules() for name, b in m._buffers.items()]
    use_cache = model.config.use_cache
    try:
        yield
    finally:
        for param, data in params:
            param.data = data
        for module, name, buffer in buffers:
            module._buffers[name] = buffer
        model.config.use_cache = use_cache


def _save_adapter(model, base_model_path: Path, tmp: Path) -> None:
    for peft_config in model.peft_config.values():
        peft_config.base_model_name_or_path = str(Path(base_model_path).resolve())
    model.save_pretrained(tmp)
