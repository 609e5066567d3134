"""Fine-tune throughput and memory: palmsweb's engine against TRL's SFTTrainer and a plain Trainer.

Same model (the packaged SmolLM2-135M-Instruct), same demo data, same batch (8 examples per
optimizer step), same machine. Three sides:

- **palmsweb**: ``run_finetune``, full fine-tune, ``bf16="auto"``; **palmsweb-lean**: the same
  with activation checkpointing (``FINETUNE_ACTIVATION_CHECKPOINTING=1``), for memory.
- **TRL** ``SFTTrainer`` with its documented fast settings: bf16 (fp32 on a CPU without bf16
  units, where bf16 is emulated), loss on the completion only
  (prompt-completion data), padding-free batches, no gradient checkpointing.
- **plain** ``transformers.Trainer`` with default arguments (fp32, padded batches, loss on every
  token): what a first attempt looks like.

Each side runs in its own Python process, so each peak RSS is that side's alone; the sides
alternate within each round so that other work on the machine hits all of them. Tokens are
real (non-padding) training tokens per second of training loop (loading excluded).

    .venv/bin/python bench/bench_finetune.py [--data FILE] [--rounds 2] [--seconds 60]
                                             [--trl-steps 4] [--trainer-steps 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

from _engine_common import (
    DATA_PARTS,
    DEFAULT_DATA,
    base_model_dir,
    bf16_matmul_peak,
    chat_examples,
    data_files,
    fast_dtype,
    load_average,
    peak_rss_mb,
    quiet_transformers,
    read_jsonl,
    spawn_side,
)

SIDES = ("palmsweb", "palmsweb-lean", "trl", "trainer")


def run_engine(
    model_dir: Path, examples: list[dict], args: argparse.Namespace, *, lean: bool = False
) -> dict:
    """One epoch of our loop (stopped early after ``--seconds``); ``lean``: with activation
    checkpointing, for memory."""
    from training.engine import Cancelled
    from training.engine.finetune import FineTuneConfig, run_finetune

    config = FineTuneConfig(
        method=args.method,
        epochs=1,
        learning_rate=5e-5 if args.method == "full" else 2e-4,
        batch_size=args.batch_size,
        activation_checkpointing=lean,
    )
    events = []
    started = time.perf_counter()
    clock = {}

    def over_time() -> bool:
        # Asked before every forward pass, so the first call is where training starts.
        clock.setdefault("wall", time.perf_counter())
        clock.setdefault("cpu", time.process_time())
        return bool(events) and time.perf_counter() - started > args.seconds

    def on_progress(event) -> None:
        events.append(event)
        clock["wall_end"], clock["cpu_end"] = time.perf_counter(), time.process_time()

    # A cancel means the time budget ran out: the steps done so far are what we measure.
    with tempfile.TemporaryDirectory() as tmp, contextlib.suppress(Cancelled):
        run_finetune(
            base_model_path=model_dir,
            examples=examples,
            output_dir=Path(tmp) / "out",
            config=config,
            on_progress=on_progress,
            should_cancel=over_time,
        )
    last = events[-1]
    tokens = last.tokens_per_second * (clock["wall_end"] - clock["wall"])
    return {
        "steps": last.step,
        "tokens_per_second": last.tokens_per_second,
        "tokens_per_cpu_second": tokens / (clock["cpu_end"] - clock["cpu"]),
        "first_loss": events[0].loss,
        "last_loss": last.loss,
        "settings": f"{args.method}, bf16 auto: "
        + ("bf16 weights + fp32 masters" if str(fast_dtype()) == "torch.bfloat16" else "fp32")
        + (", activation checkpointing" if lean else ""),
    }


class _Clock:
    """Tokens and time of a Trainer's loop, from its first step to its last."""

    def __init__(self) -> None:
        self.tokens = 0
        self.started = self.ended = 0.0
        self.cpu_started = self.cpu_ended = 0.0
        self.losses: list[float] = []

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                clock.started, clock.cpu_started = time.perf_counter(), time.process_time()

            def on_step_end(self, args, state, control, **kwargs):
                clock.ended, clock.cpu_ended = time.perf_counter(), time.process_time()

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    clock.losses.append(float(logs["loss"]))

        return Callback()

    def count(self, inputs) -> None:
        # Counted in the training step, not in the collator: the dataloader fetches one batch
        # ahead, so a collator would also count a batch that is never trained on. Padding-free
        # batches have no attention mask and no padding.
        if "attention_mask" in inputs:
            self.tokens += int(inputs["attention_mask"].sum())
        else:
            self.tokens += int(inputs["input_ids"].numel())

    def figures(self, steps: int, settings: str) -> dict:
        return {
            "steps": steps,
            "tokens_per_second": self.tokens / (self.ended - self.started),
            "tokens_per_cpu_second": self.tokens / (self.cpu_ended - self.cpu_started),
            "first_loss": self.losses[0] if self.losses else None,
            "last_loss": self.losses[-1] if self.losses else None,
            "settings": settings,
        }


def run_trl(model_dir: Path, examples: list[dict], args: argparse.Namespace) -> dict:
    """TRL's SFTTrainer with the settings its documentation gives for speed."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    # Conversational prompt-completion rows: TRL puts the loss on the completion only.
    rows = [{"prompt": e["messages"][:-1], "completion": e["messages"][-1:]} for e in examples]
    clock = _Clock()

    class CountingTrainer(SFTTrainer):
        def training_step(self, model, inputs, *rest, **kwargs):
            clock.count(inputs)
            return super().training_step(model, inputs, *rest, **kwargs)

    with tempfile.TemporaryDirectory() as tmp:
        config = SFTConfig(
            output_dir=tmp,
            max_steps=args.trl_steps,
            per_device_train_batch_size=args.batch_size,
            learning_rate=5e-5,
            # bf16 autocast where bf16 is fast; on an AVX2-only CPU it is emulated (~100x
            # slower), and an informed user trains in fp32 there.
            bf16=fast_dtype() == torch.bfloat16,
            use_cpu=not torch.cuda.is_available(),  # transformers wants it said for bf16
            padding_free=True,
            max_length=None,  # padding-free without packing needs it; our rows are < 450 tokens
            completion_only_loss=True,
            gradient_checkpointing=False,  # TRL turns it on by default: slower, for memory
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            seed=0,
        )
        trainer = CountingTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[clock.callback()],
        )
        trainer.train()
    precision = "bf16 autocast" if fast_dtype() == torch.bfloat16 else "fp32"
    settings = f"{precision}, completion-only loss, padding-free, no grad checkpointing"
    return clock.figures(args.trl_steps, settings)


def run_trainer(model_dir: Path, examples: list[dict], args: argparse.Namespace) -> dict:
    """A plain transformers.Trainer with default arguments on the same examples."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    dataset = [
        tokenizer(
            tokenizer.apply_chat_template(e["messages"], tokenize=False),
            add_special_tokens=False,
            truncation=True,
            max_length=1024,
        )
        for e in examples
    ]
    clock = _Clock()

    class CountingTrainer(Trainer):
        def training_step(self, model, inputs, *rest, **kwargs):
            clock.count(inputs)
            return super().training_step(model, inputs, *rest, **kwargs)

    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp,
            max_steps=args.trainer_steps,
            per_device_train_batch_size=args.batch_size,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
        )
        trainer = CountingTrainer(
            model=model,
            args=training_args,
            train_dataset=dataset,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
            callbacks=[clock.callback()],
        )
        trainer.train()
    return clock.figures(args.trainer_steps, "fp32 defaults, padded, loss on all tokens")


def run_side(side: str, args: argparse.Namespace) -> dict:
    """Run one side in this process and return its figures with this process's peak RSS."""
    quiet_transformers()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    files = data_files(args.data, DEFAULT_DATA, DATA_PARTS)
    examples = chat_examples(read_jsonl(files))
    if side == "palmsweb-lean":
        figures = run_engine(base_model_dir(), examples, args, lean=True)
    else:
        runner = {"palmsweb": run_engine, "trl": run_trl, "trainer": run_trainer}[side]
        figures = runner(base_model_dir(), examples, args)
    return figures | {"peak_rss_mb": peak_rss_mb()}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="JSONL of {prompt, completion} or {messages} rows")
    parser.add_argument("--seconds", type=float, default=60, help="time budget for palmsweb")
    parser.add_argument("--trl-steps", type=int, default=4, help="SFTTrainer steps")
    parser.add_argument("--trainer-steps", type=int, default=3, help="plain Trainer steps")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of all sides")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--method",
        choices=("full", "lora"),
        default="full",
        help="palmsweb's method (the other sides always fine-tune fully)",
    )
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated subset")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads on every side (default: torch's). On a busy machine, 1 thread "
        "and the tokens per CPU-second compare the sides more fairly",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--side-json", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def summarize(results: dict[str, list[dict]], peak: dict) -> dict:
    """Best round of each side (the least disturbed one), ratios against palmsweb, % of peak."""
    best = {side: max(runs, key=lambda r: r["tokens_per_second"]) for side, runs in results.items()}
    summary = {"best": best, "bf16_peak": peak}
    ours = best.get("palmsweb")
    for side, figures in best.items():
        line = f"{side:13s} {figures['tokens_per_second']:7.1f} tok/s  peak RSS "
        line += f"{figures['peak_rss_mb'] / 1024:.2f} GB  ({figures['settings']})"
        if ours and not side.startswith("palmsweb"):
            ratio = ours["tokens_per_second"] / figures["tokens_per_second"]
            per_cpu = ours["tokens_per_cpu_second"] / figures["tokens_per_cpu_second"]
            summary[f"ratio_vs_{side}"] = ratio
            summary[f"cpu_ratio_vs_{side}"] = per_cpu
            line += f"  palmsweb is {ratio:.2f}x ({per_cpu:.2f}x per CPU-second)"
        print(line)
    if ours:
        # Model FLOPs per training token: 6 x parameters (forward and backward), as usual.
        utilization = ours["tokens_per_second"] * 6 * peak["parameters"] / (peak["gflops"] * 1e9)
        summary["palmsweb_fraction_of_bf16_peak"] = utilization
        print(
            f"palmsweb reaches {utilization:.0%} of this machine's {peak['dtype']} matmul peak "
            f"({peak['gflops']:.0f} GFLOP/s, {peak['threads']} threads)"
        )
    return summary


def main() -> None:
    argv = sys.argv[1:]
    args = parse_args(argv)
    if args.side:
        Path(args.side_json).write_text(json.dumps(run_side(args.side, args)))
        return
    sides = [side for side in args.sides.split(",") if side]
    model_dir = base_model_dir()  # converted once here, not inside a timed side
    files = data_files(args.data, DEFAULT_DATA, DATA_PARTS)
    print(
        f"model {model_dir.name}, {len(read_jsonl(files))} examples from "
        f"{[f.name for f in files]}, batch {args.batch_size}"
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    peak = bf16_matmul_peak(model_dir, dtype=fast_dtype())
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for round_ in range(1, args.rounds + 1):
        # Rounds alternate the order so that neither side always runs on a warmer machine.
        for side in sides if round_ % 2 else reversed(sides):
            figures = spawn_side(__file__, side, argv)
            results[side].append(figures)
            print(
                f"[{round_}] {side:13s} {figures['tokens_per_second']:7.1f} tok/s "
                f"({figures['tokens_per_cpu_second']:.1f} per CPU-s)  "
                f"loss {figures['first_loss']:.3f} -> {figures['last_loss']:.3f} in "
                f"{figures['steps']} steps  peak RSS {figures['peak_rss_mb']:.0f} MB  "
                f"(load {figures['load_before']} -> {load_average()})",
                flush=True,
            )
    summary = summarize(results, peak)
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": results} | summary, indent=2))


if __name__ == "__main__":
    main()
