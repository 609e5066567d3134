"""Sampling through vLLM's offline engine on a GPU worker, and the choice between it and
our batched generator (``generation.generate_local``).

When vLLM is installed (the optional ``gpu`` extra) and the worker has a CUDA device, a local
model version samples through ``vllm.LLM``: every pending output is one request, with its
own ``SamplingParams`` carrying the same per-output seed as our generator
(``generation.output_seed``), and the prompts are the same chat-template token ids
(``generation.encode_prompt``), sent as ``{"prompt_token_ids": ...}``. A LoRA adapter dir
loads its base model with ``enable_lora=True`` and samples through a ``LoRARequest``; the
adapter is not merged. The requests go to vLLM in large chunks (one for a PALMS-sized study),
each stored as it lands; a cancel is seen between chunks.

The same seed does not give the same text under both backends (their samplers draw
differently), so each output records which backend and version produced it.

Only ``bench/gpu_check.py`` on a CUDA machine runs the vLLM path itself; the tests here run
the choice and the mapping of results, which need no vLLM.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.engine.errors import Cancelled, EngineError
from training.engine.generation import (
    BatchCallback,
    CancelCheck,
    Generation,
    GenerationParams,
    encode_prompt,
    output_seed,
    pending_outputs,
    resolve_seed,
)

VLLM = "vllm"
TRANSFORMERS = "transformers"
PREFERENCES = ("auto", VLLM, TRANSFORMERS)
VLLM_CHUNK = 2048  # requests per generate call: a cancel and a store happen between chunks
# vLLM accepts these adapter ranks (``max_lora_rank``); an adapter's rank is rounded up.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class Sampler:
    """Which backend samples a local model, and its library version (stored per output)."""

    backend: str
    version: str

    def __str__(self) -> str:
        return f"{self.backend} {self.version}".strip()


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def vllm_unavailable() -> str | None:
    """Why vLLM cannot sample on this worker, or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install '.[gpu]')"
    import torch

    if not torch.cuda.is_available():
        return "this worker has no CUDA device"
    return None


def choose_sampler(preference: str = "auto") -> Sampler:
    """``auto``: vLLM where it can run, else our generator; ``vllm`` insists (a clear error
    where it cannot run); ``transformers`` never uses vLLM."""
    if preference not in PREFERENCES:
        raise EngineError(f"Unknown sampling engine {preference!r}: use one of {PREFERENCES}.")
    if preference != TRANSFORMERS:
        reason = vllm_unavailable()
        if reason is None:
            return Sampler(VLLM, package_version("vllm"))
        if preference == VLLM:
            raise EngineError(f"SAMPLING_ENGINE is 'vllm', but {reason}.")
    return Sampler(TRANSFORMERS, package_version("transformers"))


# --- requests and results (no vLLM needed) -------------------------------------------------


def request_settings(params: GenerationParams, seed: int, stop_ids: Collection[int]) -> dict:
    """The ``SamplingParams`` keywords of one output: our sampling settings and its seed.
    Temperature 0 is greedy in vLLM too."""
    return {
        "n": 1,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_new_tokens,
        "seed": seed,
        "stop_token_ids": sorted(stop_ids),
        "skip_special_tokens": True,
    }


def build_requests(
    tokenizer: Any, prompts: Sequence[str], todo: list[tuple[int, int]],
    params: GenerationParams, base_seed: int, stop_ids: Collection[int],
    system_prompt: str | None = None,
) -> list[tuple[dict, dict]]:  # fmt: skip
    """(prompt, sampling keywords) per pending output, in ``todo``'s order."""
    ids = {p: encode_prompt(tokenizer, prompts[p], system_prompt) for p, _ in todo}
    return [
        ({"prompt_token_ids": ids[p]}, request_settings(params, output_seed(base_seed, p, s),
                                                        stop_ids))
        for p, s in todo
    ]  # fmt: skip


def to_generation(pair: tuple[int, int], seed: int, completion: Any) -> Generation:
    """One of vLLM's ``CompletionOutput`` (``text``, ``token_ids``, ``finish_reason``) as our
    Generation. Its token ids include the stop token when it stopped on one, as our
    generator counts it."""
    reason = completion.finish_reason
    return Generation(
        prompt_index=pair[0], sample_index=pair[1], text=completion.text.strip(),
        tokens_generated=len(completion.token_ids), seed=seed,
        finish_reason="length" if reason == "length" else "stop",
    )  # fmt: skip


def lora_rank_bound(adapter_dir: Path) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds this adapter's rank."""
    rank = int(json.loads((adapter_dir / "adapter_config.json").read_text()).get("r", 16))
    for bound in VLLM_LORA_RANKS:
        if rank <= bound:
            return bound
    raise EngineError(f"The adapter's rank {rank} is above what vLLM serves (512).")


# --- the vLLM path (CUDA and vLLM only: exercised by bench/gpu_check.py) -------------------


def generate_vllm(
    model_path: Path | str, prompts: Sequence[str], *, n: int, params: GenerationParams,
    should_cancel: CancelCheck | None = None, system_prompt: str | None = None,
    skip: Collection[tuple[int, int]] | None = None, on_batch: BatchCallback | None = None,
    gpu_memory_utilization: float = 0.85,
) -> list[Generation]:  # fmt: skip
    """``generation.generate_local``'s contract through vLLM's offline engine."""
    from training.engine.loading import adapter_base_path, is_adapter_dir, load_tokenizer

    params.validate()
    todo = pending_outputs(len(prompts), n, skip)
    if not todo:
        return []
    should_cancel = should_cancel or (lambda: False)
    base_seed = resolve_seed(params)
    path = Path(model_path)
    adapter = is_adapter_dir(path)
    tokenizer = load_tokenizer(path)  # the adapter dir keeps the chat template it trained on
    stop_ids = {i for i in (tokenizer.eos_token_id,) if i is not None}
    requests = build_requests(tokenizer, prompts, todo, params, base_seed, stop_ids,
                              system_prompt)  # fmt: skip
    llm, lora = _engine(path, adapter_base_path(path) if adapter else path, adapter,
                        gpu_memory_utilization)  # fmt: skip
    try:
        return _run_chunks(llm, lora, todo, requests, base_seed, should_cancel, on_batch)
    finally:
        llm = lora = None  # the last reference: the engine shuts down before the next loads
        _free_gpu_memory()


def _engine(path: Path, base: Path, adapter: bool, gpu_memory_utilization: float):
    from vllm import LLM
    from vllm.lora.request import LoRARequest

    options: dict[str, Any] = {"gpu_memory_utilization": gpu_memory_utilization}
    if adapter:
        options |= {"enable_lora": True, "max_lora_rank": lora_rank_bound(path), "max_loras": 1}
    llm = LLM(model=str(base), **options)
    return llm, (LoRARequest("adapter", 1, str(path)) if adapter else None)


def _run_chunks(llm, lora, todo, requests, base_seed, should_cancel, on_batch):
    from vllm import SamplingParams

    results: list[Generation] = []
    for start in range(0, len(todo), VLLM_CHUNK):
        if should_cancel():
            raise Cancelled()
        pairs, chunk = todo[start : start + VLLM_CHUNK], requests[start : start + VLLM_CHUNK]
        outputs = llm.generate(
            [prompt for prompt, _ in chunk],
            [SamplingParams(**settings) for _, settings in chunk],
            lora_request=lora, use_tqdm=False,
        )  # fmt: skip
        new = [
            to_generation(pair, output_seed(base_seed, *pair), output.outputs[0])
            for pair, output in zip(pairs, outputs, strict=True)
        ]
        results.extend(new)
        if on_batch:
            on_batch(new)
    return sorted(results, key=lambda g: (g.prompt_index, g.sample_index))


def _free_gpu_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
