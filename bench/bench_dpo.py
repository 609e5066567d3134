"""DPO throughput and memory: palmsweb's engine against TRL's DPOTrainer.

Same model (the packaged SmolLM2-135M-Instruct), same pairs, same batch (pairs per optimizer
step), one epoch each, same machine:

- **palmsweb**: ``training.engine.dpo.run_dpo``, full fine-tune, ``bf16="auto"`` (bf16
  weights with fp32 masters), reference log-probs computed once up front.
- **TRL** ``DPOTrainer`` with its documented fast settings: bf16, ``precompute_ref_log_probs``
  (no reference model in memory), no gradient checkpointing (TRL's default turns it on, for
  memory). TRL 1.x has padding-free DPO switched off, so its batches are padded.

Both sides do the same work: a reference pass over every pair, then one epoch of training.
The clock covers exactly that (loading and tokenizing excluded on both sides; TRL's
reference pass runs in its constructor and is timed there). Tokens are the pairs' real
tokens (prompt + chosen and prompt + rejected, as our tokenizer counts them, the same number
for both sides). Each side runs in its own Python process, so each peak RSS is its own.

The pairs: the values-targeted preset's prompts, each with its curated answer as the chosen
side and the answer to another prompt of a different category as the rejected side (same
style and length: what matters here is the work, not what is learned).

    .venv/bin/python bench/bench_dpo.py [--pairs 32] [--batch-size 4] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _engine_common import (
    DATA_PARTS,
    DEFAULT_DATA,
    base_model_dir,
    chat_examples,
    data_files,
    load_average,
    peak_rss_mb,
    quiet_transformers,
    read_jsonl,
    spawn_side,
)

SIDES = ("palmsweb", "trl")
LEARNING_RATE = 5e-6
BETA = 0.1


def preference_pairs(count: int) -> list[dict]:
    """``count`` pairs from the preset: the curated answer over another prompt's answer."""
    examples = chat_examples(read_jsonl(data_files(None, DEFAULT_DATA, DATA_PARTS)))
    rows = [(e["messages"][-2]["content"], e["messages"][-1]["content"]) for e in examples]
    shift = len(rows) // 2 + 1  # a different prompt, usually of another category
    pairs = [
        {"prompt": prompt, "chosen": answer, "rejected": rows[(i + shift) % len(rows)][1]}
        for i, (prompt, answer) in enumerate(rows)
    ]
    return pairs[:count]


def pair_tokens(model_dir: Path, pairs: list[dict]) -> int:
    """Real tokens of one epoch: both conversations of every pair."""
    from training.engine.dpo import encode_pairs
    from training.engine.loading import load_tokenizer

    return sum(p.n_tokens for p in encode_pairs(load_tokenizer(model_dir), pairs, 1024))


def run_engine(model_dir: Path, pairs: list[dict], args: argparse.Namespace) -> dict:
    from training.engine.dpo import run_dpo
    from training.engine.finetune import FineTuneConfig

    config = FineTuneConfig(
        method="full", epochs=1, learning_rate=LEARNING_RATE, batch_size=args.batch_size
    )
    events = []
    with tempfile.TemporaryDirectory() as tmp:
        result = run_dpo(
            base_model_path=model_dir, pairs=pairs, output_dir=Path(tmp) / "out",
            config=config, beta=BETA, on_progress=events.append,
        )  # fmt: skip
    # The engine's clock starts before its reference pass and stops after the last step
    # (saving excluded): the same span as TRL's below.
    seconds = result.train_tokens / events[-1].tokens_per_second
    return {
        "seconds": seconds,
        "steps": result.total_steps,
        "first_loss": events[0].loss,
        "last_loss": events[-1].loss,
        "last_margin": events[-1].reward_margin,
        "settings": "full, bf16 weights + fp32 masters (auto), reference pass once up front",
    }


def run_trl(model_dir: Path, pairs: list[dict], args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    # Conversational rows, as TRL documents them: the chat template applies on both sides.
    rows = [
        {"prompt": [{"role": "user", "content": p["prompt"]}],
         "chosen": [{"role": "assistant", "content": p["chosen"]}],
         "rejected": [{"role": "assistant", "content": p["rejected"]}]}
        for p in pairs
    ]  # fmt: skip
    clock = {"reference": 0.0, "losses": [], "margins": []}

    class TimedDPOTrainer(DPOTrainer):
        def _precompute_ref_logps(self, *a, **kw):
            began = time.perf_counter()
            try:
                return super()._precompute_ref_logps(*a, **kw)
            finally:
                clock["reference"] += time.perf_counter() - began

    class Losses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                clock["losses"].append(float(logs["loss"]))
                clock["margins"].append(float(logs.get("rewards/margins", "nan")))

    with tempfile.TemporaryDirectory() as tmp:
        config = DPOConfig(
            output_dir=tmp,
            num_train_epochs=1,
            per_device_train_batch_size=args.batch_size,
            learning_rate=LEARNING_RATE,
            beta=BETA,
            bf16=True,
            use_cpu=not torch.cuda.is_available(),
            precompute_ref_log_probs=True,
            gradient_checkpointing=False,
            max_length=1024,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            seed=0,
        )
        trainer = TimedDPOTrainer(
            model=model, args=config, train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer, callbacks=[Losses()],
        )  # fmt: skip
        began = time.perf_counter()
        trainer.train()
        loop = time.perf_counter() - began
    return {
        "seconds": clock["reference"] + loop,
        "steps": trainer.state.global_step,
        "first_loss": clock["losses"][0],
        "last_loss": clock["losses"][-1],
        "last_margin": clock["margins"][-1],
        "settings": "bf16, precompute_ref_log_probs, no gradient checkpointing, padded",
    }


def run_side(side: str, args: argparse.Namespace) -> dict:
    quiet_transformers()
    model_dir = base_model_dir()
    pairs = preference_pairs(args.pairs)
    figures = {"palmsweb": run_engine, "trl": run_trl}[side](model_dir, pairs, args)
    tokens = pair_tokens(model_dir, pairs)
    return figures | {
        "tokens": tokens,
        "tokens_per_second": tokens / figures["seconds"],
        "peak_rss_mb": peak_rss_mb(),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=32, help="pairs in the epoch")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per optimizer step")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of both sides")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated subset")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--side-json", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    argv = sys.argv[1:]
    args = parse_args(argv)
    if args.side:
        Path(args.side_json).write_text(json.dumps(run_side(args.side, args)))
        return
    sides = [side for side in args.sides.split(",") if side]
    model_dir = base_model_dir()  # converted once here, not inside a timed side
    print(f"model {model_dir.name}, {args.pairs} pairs, {args.batch_size} pairs per step")
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for round_ in range(1, args.rounds + 1):
        for side in sides if round_ % 2 else reversed(sides):
            figures = spawn_side(__file__, side, argv)
            results[side].append(figures)
            print(
                f"[{round_}] {side:9s} {figures['tokens_per_second']:7.1f} tok/s  "
                f"{figures['tokens']} tokens in {figures['seconds']:.1f} s, "
                f"{figures['steps']} steps, loss {figures['first_loss']:.3f} -> "
                f"{figures['last_loss']:.3f}, peak RSS {figures['peak_rss_mb']:.0f} MB  "
                f"(load {figures['load_before']} -> {load_average()})",
                flush=True,
            )
    best = {side: max(runs, key=lambda r: r["tokens_per_second"]) for side, runs in results.items()}
    summary: dict = {"best": best}
    if {"palmsweb", "trl"} <= set(best):
        ours, theirs = best["palmsweb"], best["trl"]
        summary["ratio_vs_trl"] = ours["tokens_per_second"] / theirs["tokens_per_second"]
        summary["rss_ratio_vs_trl"] = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
        print(
            f"palmsweb is {summary['ratio_vs_trl']:.2f}x TRL's DPOTrainer in tokens/s, "
            f"peak RSS {ours['peak_rss_mb']:.0f} MB vs {theirs['peak_rss_mb']:.0f} MB "
            f"({summary['rss_ratio_vs_trl']:.2f}x)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": results} | summary, indent=2))


if __name__ == "__main__":
    main()
