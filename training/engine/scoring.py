"""Capability checks of a local model: perplexity on held-out text, multiple choice by
log-likelihood; and the answer-only likelihood of chat examples (the held-out adherence
metric, ``evaluation/scoring/adherence.py``).

Both score text the model is given, so both need token log-probabilities: they run on
local models only. The model runs in bf16 where the device has fast bf16 (see
``load_for_inference``); log-softmax is taken in fp32 so the sums do not lose precision.
torch is imported inside the functions.

- Perplexity: ``exp(total NLL / total predicted tokens)`` over the whole set (a
  token-weighted corpus perplexity). Each text is scored on its own, truncated to
  ``max_length`` tokens; its first token has no context and is not predicted.
- Multiple choice: the prompt is ``"Question: {q}\\nAnswer:"`` and each option is scored
  as the continuation ``" {option}"``. ``sum`` picks the option with the highest summed
  log-probability; ``mean`` divides by the option's token count, which removes the bias
  towards short options. Prompt and option are tokenized separately and concatenated,
  so every option is scored on the same prompt tokens.
- Answers: each question–answer example is encoded as in training (chat template, labels
  on the answer tokens only) and the NLL of its answer tokens is summed, per example.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from training.engine.errors import EngineError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Progress = Callable[[int, int], None]  # (items done, items in this call)
MC_PROMPT = "Question: {question}\nAnswer:"


@dataclass(frozen=True)
class MCQuestion:
    question: str
    options: tuple[str, ...]
    answer: int  # index of the correct option


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    nll_per_token: float
    n_tokens: int
    n_texts: int
    per_text_nll: tuple[float, ...] = ()  # mean NLL per token of each text


@dataclass(frozen=True)
class MCResult:
    accuracy_sum: float  # by summed log-likelihood
    accuracy_mean: float  # by length-normalised (per-token) log-likelihood
    n_questions: int
    predictions_sum: tuple[int, ...] = ()
    predictions_mean: tuple[int, ...] = ()


@dataclass(frozen=True)
class CapabilityResult:
    perplexity: PerplexityResult | None
    multiple_choice: MCResult | None
    dtype: str = ""
    device: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- core


def _sequence_logprobs(
    model: PreTrainedModel,
    sequences: list[list[int]],
    score_from: list[int],
    pad_id: int,
) -> list[tuple[float, int]]:
    """For each token sequence, the summed log-probability of its tokens from index
    ``score_from[i]`` on (each predicted from the tokens before it) and their count."""
    import torch

    device = model.device
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):  # right padding: positions start at 0 anyway
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    ids, mask = ids.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    logprobs = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)
    targets = ids[:, 1:]
    picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (batch, width-1)
    # Target position t (token t+1) is scored when t+1 >= score_from and t+1 < len.
    positions = torch.arange(1, width, device=device).unsqueeze(0)
    lengths = mask.sum(-1, keepdim=True)
    starts = torch.tensor(score_from, device=device).unsqueeze(-1)
    keep = (positions >= starts) & (positions < lengths)
    totals = (picked * keep).sum(-1).tolist()
    counts = keep.sum(-1).tolist()
    return list(zip(totals, counts, strict=True))


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise EngineError("The tokenizer has neither a pad token nor an end-of-text token.")
    return pad


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int = 1024,
    on_progress: Progress | None = None,
) -> PerplexityResult:
    """Token-weighted perplexity of ``model`` on ``texts`` (see the module docstring)."""
    import torch

    encoded = [_encode(tokenizer, t)[:max_length] for t in texts]
    if not encoded or all(len(e) < 2 for e in encoded):
        raise EngineError("Perplexity needs at least one text of two or more tokens.")
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths
    per_text: dict[int, tuple[float, int]] = {}
    pad = _pad_id(tokenizer)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [i for i in order[start : start + batch_size] if len(encoded[i]) >= 2]
            if batch:
                scored = _sequence_logprobs(
                    model, [encoded[i] for i in batch], [1] * len(batch), pad
                )
                per_text.update(zip(batch, scored, strict=True))
            if on_progress:
                on_progress(min(start + batch_size, len(order)), len(order))
    total_lp = sum(lp for lp, _ in per_text.values())
    total_n = sum(n for _, n in per_text.values())
    nll = -total_lp / total_n
    return PerplexityResult(
        perplexity=math.exp(nll),
        nll_per_token=nll,
        n_tokens=int(total_n),
        n_texts=len(per_text),
        per_text_nll=tuple(
            -per_text[i][0] / per_text[i][1] if i in per_text else math.nan
            for i in range(len(encoded))
        ),
    )


def multiple_choice(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[MCQuestion],
    *,
    batch_size: int = 16,
    on_progress: Progress | None = None,
) -> MCResult:
    """Pick each question's option by log-likelihood (summed and per-token)."""
    import torch

    if not questions:
        raise EngineError("No multiple-choice questions given.")
    items: list[tuple[int, int, list[int], int]] = []  # (question, option, ids, score_from)
    for q_index, q in enumerate(questions):
        if len(q.options) < 2 or not 0 <= q.answer < len(q.options):
            raise EngineError(f"Question {q_index + 1} needs 2+ options and a valid answer.")
        prompt = _encode(tokenizer, MC_PROMPT.format(question=q.question))
        for o_index, option in enumerate(q.options):
            continuation = _encode(tokenizer, " " + option.strip())
            if not continuation:
                raise EngineError(f"Question {q_index + 1}: option {o_index + 1} is empty.")
            items.append((q_index, o_index, prompt + continuation, len(prompt)))
    scores: dict[tuple[int, int], tuple[float, int]] = {}
    pad = _pad_id(tokenizer)
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            results = _sequence_logprobs(model, [b[2] for b in batch], [b[3] for b in batch], pad)
            for (q_index, o_index, _, _), result in zip(batch, results, strict=True):
                scores[(q_index, o_index)] = result
            if on_progress:
                done_questions = len({q for q, o in scores if o == len(questions[q].options) - 1})
                on_progress(done_questions, len(questions))
    by_sum, by_mean = [], []
    for q_index, q in enumerate(questions):
        options = [scores[(q_index, o)] for o in range(len(q.options))]
        # Ties go to the first option, so the result is deterministic.
        by_sum.append(max(range(len(options)), key=lambda o: (options[o][0], -o)))
        by_mean.append(max(range(len(options)), key=lambda o: (options[o][0] / options[o][1], -o)))
    n = len(questions)
    return MCResult(
        accuracy_sum=sum(p == q.answer for p, q in zip(by_sum, questions, strict=True)) / n,
        accuracy_mean=sum(p == q.answer for p, q in zip(by_mean, questions, strict=True)) / n,
        n_questions=n,
        predictions_sum=tuple(by_sum),
        predictions_mean=tuple(by_mean),
    )


def evaluate_capability(
    model_path: Path | str,
    texts: Sequence[str],
    questions: Sequence[MCQuestion],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    batch_size: int = 8,
    on_progress: Progress | None = None,
) -> CapabilityResult:
    """Load a model (or adapter) dir once and run both checks.

    ``on_progress(done, total)`` counts texts plus questions.
    """
    from training.engine.loading import load_for_inference

    started = time.monotonic()
    model, tokenizer = load_for_inference(model_path, dtype=dtype, device=device)
    total = len(texts) + len(questions)

    def texts_progress(done: int, _total: int) -> None:
        if on_progress:
            on_progress(done, total)

    def questions_progress(done: int, _total: int) -> None:
        if on_progress:
            on_progress(len(texts) + done, total)

    ppl = perplexity(model, tokenizer, texts, batch_size=batch_size, on_progress=texts_progress)
    mc = (
        multiple_choice(
            model, tokenizer, questions, batch_size=batch_size * 2, on_progress=questions_progress
        )
        if questions
        else None
    )
    return CapabilityResult(
        perplexity=ppl,
        multiple_choice=mc,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        device=str(model.device),
        seconds=time.monotonic() - started,
    )


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class AnswerLikelihood:
    """The answer-only negative log-likelihood of each example (summed over its answer
    tokens, in nats) and how many answer tokens it has, in the order given."""

    nll: tuple[float, ...]
    tokens: tuple[int, ...]
    dtype: str = ""
    device: str = ""
    seconds: float = 0.0
    input_tokens: int = 0  # every token the model read (questions too): for FLOPs


def _labelled_nll(model: PreTrainedModel, batch: list, pad_id: int) -> list[float]:
    """Summed NLL of the labelled tokens of each encoded example (labels as in training:
    ``IGNORE_INDEX`` outside answers); log-softmax in fp32."""
    import torch

    from training.engine.data import IGNORE_INDEX

    device = model.device
    width = max(e.n_tokens for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        ids[row, : example.n_tokens] = torch.tensor(example.input_ids, dtype=torch.long)
        labels[row, : example.n_tokens] = torch.tensor(example.labels, dtype=torch.long)
        mask[row, : example.n_tokens] = 1
    ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    logprobs = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (-(picked * keep).sum(-1)).tolist()


def answer_likelihood(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[dict],
    *,
    max_seq_len: int = 1024,
    batch_size: int = 8,
    on_progress: Progress | None = None,
) -> AnswerLikelihood:
    """NLL of each chat example's answers given its question, with the model's chat
    template and the answer-only labels the fine-tune trains on (``data.encode_examples``),
    so the number is the validation loss's, per example instead of pooled."""
    import torch

    from training.engine.data import encode_examples

    encoded = encode_examples(tokenizer, examples, max_seq_len)
    order = sorted(range(len(encoded)), key=lambda i: encoded[i].n_tokens)  # little padding
    nll: dict[int, float] = {}
    pad = _pad_id(tokenizer)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            scored = _labelled_nll(model, [encoded[i] for i in batch], pad)
            nll.update(zip(batch, scored, strict=True))
            if on_progress:
                on_progress(min(start + batch_size, len(order)), len(order))
    return AnswerLikelihood(
        nll=tuple(nll[i] for i in range(len(encoded))),
        tokens=tuple(e.n_label_tokens for e in encoded),
        input_tokens=sum(e.n_tokens for e in encoded),
    )


def evaluate_answer_likelihood(
    model_path: Path | str,
    examples: Sequence[dict],
    *,
    max_seq_len: int = 1024,
    batch_size: int = 8,
    on_progress: Progress | None = None,
) -> AnswerLikelihood:
    """Load a model (or adapter) dir and score the answers of ``examples``."""
    from training.engine.loading import load_for_inference

    started = time.monotonic()
    model, tokenizer = load_for_inference(model_path)
    result = answer_likelihood(
        model, tokenizer, examples, max_seq_len=max_seq_len, batch_size=batch_size,
        on_progress=on_progress,
    )  # fmt: skip
    return AnswerLikelihood(
        nll=result.nll,
        tokens=result.tokens,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        device=str(model.device),
        seconds=time.monotonic() - started,
        input_tokens=result.input_tokens,
    )
