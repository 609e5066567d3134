"""The training loop of one rank of a distributed fine-tune (DDP or FSDP2), and the save.

This module imports torch; only the rank program (``distributed.py``) imports it.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from training.engine import distributed_loading as sharded_loading
from training.engine.config import FineTuneConfig, ProgressEvent
from training.engine.distributed import CANCEL_FILE, EVENTS_FILE
from training.engine.distributed_plan import per_rank_batch_size, rank_micro_batches
from training.engine.errors import Cancelled, EngineError
from training.engine.finetune import LocalJob
from training.engine.saving import (
    base_checkpoint_dtype,
    save_adapter,
    write_model_dir,
)
from training.engine.steps import batch_tensors, head_parts, loss_sum, lr_at
from training.engine.validation import ValidationEvent, wants_validation


class AnswerLoss(torch.nn.Module):
    """The summed answer-token loss as a module, so that DDP and FSDP2 see the whole
    forward pass: their hooks (gradient buckets, parameter all-gathers) run on a module's
    ``forward``, and the loss reaches past the model's own forward to the LM head."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids, attention, labels) -> torch.Tensor:
        return loss_sum(self.model, head_parts(self.model), ids, attention, labels)


class ShardedAdamW:
    """AdamW over FSDP2's sharded fp32 parameters, with the same ``step(lr)`` as the
    one-device optimizer (which keeps bf16 masters in its own layout and cannot take
    DTensors): global-norm clipping across the shards, the update, gradients cleared."""

    def __init__(self, params: list[torch.nn.Parameter], config: FineTuneConfig) -> None:
        self.params = params
        self.max_grad_norm = config.max_grad_norm
        self.optimizer = torch.optim.AdamW(
            params, lr=config.learning_rate, weight_decay=config.weight_decay
        )

    def step(self, lr: float) -> None:
        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def copy_weights(self) -> list[torch.Tensor]:
        """This rank's fp32 shards as they are now, on the CPU (``keep_best_validation``)."""
        with torch.no_grad():  # to_local() is then the shard itself, not an autograd view
            return [p.to_local().to("cpu", copy=True) for p in self.params]

    def load_weights(self, saved: list[torch.Tensor]) -> None:
        """Put back the shards :meth:`copy_weights` took."""
        with torch.no_grad():
            for param, shard in zip(self.params, saved, strict=True):
                param.to_local().copy_(shard)


@dataclass
class DistributedTrainer:
    """A :class:`LocalJob` whose loss module is wrapped for DDP or sharded with FSDP2."""

    job: LocalJob
    strategy: str
    wrapped: Any  # DDP(AnswerLoss) or the FSDP2-sharded AnswerLoss
    rank: int
    world_size: int
    mixed_bf16: bool = False
    eval_every_steps: int = 0

    @classmethod
    def prepare(cls, *, base_model_path: Path, examples, config: FineTuneConfig, strategy: str,
                device: torch.device) -> DistributedTrainer:  # fmt: skip
        rank, world = dist.get_rank(), dist.get_world_size()
        if strategy == "ddp":
            job = LocalJob.prepare(base_model_path, examples, config, device=device)
            ddp = torch.nn.parallel.DistributedDataParallel
            ids = [device.index] if device.type == "cuda" else None
            return cls(job, strategy, ddp(AnswerLoss(job.model), device_ids=ids), rank, world)
        # FSDP2 shards fp32 parameters and computes in bf16 through its mixed-precision
        # policy; only rank 0 reads the weights (distributed_loading.py) and each rank
        # keeps only its shards.
        from training.engine.runtime import resolve_bf16

        mixed = resolve_bf16(config.bf16, device)
        job = LocalJob.prepare(
            base_model_path, examples, replace(config, bf16=False),
            device=device, load_device=sharded_loading.load_device(rank), with_optimizer=False,
        )  # fmt: skip
        root = AnswerLoss(job.model)
        full_state = sharded_loading.full_state_before_sharding(root)
        wrapped = _fully_shard(root, device, mixed)
        sharded_loading.fill_shards(wrapped, full_state, device)
        del full_state
        trainable = [p for p in job.model.parameters() if p.requires_grad]
        job.optimizer = ShardedAdamW(trainable, config)
        return cls(job, strategy, wrapped, rank, world, mixed)

    def attach_validation(self, examples: list[dict[str, Any]], eval_every_steps: int) -> None:
        """Validation examples, encoded as the training ones, measured when
        ``validation.wants_validation`` says (the same steps as on one device)."""
        from training.engine.data import encode_examples

        job = self.job
        job.validation = (
            encode_examples(job.tokenizer, examples, job.config.max_seq_len) if examples else []
        )
        self.eval_every_steps = eval_every_steps

    def train(self, run_dir: Path) -> None:
        """Every planned step, this rank's share of its examples; rank 0 reports. With
        ``keep_best_validation`` the best measurement's weights are put back at the end."""
        job, world = self.job, self.world_size
        per_rank = per_rank_batch_size(job.config.batch_size, job.config.grad_accum, world)
        pad_id = job.tokenizer.pad_token_id
        job.run.started = time.perf_counter()
        self._validate(run_dir, 0, epoch_end=False)
        for index, step in enumerate(job.steps):
            if self._cancel_agreed(run_dir):
                raise Cancelled()
            members = [i for batch in step.micro_batches for i in batch]
            mine = rank_micro_batches(members, self.rank, world, per_rank)
            step_loss = torch.zeros((), dtype=torch.float64, device=job.device)
            for k, batch in enumerate(mine):
                with self._sync(last=k == len(mine) - 1):
                    # An empty share still runs a pass (weight 0), so collectives line up.
                    ids, attention, labels = batch_tensors(
                        job.encoded, batch or members[:1], pad_id, job.device
                    )
                    # DDP and FSDP2 average gradients over the ranks: scale by the world size
                    # so the step's gradient is the sum over its answer tokens, as on one device.
                    weight = world / step.label_tokens if batch else 0.0
                    loss = self.wrapped(ids, attention, labels) * weight
                    loss.backward()
                    step_loss += loss.detach().double() / world
            dist.all_reduce(step_loss)
            value = float(step_loss)
            if value != value or value in (float("inf"), float("-inf")):
                raise EngineError(
                    f"The loss became {value} at step {index + 1}: lower the learning rate."
                )
            lr = lr_at(index, len(job.steps), job.config)
            job.optimizer.step(lr)
            job.run.tokens_done += step.tokens  # the whole step, all ranks together
            job.run.loss_history.append((index + 1, value))
            if self.rank == 0:
                _append_event(run_dir, job.run.event(index + 1, value, lr))
            is_last = index + 1 == len(job.steps)
            epoch_end = is_last or job.steps[index + 1].epoch != step.epoch
            self._validate(run_dir, index + 1, epoch_end=epoch_end)
        job.restore_best()

    def _validate(self, run_dir: Path, step: int, *, epoch_end: bool) -> None:
        """Measure the validation loss when it is due (every rank: the loss is summed over
        them); rank 0 reports it. Its time is not training time."""
        job = self.job
        due = wants_validation(step, epoch_end=epoch_end, every=self.eval_every_steps)
        if not job.validation or not due:
            return
        began = time.perf_counter()
        loss = self._validation_loss()
        job.run.validation_history.append((step, loss))
        if job.config.keep_best_validation:  # every rank: with FSDP2 each keeps its shards
            job.best.offer(step, loss, job.optimizer.copy_weights)
        if self.rank == 0:
            epoch = step / job.run.steps_per_epoch if job.run.steps_per_epoch else 0.0
            event = ValidationEvent(step, job.run.total_steps, epoch, loss, len(job.validation))
            _append_event(run_dir, event, kind="validation")
        job.run.started += time.perf_counter() - began

    def _validation_loss(self) -> float:
        """Mean answer-token loss of the validation examples, each rank scoring every
        world-th one (by length) without gradients. Every rank runs the same number of
        passes (an empty share scores one example and drops it), so that FSDP2's gathers and
        DDP's buffer broadcasts line up; the sums then meet on every rank."""
        job, world = self.job, self.world_size
        order = sorted(range(len(job.validation)), key=lambda i: job.validation[i].n_tokens)
        mine = order[self.rank :: world]
        per_pass = per_rank_batch_size(job.config.batch_size, job.config.grad_accum, world)
        passes = math.ceil(math.ceil(len(order) / world) / per_pass)
        totals = torch.zeros(2, dtype=torch.float64, device=job.device)
        self.wrapped.eval()
        try:
            with torch.no_grad():
                for k in range(passes):
                    batch = mine[k * per_pass : (k + 1) * per_pass]
                    ids, attention, labels = batch_tensors(
                        job.validation, batch or order[:1], job.tokenizer.pad_token_id, job.device
                    )
                    loss = self.wrapped(ids, attention, labels)
                    if batch:
                        totals[0] += loss.double()
                        totals[1] += sum(job.validation[i].n_label_tokens for i in batch)
        finally:
            self.wrapped.train()
        dist.all_reduce(totals)
        return float(totals[0] / totals[1].clamp(min=1))

    def _sync(self, *, last: bool):
        """Synchronise gradients only at a step's last micro-batch."""
        if self.strategy == "ddp":
            return nullcontext() if last else self.wrapped.no_sync()
        self.wrapped.set_requires_gradient_sync(last)
        return nullcontext()

    def _cancel_agreed(self, run_dir: Path) -> bool:
        """Rank 0 reads the cancel file and every rank learns its answer, so all of them
        stop before the same step."""
        asked = float(self.rank == 0 and (run_dir / CANCEL_FILE).exists())
        flag = torch.tensor(asked, device=self.job.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def save(self, output_dir: Path, extra_metadata: dict[str, Any]) -> None:
        """Rank 0 writes one ordinary model version; with FSDP2 every rank first takes part
        in gathering the full weights."""
        job = self.job
        duration = time.perf_counter() - job.run.started
        state = self._gathered_state() if self.strategy == "fsdp" else None
        if self.rank != 0:
            return
        meta = job.metadata(duration) | extra_metadata | self._metadata()
        if self.strategy == "ddp":
            job.save(output_dir, meta)
            return

        def write_weights(tmp: Path) -> None:
            if job.config.method == "lora":
                save_adapter(job.model, job.base_model_path, tmp, state_dict=state)
                return
            dtype = base_checkpoint_dtype(job.base_model_path)
            cast = {name: tensor.to(dtype) for name, tensor in _untied(job.model, state).items()}
            job.model.config.use_cache = True
            job.model.save_pretrained(tmp, state_dict=cast, safe_serialization=True)

        write_model_dir(output_dir, write_weights, job.tokenizer, meta)

    def _gathered_state(self) -> dict[str, torch.Tensor]:
        """The full (unsharded) state dict on rank 0's CPU, keys as the plain model's."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(self.wrapped, options=options)
        return {name.removeprefix("model."): tensor for name, tensor in state.items()}

    def _metadata(self) -> dict[str, Any]:
        job = self.job
        precision = "bf16 compute, fp32 sharded weights" if self.mixed_bf16 else None
        return {
            "distributed": {
                "strategy": self.strategy,
                "world_size": self.world_size,
                "per_rank_batch": per_rank_batch_size(
                    job.config.batch_size, job.config.grad_accum, self.world_size
                ),
                "backend": dist.get_backend(),
                **({"loading": sharded_loading.SUMMARY} if self.strategy == "fsdp" else {}),
            },
            "device": f"{job.device.type} x {self.world_size}",
        } | ({"precision": precision} if precision else {})


def _untied(model: Any, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop tied copies (the LM head that is the embedding) from a gathered state dict: the
    gather returns each name separately, and the checkpoint stores a tied weight once."""
    tied = getattr(model, "all_tied_weights_keys", None) or getattr(
        model, "_tied_weights_keys", None
    )
    if not isinstance(tied, dict):
        return state
    return {
        name: tensor
        for name, tensor in state.items()
        if not (name in tied and tied[name] in state and torch.equal(tensor, state[tied[name]]))
    }


def _fully_shard(loss_module: AnswerLoss, device: torch.device, bf16: bool) -> Any:
    """FSDP2: each decoder layer its own shard group (gathered only while it computes),
    then the rest (embeddings, final norm, LM head) under the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if bf16 else None,
        reduce_dtype=torch.float32 if bf16 else None,
    )
    model = loss_module.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for layer in base.get_decoder().layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    return fully_shard(loss_module, mesh=mesh, mp_policy=policy)


def _append_event(
    run_dir: Path, event: ProgressEvent | ValidationEvent, kind: str = "progress"
) -> None:
    line = json.dumps({"kind": kind, "at": time.time(), **event.__dict__})
    with (run_dir / EVENTS_FILE).open("a") as events:
        events.write(line + "\n")
