"""Local fine-tuning (full or LoRA) with our own torch loop.

Why not ``transformers.Trainer``: on a CPU the wins come from things it does not do by default
(bf16 weights with fp32 master copies, length-grouped batches without padding waste, a
chunked LM-head loss on answer tokens only), and we need progress events and cancellation
at every optimizer step. torch is imported inside the functions that use it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.engine.config import FineTuneConfig, FineTuneResult, ProgressEvent
from training.engine.config import default_config_for as default_config_for
from training.engine.data import EncodedExample
from training.engine.data import estimate_tokens as estimate_tokens
from training.engine.errors import Cancelled, EngineError
from training.engine.runtime import is_out_of_memory, peak_device_memory
from training.engine.saving import METADATA_FILE as METADATA_FILE
from training.engine.saving import save_adapter, save_full, tensors_restored, write_model_dir
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
    BestValidation,
    ValidationEvent,
    check_validation_settings,
    validation_loss,
    validation_metadata,
    wants_validation,
)

if TYPE_CHECKING:
    import torch

ProgressCallback = Callable[[ProgressEvent | ValidationEvent], None]
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class Checkpoint:
    """The fine-tune as it stands after ``step`` optimizer steps (0: the starting weights),
    handed to ``on_checkpoint``. ``epoch_end`` is True at the last step of an epoch."""

    step: int
    epoch: float
    epoch_end: bool
    _job: LocalJob = field(repr=False)

    def projections(self, prompts: Sequence[Any], direction: Any) -> list[float]:
        """Persona projections of ``prompts`` with the weights as they are now, in fp32 from
        the master copies: the model a save would write, measured as a saved one is. (The
        bf16 working weights lag behind: small updates round away in bf16.)"""
        import torch

        from training.engine.persona import model_projections

        model = self._job.model
        with tensors_restored(model):
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
        meta.pop("saved_checkpoint", None)  # this save holds the weights of ``step``
        meta |= {"checkpoint_step": self.step} | dict(metadata or {})
        self._job.save(output_dir, meta, keep_training=True)
        return output_dir


CheckpointCallback = Callable[[Checkpoint], None]


# --- running -------------------------------------------------------------------------------


@dataclass
class TrainingRun:
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
    if config.keep_best_validation and not validation_examples:
        raise EngineError("keep_best_validation needs validation examples.")
    hooks = _Hooks(
        on_progress=on_progress or (lambda event: None),
        should_cancel=should_cancel or (lambda: False),
        checkpoint_steps=frozenset(checkpoint_steps),
        checkpoint_every_epoch=checkpoint_every_epoch,
        on_checkpoint=on_checkpoint,
        eval_every_steps=eval_every_steps,
    )
    with readable_failures(config):
        data = (examples, validation_examples)
        return _finetune(Path(base_model_path), data, output_dir, config, hooks,
                         dict(metadata or {}))  # fmt: skip


@contextmanager
def readable_failures(config: FineTuneConfig) -> Iterator[None]:
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
    job = LocalJob.prepare(base_model_path, examples, config, validation_examples)
    try:
        job.train(hooks)
        return job.save_result(output_dir, extra_metadata)
    finally:
        # A failure's traceback keeps this frame, and a caller may keep a Checkpoint: neither
        # should keep the model and the optimizer states alive.
        job.release()
        release_memory()


@dataclass
class LocalJob:
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
    run: TrainingRun
    started_at: datetime
    validation: list[EncodedExample] = field(default_factory=list)
    best: BestValidation = field(default_factory=BestValidation)

    @classmethod
    def prepare(
        cls,
        base_model_path: Path,
        examples: Sequence[Mapping[str, Any]],
        config: FineTuneConfig,
        validation_examples: Sequence[Mapping[str, Any]] = (),
        *,
        device: torch.device | None = None,
        load_device: torch.device | None = None,
        with_optimizer: bool = True,
    ) -> LocalJob:
        """Load, encode and plan. A distributed rank passes its ``device``, loads a model
        to be sharded on ``load_device`` (the CPU) and makes its optimizer after sharding
        (``with_optimizer=False``)."""
        import torch

        from training.engine.data import encode_examples
        from training.engine.loading import is_adapter_dir, load_for_training
        from training.engine.runtime import map_large_allocations, pick_device, resolve_bf16

        if config.method == "lora" and is_adapter_dir(base_model_path):
            raise EngineError("LoRA on top of a LoRA adapter is not supported: use 'full'.")
        device = device or pick_device()
        use_bf16 = resolve_bf16(config.bf16, device)
        if config.activation_checkpointing:
            # Memory over speed: freed blocks leave the process (each step re-faults them).
            map_large_allocations()
        torch.manual_seed(config.seed)  # LoRA initialisation and dropout
        lora = {"r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout}
        model, tokenizer = load_for_training(
            base_model_path,
            method=config.method,
            lora_config=lora,
            bf16=use_bf16,
            device=load_device or device,
        )
        encoded = encode_examples(tokenizer, examples, config.max_seq_len)
        pick_attention(model, device, max(e.n_tokens for e in encoded))
        if config.activation_checkpointing:
            checkpoint_activations(model)
        steps = plan_steps(encoded, config)
        trainable = [p for p in model.parameters() if p.requires_grad]
        run = TrainingRun(
            total_steps=len(steps),
            total_tokens=sum(s.tokens for s in steps),
            steps_per_epoch=sum(s.epoch == 0 for s in steps),
        )
        return cls(
            base_model_path, config, device, use_bf16, model, tokenizer, encoded, steps,
            make_optimizer(trainable, config) if with_optimizer else None, run,
            datetime.now(UTC),
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
        self.restore_best()

    def restore_best(self) -> None:
        """With ``keep_best_validation``, put back the weights of the best validation
        measurement (unless they are the last step's), so the save writes those."""
        if self.best.weights is None:
            return
        if self.best.step != self.run.total_steps:
            self.optimizer.load_weights(self.best.weights)
        self.best.weights = None

    def release(self) -> None:
        """Drop the model, the optimizer and the data, so their memory can be freed."""
        self.model = self.optimizer = None
        self.encoded, self.steps, self.validation = [], [], []
        self.best.weights = None

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
        if self.config.keep_best_validation:
            self.best.offer(step, loss, self.optimizer.copy_weights)
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
            **peak_device_memory(self.device),
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
            **self.best.metadata(run.total_steps),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "trainable_parameters": sum(p.numel() for p in self.optimizer.params),
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
            },
        }

    def save_result(self, output_dir: Path, extra_metadata: Mapping[str, Any]) -> FineTuneResult:
        """Save the trained model with its metadata and say what the run did: the end of
        every objective (SFT, DPO)."""
        duration = time.perf_counter() - self.run.started
        meta = self.metadata(duration) | dict(extra_metadata)
        self.save(output_dir, meta)
        return FineTuneResult(
            output_dir=output_dir,
            total_steps=self.run.total_steps,
            duration_seconds=duration,
            tokens_per_second=meta["tokens_per_second"],
            final_loss=self.run.loss_history[-1][1],
            loss_history=list(self.run.loss_history),
            train_tokens=self.run.tokens_done,
            metadata=meta,
            validation_history=list(self.run.validation_history),
        )

    def save(self, output_dir: Path, meta: dict[str, Any], *, keep_training: bool = False) -> None:
        """Write weights or adapter, tokenizer and metadata to a temporary sibling dir,
        then rename it into place, so nobody ever sees half a model. ``keep_training``
        leaves the model as it was, so training can go on (a checkpoint)."""

        def write_weights(tmp: Path) -> None:
            if self.config.method == "lora":
                save_adapter(self.model, self.base_model_path, tmp)
            elif keep_training:
                with tensors_restored(self.model):
                    save_full(self.model, self.optimizer, self.base_model_path, tmp)
            else:
                save_full(self.model, self.optimizer, self.base_model_path, tmp)

        write_model_dir(output_dir, write_weights, self.tokenizer, meta)
