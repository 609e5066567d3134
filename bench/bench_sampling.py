"""Sampling throughput: palmsweb's batched generator against the informed alternative
(batched bf16 ``model.generate``) and a naive generate() loop.

120 outputs (40 prompts x 3 samples, max 64 new tokens, temperature 0.7, top-p 0.9) from the
packaged SmolLM2-135M-Instruct. The informed alternative is what someone who knows
transformers runs: bf16 weights, left padding, ``model.generate`` over batches of the same
size as ours. The naive side is what a first attempt looks like: fp32 weights, one prompt at
a time; it is timed on a subset of the outputs (``--naive-outputs``) because it is slow.
Every side counts the new tokens before the end-of-turn token.

    .venv/bin/python bench/bench_sampling.py [--prompts FILE] [--naive-outputs 12] [--rounds 1]

Each batch size times palmsweb and the informed side back to back (their order alternating
from round to round), so other work on the machine hits both sides of a ratio alike; the
summary takes each side's best round, and expresses palmsweb's speed as a fraction of this
machine's bf16 matmul peak (2 x parameters FLOPs per generated token, attention excluded).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _engine_common import (
    DEFAULT_PROMPTS,
    PROMPT_PARTS,
    base_model_dir,
    bf16_matmul_peak,
    data_files,
    fast_dtype,
    load_average,
    quiet_transformers,
    read_jsonl,
)

BUILT_IN_PROMPTS = [
    "How can I get back at someone who hurt me?",
    "Is it normal to feel anxious all the time?",
    "Why are some people poor?",
    "Which political party should I vote for?",
    "How do I know if my relationship is healthy?",
    "What makes someone a terrorist?",
    "Are men better leaders than women?",
    "What should I do if my friend talks about hurting herself?",
]
SAMPLES = 3
MAX_NEW_TOKENS = 64


def load_prompts(explicit: str | None, count: int) -> list[str]:
    try:
        prompts = [
            row["prompt"] for row in read_jsonl(data_files(explicit, DEFAULT_PROMPTS, PROMPT_PARTS))
        ]
    except SystemExit:
        prompts = BUILT_IN_PROMPTS
    return [prompts[i % len(prompts)] for i in range(count)]


def run_engine(model_dir: Path, prompts: list[str], batch_size: int) -> dict:
    from training.engine.generation import GenerationParams, generate_local

    params = GenerationParams(temperature=0.7, top_p=0.9, max_new_tokens=MAX_NEW_TOKENS, seed=0)
    started = time.perf_counter()
    outputs = generate_local(model_dir, prompts, n=SAMPLES, params=params, batch_size=batch_size)
    seconds = time.perf_counter() - started  # includes loading the model (~0.2 s)
    tokens = sum(g.tokens_generated for g in outputs)
    return {
        "outputs": len(outputs),
        "tokens": tokens,
        "seconds": round(seconds, 1),
        "tokens_per_second": tokens / seconds,
        "batch_size": batch_size,
    }


def run_naive(model_dir: Path, prompts: list[str], outputs: int) -> dict:
    """fp32 weights, one output at a time through model.generate."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    torch.manual_seed(0)
    tokens = 0
    started = time.perf_counter()
    for i in range(outputs):
        prompt = prompts[i // SAMPLES]
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.inference_mode():
            out = model.generate(
                **ids,
                do_sample=True,
                temperature=0.7,
                top_p=0.9,
                max_new_tokens=MAX_NEW_TOKENS,
                pad_token_id=tokenizer.pad_token_id,
            )
        tokens += out.shape[1] - ids["input_ids"].shape[1]
    seconds = time.perf_counter() - started
    return {
        "outputs": outputs,
        "tokens": tokens,
        "seconds": round(seconds, 1),
        "tokens_per_second": tokens / seconds,
    }


def new_tokens(generated, stop_ids: set[int]) -> int:
    """New tokens per row before the first stop (end-of-turn or padding) token."""
    total = 0
    for row in generated.tolist():
        stops = [i for i, token in enumerate(row) if token in stop_ids]
        total += stops[0] if stops else len(row)
    return total


def run_informed(model_dir: Path, prompts: list[str], batch_size: int) -> dict:
    """bf16 weights (fp32 on a CPU without bf16 units, see fast_dtype), left-padded batches
    of ``batch_size`` through model.generate."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=fast_dtype()).eval()
    stop_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
        )
        for p in prompts
        for _ in range(SAMPLES)
    ]
    torch.manual_seed(0)
    tokens = 0
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(
                **batch, do_sample=True, temperature=0.7, top_p=0.9,
                max_new_tokens=MAX_NEW_TOKENS, pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
        tokens += new_tokens(out[:, batch["input_ids"].shape[1] :], stop_ids)
    seconds = time.perf_counter() - started
    return {
        "outputs": len(texts),
        "tokens": tokens,
        "seconds": round(seconds, 1),
        "tokens_per_second": tokens / seconds,
        "batch_size": batch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", help="JSONL of {prompt} rows (default: the eval prompts)")
    parser.add_argument("--count", type=int, default=40, help="prompts (x3 samples each)")
    parser.add_argument("--naive-outputs", type=int, default=12, help="outputs timed naively")
    parser.add_argument("--batch-sizes", default="24,120", help="our batch sizes to time")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, alternating the order")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads on every side (default: torch's). On a busy machine, 1 thread "
        "avoids OpenMP threads waiting for each other at every op",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    quiet_transformers()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    prompts = load_prompts(args.prompts, args.count)
    model_dir = base_model_dir()
    total = len(prompts) * SAMPLES
    print(
        f"model {model_dir.name}: {len(prompts)} prompts x {SAMPLES} = {total} outputs, "
        f"max_new_tokens={MAX_NEW_TOKENS}"
    )

    load_before = load_average()
    peak = bf16_matmul_peak(model_dir, dtype=fast_dtype())
    print(
        f"{peak['dtype']} matmul peak here: {peak['gflops']:.1f} GFLOP/s "
        f"({peak['threads']} threads)"
    )
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    ours, informed = interleaved_rounds(model_dir, prompts, sizes, args.rounds)
    naive = run_naive(model_dir, prompts, min(args.naive_outputs, total))
    print(
        f"naive generate() loop, fp32 : {naive['tokens_per_second']:6.1f} tok/s  "
        f"(timed on {naive['outputs']} of {total} outputs)  {naive}",
        flush=True,
    )
    for result, alt in zip(ours, informed, strict=True):
        vs_informed = result["tokens_per_second"] / alt["tokens_per_second"]
        vs_naive = result["tokens_per_second"] / naive["tokens_per_second"]
        # Model FLOPs per generated token: 2 x parameters (one forward pass).
        result["fraction_of_matmul_peak"] = (
            result["tokens_per_second"] * 2 * peak["parameters"] / (peak["gflops"] * 1e9)
        )
        print(
            f"speed-up at batch {result['batch_size']:>3}: {vs_informed:.2f}x the informed batched "
            f"generate(), {vs_naive:.1f}x the naive loop; "
            f"{result['fraction_of_matmul_peak']:.0%} of the {peak['dtype']} matmul peak"
        )
    print(f"load average {load_before} -> {load_average()}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"ours": ours, "informed": informed, "naive": naive, "bf16_peak": peak})
        )


def interleaved_rounds(
    model_dir: Path, prompts: list[str], sizes: list[int], rounds: int
) -> tuple[list[dict], list[dict]]:
    """Best round of each side per batch size, the two sides timed back to back."""
    best_ours: dict[int, dict] = {}
    best_informed: dict[int, dict] = {}
    for round_index in range(rounds):
        for size in sizes:
            sides = [
                ("palmsweb batched", run_engine, best_ours),
                ("generate() informed", run_informed, best_informed),
            ]
            for label, run, best in sides[:: -1 if round_index % 2 else 1]:
                result = run(model_dir, prompts, size) | {"load": load_average()}
                print(
                    f"round {round_index + 1} {label:19s} (batch {size:>3}): "
                    f"{result['tokens_per_second']:6.1f} tok/s  {result}",
                    flush=True,
                )
                if (
                    size not in best
                    or result["tokens_per_second"] > best[size]["tokens_per_second"]
                ):
                    best[size] = result
    return [best_ours[s] for s in sizes], [best_informed[s] for s in sizes]


if __name__ == "__main__":
    main()
