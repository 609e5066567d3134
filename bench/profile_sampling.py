#!/usr/bin/env python3
"""Where sampling time goes (issue 19, item 4's evidence): ``torch.profiler`` over one
``generate_local`` batch of the packaged SmolLM2-135M-Instruct (24 outputs: 8 evaluation
prompts x 3 samples, 64 new tokens, temperature 0.7, top-p 0.9, as ``bench_sampling.py``),
one thread so that the shares are CPU work, not threads waiting for each other.

Prints the share of self CPU time per operator (top ``--top``), the matmul share (``mm``,
``addmm``, ``bmm``, ``linear``'s kernels), and the matmul rate the run reached against this
machine's matmul rate at the decode step's own shapes (``batch`` rows: every step reads all
the weights for one token per row) and at 2,048 rows (the compute-bound peak), measured here.
The matmuls are what a faster sampler cannot remove; what is left (cache copies, sampling,
elementwise) bounds what a static KV cache, a compiled decode step or continuous batching
could still save.

    .venv/bin/python bench/profile_sampling.py [--side palmsweb|informed] [--batch-size 24]
                                               [--top 15] [--json FILE]

``--side informed`` profiles the informed alternative (batched ``model.generate`` in the
fast dtype) the same way: both sides run the same matmuls, so the ratio between them is
bounded by how much of the informed side's time is *not* matmul.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _engine_common import base_model_dir, bf16_matmul_peak, fast_dtype, quiet_transformers
from bench_sampling import BUILT_IN_PROMPTS, MAX_NEW_TOKENS, SAMPLES, run_informed

MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"}


def engine_batch(model_dir: Path, prompts: list[str], batch_size: int) -> int:
    """palmsweb's sampler over the batch; the new tokens it generated."""
    from training.engine.generation import GenerationParams, generate_local

    params = GenerationParams(temperature=0.7, top_p=0.9, max_new_tokens=MAX_NEW_TOKENS, seed=0)
    outputs = generate_local(model_dir, prompts, n=SAMPLES, params=params, batch_size=batch_size)
    return sum(g.tokens_generated for g in outputs)


def informed_batch(model_dir: Path, prompts: list[str], batch_size: int) -> int:
    """Batched ``model.generate`` in the fast dtype, as ``bench_sampling.py`` runs it."""
    return run_informed(model_dir, prompts, batch_size)["tokens"]


SIDES = {"palmsweb": engine_batch, "informed": informed_batch}


def profile_batch(side: str, model_dir: Path, prompts: list[str], batch_size: int):
    from torch.profiler import ProfilerActivity, profile

    SIDES[side](model_dir, prompts[:1], 1)  # warm up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        tokens = SIDES[side](model_dir, prompts, batch_size)
        seconds = time.perf_counter() - started
    return prof.key_averages(), tokens, seconds


def shares(averages) -> list[tuple[str, float]]:
    """(operator, share of all self CPU time), largest first."""
    total = sum(event.self_cpu_time_total for event in averages)
    rows = [(event.key, event.self_cpu_time_total / total) for event in averages]
    return sorted(rows, key=lambda row: -row[1])


def matmul_rate(model_dir: Path, rows: int, dtype) -> float:
    """GFLOP/s of the decoder's projections (MLP in and out, attention) for ``rows`` rows."""
    return bf16_matmul_peak(model_dir, seconds=2.0, dtype=dtype, rows=rows)["gflops"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--side", choices=tuple(SIDES), default="palmsweb")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    from training.engine.loading import count_parameters

    torch.set_num_threads(1)
    quiet_transformers()
    model = base_model_dir()
    dtype = fast_dtype()
    count = max(1, args.batch_size // SAMPLES)
    prompts = [BUILT_IN_PROMPTS[i % len(BUILT_IN_PROMPTS)] for i in range(count)]
    averages, tokens, seconds = profile_batch(args.side, model, prompts, args.batch_size)
    table = shares(averages)
    matmul = sum(share for name, share in table if name in MATMUL_OPS)
    # 2 x parameters FLOPs per generated token (the prompt's prefill and attention excluded)
    achieved = 2 * count_parameters(model) * tokens / (matmul * seconds) / 1e9
    at_batch, at_2048 = matmul_rate(model, args.batch_size, dtype), matmul_rate(model, 2048, dtype)
    figures = {
        "side": args.side, "outputs": len(prompts) * SAMPLES, "tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_second": tokens / seconds, "dtype": str(dtype), "matmul_share": matmul,
        "matmul_gflops_in_run": achieved, "matmul_gflops_at_batch_rows": at_batch,
        "matmul_gflops_at_2048_rows": at_2048, "shares": table[: args.top],
    }  # fmt: skip
    print(f"{args.side}: {figures['outputs']} outputs, {tokens} new tokens in {seconds:.1f} s "
          f"under the profiler ({tokens / seconds:.1f} tok/s), one thread, {dtype}")  # fmt: skip
    print(f"matmul share of self CPU time: {matmul:.1%}; the run's matmuls at ~{achieved:.1f} "
          f"GFLOP/s; the projections alone at {args.batch_size} rows: {at_batch:.1f} GFLOP/s, at "
          f"2,048 rows: {at_2048:.1f} GFLOP/s")  # fmt: skip
    print("\n| operator | share of self CPU time |\n| --- | --- |")
    for name, share in table[: args.top]:
        print(f"| `{name}` | {share:.1%} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
