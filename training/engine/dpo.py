"""Local DPO (direct preference optimisation, Rafailov et al. 2023) with our own torch loop.

The fine-tune loop's pieces are reused as they are: loading (full or LoRA), bf16 weights
with fp32 masters, length-grouped steps, the learning-rate schedule, progress events with
ETA, cancellation before every forward pass, atomic saving and the readable failures.
What differs is the data (pairs: a prompt, a chosen and a rejected answer) and the loss:

    loss = -log sigmoid(beta * ((log pi(chosen) - log ref(chosen))
                               - (log pi(rejected) - log ref(rejected))))

with log-probabilities summed over answer tokens only. The reference log-probabilities are
computed once, up front, from the starting weights (for LoRA: the model with its adapters
switched off), so no second model is kept in memory and each step runs one forward and
one backward pass over the chosen and rejected answers together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.engine.config import FineTuneConfig, FineTuneResult, ProgressEvent
from training.engine.data import IGNORE_INDEX, EncodedExample
from training.engine.errors import Cancelled, EngineError
from training.engine.finetune import (
    CancelCheck,
    LocalJob,
    ProgressCallback,
    TrainingRun,
    readable_failures,
)
from training.engine.steps import batch_tensors, head_parts, lr_at, make_optimizer, plan_steps

if TYPE_CHECKING:
    import torch

DEFAULT_BETA = 0.1
_PAIR_KEYS = frozenset({"prompt", "chosen", "rejected", "system"})


def default_dpo_config_for(param_count: int) -> FineTuneConfig:
    """Settings for DPO on a model of ``param_count`` parameters and a few hundred pairs.

    DPO moves a model that already answers well (usually the values-targeted fine-tune), so
    its learning rates are an order of magnitude below supervised ones; from 1B parameters
    LoRA keeps memory in reach of one accelerator, as for SFT.
    """
    if param_count < 20_000_000:  # test-sized models
        return FineTuneConfig(method="full", epochs=3, learning_rate=5e-4, batch_size=4)
    if param_count < 1_000_000_000:
        return FineTuneConfig(
            method="full", epochs=2, learning_rate=5e-6, batch_size=4, warmup_steps=2
        )
    return FineTuneConfig(
        method="lora", epochs=2, learning_rate=5e-5, batch_size=2, grad_accum=4, warmup_steps=2
    )


@dataclass(frozen=True)
class DpoProgressEvent(ProgressEvent):
    """A step's mean DPO loss, plus the mean reward margin (chosen minus rejected implicit
    reward, ``beta`` times the log-ratio to the reference) and the share of pairs whose
    chosen answer has the higher reward."""

    reward_margin: float = 0.0
    reward_accuracy: float = 0.0


# --- data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedPair:
    """The two encoded conversations of one pair; sized like an example for ``plan_steps``."""

    chosen: EncodedExample
    rejected: EncodedExample

    @property
    def n_tokens(self) -> int:
        return self.chosen.n_tokens + self.rejected.n_tokens

    @property
    def n_label_tokens(self) -> int:
        return self.chosen.n_label_tokens + self.rejected.n_label_tokens

    @property
    def truncated(self) -> bool:
        return self.chosen.truncated or self.rejected.truncated


def validate_pairs(pairs: Sequence[Mapping[str, Any]]) -> None:
    """Refuse anything but a non-empty list of {prompt, chosen, rejected[, system]} texts."""
    if isinstance(pairs, str | bytes) or not isinstance(pairs, Sequence) or not pairs:
        raise EngineError("Preference data must be a non-empty list of pairs.")
    for index, pair in enumerate(pairs):
        where = f"Pair at index {index}"
        if not isinstance(pair, Mapping):
            raise EngineError(f'{where}: expected {{"prompt", "chosen", "rejected"}}.')
        unknown = set(pair) - _PAIR_KEYS
        if unknown:
            raise EngineError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}.")
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(pair.get(key), str) or not pair[key].strip():
                raise EngineError(f"{where}: {key!r} must be a non-empty text.")
        if pair["chosen"] == pair["rejected"]:
            raise EngineError(f"{where}: the chosen and rejected answers are the same text.")


def encode_pairs(tokenizer, pairs: Sequence[Mapping[str, Any]], max_seq_len: int) -> list:
    """Each pair as two chat conversations with answer-only labels (``data.encode_example``)."""
    from training.engine.data import encode_example

    def side(pair: Mapping[str, Any], answer: str, index: int) -> EncodedExample:
        messages = [{"role": "system", "content": pair["system"]}] if pair.get("system") else []
        messages += [{"role": "user", "content": pair["prompt"]},
                     {"role": "assistant", "content": answer}]  # fmt: skip
        return encode_example(tokenizer, messages, max_seq_len, index=index)

    return [
        EncodedPair(side(pair, pair["chosen"], index), side(pair, pair["rejected"], index))
        for index, pair in enumerate(pairs)
    ]


# --- the loss ----------------------------------------------------------------------------------


def sequence_logprobs(model, parts, ids, attention, labels) -> torch.Tensor:
    """Summed log-probability of each row's answer tokens, (rows,) in fp32. Only answer
    tokens go through the LM head (``losses.linear_token_logprobs``)."""
    import torch

    from training.engine.losses import linear_token_logprobs

    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    row_of_token = keep.nonzero()[:, 0]
    if parts is None:
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
        token_logps = torch.log_softmax(logits[keep].float(), -1)
        token_logps = token_logps.gather(1, targets[keep][:, None]).squeeze(1)
    else:
        decoder, head = parts
        hidden = decoder(input_ids=ids, attention_mask=attention).last_hidden_state[:, :-1]
        token_logps = linear_token_logprobs(hidden[keep], head.weight, targets[keep])
    sums = torch.zeros(ids.shape[0], dtype=torch.float32, device=ids.device)
    return sums.index_add(0, row_of_token, token_logps)


def pair_logprobs(model, parts, pairs: Sequence[EncodedPair], batch: list[int], pad_id: int,
                  device) -> torch.Tensor:  # fmt: skip
    """Summed answer log-probabilities of ``batch``'s chosen answers, then its rejected ones.

    The 2 x batch conversations run as two forward passes, the shorter half and the longer
    half, each padded to its own longest: a pair's two answers often differ in length, and
    one batch padded to the longest of all wasted 25% of the tokens on the demo pairs
    (bench/bench_dpo.py's 32), two length-sorted halves 14%. The loss couples each pair's
    two sides only after both passes, so the halves share one backward."""
    import torch

    sides = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    rows = list(batch) + [len(pairs) + i for i in batch]
    order = sorted(range(len(rows)), key=lambda k: sides[rows[k]].n_tokens)
    half = (len(order) + 1) // 2
    parts_out = []
    for group in (order[:half], order[half:]):
        if group:
            ids, attention, labels = batch_tensors(sides, [rows[k] for k in group], pad_id, device)
            parts_out.append(sequence_logprobs(model, parts, ids, attention, labels))
    inverse = torch.empty(len(order), dtype=torch.long, device=device)
    inverse[torch.tensor(order, device=device)] = torch.arange(len(order), device=device)
    return torch.cat(parts_out)[inverse]


@dataclass(frozen=True)
class DpoTerms:
    loss_sum: torch.Tensor  # summed over the batch's pairs (autograd)
    margin_sum: float
    correct: int


def dpo_terms(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> DpoTerms:
    """The sigmoid DPO loss of a batch; ``policy`` and ``reference`` hold the chosen
    log-probabilities first, then the rejected ones."""
    import torch.nn.functional as F

    n = policy.shape[0] // 2
    chosen_reward = beta * (policy[:n] - reference[:n])
    rejected_reward = beta * (policy[n:] - reference[n:])
    margins = chosen_reward - rejected_reward
    margins_now = margins.detach()
    return DpoTerms(
        loss_sum=-F.logsigmoid(margins).sum(),
        margin_sum=float(margins_now.sum()),
        correct=int((margins_now > 0).sum()),
    )


# --- running -------------------------------------------------------------------------------------


def run_dpo(
    *,
    base_model_path: Path | str,
    pairs: Sequence[Mapping[str, Any]],
    output_dir: Path | str,
    config: FineTuneConfig | None = None,
    beta: float = DEFAULT_BETA,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> FineTuneResult:
    """DPO-train a local model on preference pairs and save it to ``output_dir``.

    ``pairs``: ``{"prompt", "chosen", "rejected"}`` texts (``"system"`` optional).
    ``on_progress`` gets a :class:`DpoProgressEvent` after every optimizer step;
    ``should_cancel`` is asked before every forward pass (True raises Cancelled). The output
    dir is laid out like a fine-tune's, its ``palms_metadata.json`` adds the DPO figures.
    """
    from training.engine.loading import count_parameters

    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise EngineError(f"The output directory {output_dir} already exists and is not empty.")
    validate_pairs(pairs)  # bad data fails before the model is loaded
    if not (isinstance(beta, int | float) and 0 < beta <= 10):
        raise EngineError("beta must be above 0 and at most 10.")
    if config is None:
        config = default_dpo_config_for(count_parameters(base_model_path))
    config.validate()
    with readable_failures(config):
        return _dpo(Path(base_model_path), pairs, output_dir, config, float(beta),
                    on_progress or (lambda event: None), should_cancel or (lambda: False),
                    dict(metadata or {}))  # fmt: skip


def _dpo(base_model_path, pairs, output_dir, config, beta, on_progress, should_cancel, extra):
    from training.engine.runtime import release_memory

    job = DpoJob.prepare_pairs(base_model_path, pairs, config, beta)
    try:
        job.reference = job.reference_logprobs(should_cancel)
        job.train_dpo(on_progress, should_cancel)
        return job.save_result(output_dir, extra)
    finally:
        job.release()
        release_memory()


@dataclass
class DpoJob(LocalJob):
    """A :class:`LocalJob` whose examples are pairs: ``encoded`` holds EncodedPairs."""

    beta: float = DEFAULT_BETA
    reference: Any = None  # (2 * pairs,) fp32: chosen log-probs, then rejected
    reward_history: list[tuple[int, float, float]] = field(default_factory=list)

    @classmethod
    def prepare_pairs(cls, base_model_path: Path, pairs, config: FineTuneConfig, beta: float):
        """Load, encode and plan, as ``LocalJob.prepare`` does for chat examples."""
        import torch

        from training.engine.loading import is_adapter_dir, load_for_training
        from training.engine.runtime import map_large_allocations, pick_device, resolve_bf16
        from training.engine.steps import checkpoint_activations, pick_attention

        if config.method == "lora" and is_adapter_dir(base_model_path):
            raise EngineError("LoRA on top of a LoRA adapter is not supported: use 'full'.")
        device = pick_device()
        use_bf16 = resolve_bf16(config.bf16, device)
        if config.activation_checkpointing:
            map_large_allocations()  # as for SFT: freed blocks leave the process
        torch.manual_seed(config.seed)
        lora = {"r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout}
        model, tokenizer = load_for_training(
            base_model_path, method=config.method, lora_config=lora, bf16=use_bf16, device=device
        )
        encoded = encode_pairs(tokenizer, pairs, config.max_seq_len)
        pick_attention(model, device, max(max(p.chosen.n_tokens, p.rejected.n_tokens)
                                          for p in encoded))  # fmt: skip
        if config.activation_checkpointing:
            checkpoint_activations(model)
        steps = plan_steps(encoded, config)
        trainable = [p for p in model.parameters() if p.requires_grad]
        run = TrainingRun(
            total_steps=len(steps),
            total_tokens=sum(s.tokens for s in steps),
            steps_per_epoch=sum(s.epoch == 0 for s in steps),
        )
        optimizer = make_optimizer(trainable, config)
        return cls(base_model_path, config, device, use_bf16, model, tokenizer, encoded, steps,
                   optimizer, run, datetime.now(UTC), beta=beta)  # fmt: skip

    def reference_logprobs(self, should_cancel: CancelCheck) -> torch.Tensor:
        """The starting model's answer log-probabilities of every pair, computed once: dropout
        off and, for LoRA, the adapters switched off (the model the run starts from)."""
        import torch

        parts = head_parts(self.model)
        pairs, pad_id = self.encoded, self.tokenizer.pad_token_id
        chosen = torch.empty(len(pairs), dtype=torch.float32, device=self.device)
        rejected = torch.empty_like(chosen)
        size = self.config.batch_size
        self.model.eval()
        try:
            with torch.no_grad(), _adapters_off(self.model):
                for start in range(0, len(pairs), size):
                    if should_cancel():
                        raise Cancelled()
                    batch = list(range(start, min(start + size, len(pairs))))
                    logps = pair_logprobs(self.model, parts, pairs, batch, pad_id, self.device)
                    chosen[batch] = logps[: len(batch)]
                    rejected[batch] = logps[len(batch) :]
        finally:
            self.model.train()
        return torch.cat([chosen, rejected])

    def train_dpo(self, on_progress: ProgressCallback, should_cancel: CancelCheck) -> None:
        """Run every planned optimizer step, reporting loss, margin and accuracy after each.
        The clock started before the reference pass: its time is training time too."""
        parts = head_parts(self.model)
        pad_id, n = self.tokenizer.pad_token_id, len(self.encoded)
        for index, step in enumerate(self.steps):
            step_pairs = sum(len(batch) for batch in step.micro_batches)
            loss_total = margin_total = 0.0
            correct = 0
            for batch in step.micro_batches:
                if should_cancel():
                    raise Cancelled()
                policy = pair_logprobs(self.model, parts, self.encoded, batch, pad_id, self.device)
                reference = self.reference[batch + [n + i for i in batch]]
                terms = dpo_terms(policy, reference, self.beta)
                (terms.loss_sum / step_pairs).backward()
                loss_total += float(terms.loss_sum.detach()) / step_pairs
                margin_total += terms.margin_sum
                correct += terms.correct
            if not math.isfinite(loss_total):
                raise EngineError(
                    f"The loss became {loss_total} at step {index + 1}: lower the learning rate."
                )
            lr = lr_at(index, len(self.steps), self.config)
            self.optimizer.step(lr)
            self.run.tokens_done += step.tokens
            self.run.loss_history.append((index + 1, loss_total))
            margin, accuracy = margin_total / step_pairs, correct / step_pairs
            self.reward_history.append((index + 1, margin, accuracy))
            event = self.run.event(index + 1, loss_total, lr)
            on_progress(DpoProgressEvent(**vars(event), reward_margin=margin,
                                         reward_accuracy=accuracy))  # fmt: skip

    def metadata(self, duration: float) -> dict[str, Any]:
        """The fine-tune's metadata, with the DPO settings and the reward curve."""
        meta = super().metadata(duration)
        meta |= {
            "objective": "dpo",
            "dpo_beta": self.beta,
            "pairs": len(self.encoded),
            "reference": "starting weights, log-probabilities computed once before training",
            "reward_history": [[s, round(m, 6), round(a, 4)] for s, m, a in self.reward_history],
        }
        meta.pop("examples", None)
        return meta

    def release(self) -> None:
        super().release()
        self.reference = None


def _adapters_off(model):
    """peft's adapter switch for a LoRA model; nothing to switch for a full fine-tune."""
    from contextlib import nullcontext

    return model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
