"""Batched local sampling with per-output seeds.

Each output (prompt_index, sample_index) gets its own seed and its own random generator, so
its text does not depend on which other outputs share its batch: a resumed run that skips the
outputs already stored samples the rest with the same seeds. Prompts are left-padded and
grouped by length, decoding uses the KV cache, and finished rows leave the batch so the
remaining ones run faster. torch is imported inside the functions that use it.
"""

from __future__ import annotations

import hashlib
import inspect
import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from training.engine.errors import Cancelled, EngineError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Top-p is first tried on the top-k tokens; only a row whose nucleus is wider than this is
# sorted in full. Exact either way, and avoids sorting 49k logits per row per token.
_TOP_K_FAST_PATH = 256


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings; ``temperature=0`` is greedy. ``seed=None`` draws a random one."""

    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 200
    seed: int | None = 0

    def validate(self) -> None:
        """Raise EngineError for values no backend accepts."""
        if not 0 <= self.temperature <= 2:
            raise EngineError("temperature must be between 0 and 2.")
        if not 0 < self.top_p <= 1:
            raise EngineError("top_p must be in (0, 1].")
        if self.max_new_tokens < 1:
            raise EngineError("max_new_tokens must be at least 1.")


@dataclass(frozen=True)
class Generation:
    """One sampled output and the seed that produced it."""

    prompt_index: int
    sample_index: int
    text: str
    tokens_generated: int
    seed: int
    finish_reason: str = "stop"  # "stop" (end-of-turn token) or "length" (max_new_tokens)


ProgressCallback = Callable[[int, int], None]  # (outputs done, outputs to do in this call)
BatchCallback = Callable[[list[Generation]], None]
CancelCheck = Callable[[], bool]


def output_seed(base_seed: int, prompt_index: int, sample_index: int) -> int:
    """The seed of one output: stable across runs, processes and machines."""
    digest = hashlib.sha256(f"{base_seed}:{prompt_index}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def pending_outputs(
    n_prompts: int, n: int, skip: Collection[tuple[int, int]] | None
) -> list[tuple[int, int]]:
    """(prompt_index, sample_index) pairs still to generate, in order."""
    done = set(skip or ())
    return [(p, s) for p in range(n_prompts) for s in range(n) if (p, s) not in done]


def resolve_seed(params: GenerationParams) -> int:
    return params.seed if params.seed is not None else secrets.randbits(31)


def generate_local(
    model_path: Path | str,
    prompts: Sequence[str],
    *,
    n: int,
    params: GenerationParams,
    batch_size: int = 24,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    system_prompt: str | None = None,
    skip: Collection[tuple[int, int]] | None = None,
    on_batch: BatchCallback | None = None,
) -> list[Generation]:
    """Sample ``n`` outputs per prompt from a local model (or adapter) dir.

    Outputs in ``skip`` are not generated (resume). ``on_progress(done, total)`` and
    ``on_batch(generations)`` run after each batch, so a caller can store outputs as they
    come; ``should_cancel`` is asked before every decoding step. Returns the new outputs
    ordered by (prompt_index, sample_index).
    """
    import torch

    from training.engine.loading import load_for_inference

    params.validate()
    if n < 1 or batch_size < 1:
        raise EngineError("n and batch_size must be at least 1.")
    todo = pending_outputs(len(prompts), n, skip)
    if not todo:
        return []
    base_seed = resolve_seed(params)
    model, tokenizer = load_for_inference(model_path)
    decoder = _Decoder(model, tokenizer, params, should_cancel or (lambda: False))
    prompt_ids = {p: encode_prompt(tokenizer, prompts[p], system_prompt) for p, _ in todo}
    # Similar lengths share a batch, so left padding wastes little.
    todo.sort(key=lambda pair: (len(prompt_ids[pair[0]]), pair))
    results: list[Generation] = []
    with torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            new = decoder.generate(batch, prompt_ids, base_seed)
            results.extend(new)
            if on_batch:
                on_batch(new)
            if on_progress:
                on_progress(len(results), len(todo))
    return sorted(results, key=lambda g: (g.prompt_index, g.sample_index))


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: str, system_prompt: str | None = None
) -> list[int]:
    """Token ids of a user prompt in the chat template, ending with the assistant header."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": prompt})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    ids.discard(None)
    return ids


class _Decoder:
    """Samples batches of outputs from one loaded model."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        params: GenerationParams,
        should_cancel: CancelCheck,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.params = params
        self.should_cancel = should_cancel
        self.stop_ids = _stop_token_ids(model, tokenizer)

    def generate(
        self, batch: list[tuple[int, int]], prompt_ids: dict[int, list[int]], base_seed: int
    ) -> list[Generation]:
        """Outputs for (prompt_index, sample_index) pairs, decoded together."""
        seeds = [output_seed(base_seed, p, s) for p, s in batch]
        rows = self._decode([prompt_ids[p] for p, _ in batch], seeds)
        return [
            Generation(
                prompt_index=p,
                sample_index=s,
                text=self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                tokens_generated=len(tokens) + stopped,  # the end-of-turn token counts
                seed=seed,
                finish_reason="stop" if stopped else "length",
            )
            for (p, s), seed, (tokens, stopped) in zip(batch, seeds, rows, strict=True)
        ]

    def _decode(self, prompts: list[list[int]], seeds: list[int]) -> list[tuple[list[int], bool]]:
        """(new tokens without the stop token, stopped?) per row."""
        import torch

        model, params, device = self.model, self.params, self.model.device
        ids, mask = _left_pad(prompts, self.tokenizer.pad_token_id, device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        cache_arg = cache_argument(model)
        out = model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
            logits_to_keep=1,
        )  # fmt: skip
        cache, logits = returned_cache(out), out.logits[:, -1, :]
        next_positions = positions[:, -1]
        tokens: list[list[int]] = [[] for _ in prompts]
        stopped = [False] * len(prompts)
        active = list(range(len(prompts)))  # batch row -> output index
        for step in range(params.max_new_tokens):
            if self.should_cancel():
                raise Cancelled()
            chosen = _sample(logits, params, [generators[i] for i in active])
            for row, token in zip(active, chosen.tolist(), strict=True):
                if token in self.stop_ids:
                    stopped[row] = True
                else:
                    tokens[row].append(token)
            keep = [k for k, row in enumerate(active) if not stopped[row]]
            if not keep or step == params.max_new_tokens - 1:
                break
            if len(keep) < len(active):
                # Drop finished rows from the batch and the KV cache.
                index = torch.tensor(keep, device=device)
                _select_rows(cache, index)
                mask, chosen, next_positions = mask[index], chosen[index], next_positions[index]
                active = [active[k] for k in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            next_positions = next_positions + 1
            out = model(
                input_ids=chosen[:, None], attention_mask=mask,
                position_ids=next_positions[:, None], use_cache=True, **{cache_arg: cache},
            )  # fmt: skip
            cache, logits = returned_cache(out), out.logits[:, -1, :]
        return list(zip(tokens, stopped, strict=True))


def cache_argument(model) -> str:
    """The name the model's forward takes the KV cache under: ``cache`` in transformers 5.x,
    where ``past_key_values`` is deprecated and goes in 5.40 (a fresh install would then
    break sampling), and ``past_key_values`` in 4.x, which knows no other."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def returned_cache(out):
    """The KV cache a forward returned, under either name (see :func:`cache_argument`)."""
    return out["cache"] if "cache" in out else out["past_key_values"]


def _left_pad(
    prompts: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def _select_rows(cache, index: torch.Tensor) -> None:
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(index)
    else:
        cache.reorder_cache(index)


def _sample(
    logits: torch.Tensor, params: GenerationParams, generators: list[torch.Generator]
) -> torch.Tensor:
    """One token per row: greedy at temperature 0, else temperature + nucleus (top-p)."""
    import torch

    if params.temperature == 0:
        return logits.argmax(dim=-1)
    scores = logits.float() / params.temperature
    log_norm = torch.logsumexp(scores, dim=-1, keepdim=True)
    if params.top_p >= 1:
        probs = (scores - log_norm).exp()
        picks = [torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(generators)]
        return torch.cat(picks)
    top_scores, top_ids = scores.topk(min(_TOP_K_FAST_PATH, scores.shape[-1]), dim=-1)
    top_probs = (top_scores - log_norm).exp()
    covered = (top_probs.sum(dim=-1) >= params.top_p).tolist()
    chosen = []
    for row, generator in enumerate(generators):
        probs, ids = top_probs[row], top_ids[row]
        if not covered[row]:  # the nucleus is wider than the top-k: sort the whole row (rare)
            probs, ids = (scores[row] - log_norm[row]).exp().sort(descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= params.top_p, 0.0)
        chosen.append(ids[torch.multinomial(probs, 1, generator=generator)])
    return torch.cat(chosen)
