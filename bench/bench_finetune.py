"""Fine-tune throughput: palmsweb's engine against a plain transformers.Trainer.

Same model (the packaged SmolLM2-135M-Instruct), same demo data, same machine, one after the
other. The Trainer runs with default arguments (fp32, per-device batch 8, padding through
DataCollatorForLanguageModeling), which is what a first attempt looks like. Both sides count
real (non-padding) training tokens per second of training loop.

    .venv/bin/python bench/bench_finetune.py [--data FILE] [--rounds 2] [--seconds 60]
                                             [--trainer-steps 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
    quiet_transformers,
    read_jsonl,
)


def run_engine(model_dir: Path, examples: list[dict], seconds: float, batch_size: int) -> dict:
    """One epoch of our loop (stopped early after ``seconds``)."""
    from training.engine import Cancelled
    from training.engine.finetune import FineTuneConfig, run_finetune

    config = FineTuneConfig(method="full", epochs=1, learning_rate=5e-5, batch_size=batch_size)
    events = []
    started = time.perf_counter()

    def over_time() -> bool:
        return bool(events) and time.perf_counter() - started > seconds

    # A cancel means the time budget ran out: the steps done so far are what we measure.
    with tempfile.TemporaryDirectory() as tmp, contextlib.suppress(Cancelled):
        run_finetune(
            base_model_path=model_dir,
            examples=examples,
            output_dir=Path(tmp) / "out",
            config=config,
            on_progress=events.append,
            should_cancel=over_time,
        )
    last = events[-1]
    return {
        "steps": last.step,
        "tokens_per_second": last.tokens_per_second,
        "first_loss": events[0].loss,
        "last_loss": last.loss,
        "batch_size": batch_size,
        "precision": "bf16 weights + fp32 master (auto)",
    }


def run_trainer(model_dir: Path, examples: list[dict], steps: int) -> dict:
    """A plain transformers.Trainer with default arguments on the same examples."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
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
    counted = {"tokens": 0}

    class CountingTrainer(Trainer):
        # Count in the training step, not in the collator: the dataloader fetches one batch
        # ahead, so a collator would also count a batch that is never trained on.
        def training_step(self, model, inputs, *args, **kwargs):
            counted["tokens"] += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, *args, **kwargs)

    class Clock(TrainerCallback):
        started = ended = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            Clock.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            Clock.ended = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            max_steps=steps,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
        )
        trainer = CountingTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
            callbacks=[Clock()],
        )
        trainer.train()
    return {
        "steps": steps,
        "tokens_per_second": counted["tokens"] / (Clock.ended - Clock.started),
        "batch_size": args.per_device_train_batch_size,
        "precision": "fp32 (default)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="JSONL of {prompt, completion} or {messages} rows")
    parser.add_argument("--seconds", type=float, default=60, help="time budget for ours")
    parser.add_argument("--trainer-steps", type=int, default=4, help="Trainer steps (~15 s each)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both sides")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    quiet_transformers()

    files = data_files(args.data, DEFAULT_DATA, DATA_PARTS)
    examples = chat_examples(read_jsonl(files))
    model_dir = base_model_dir()
    print(f"model {model_dir.name}, {len(examples)} examples from {[f.name for f in files]}")

    # Rounds alternate the two sides so that other work on the machine hits both alike; the
    # best round of each side is the least disturbed one.
    ours, plain = [], []
    for round_ in range(1, args.rounds + 1):
        load = load_average()
        ours.append(run_engine(model_dir, examples, args.seconds, args.batch_size))
        print(
            f"[{round_}] palmsweb engine: {ours[-1]['tokens_per_second']:6.1f} tok/s  "
            f"{ours[-1]}  (load {load})",
            flush=True,
        )
        load = load_average()
        plain.append(run_trainer(model_dir, examples, args.trainer_steps))
        print(
            f"[{round_}] plain Trainer  : {plain[-1]['tokens_per_second']:6.1f} tok/s  "
            f"{plain[-1]}  (load {load})",
            flush=True,
        )
    best_ours = max(r["tokens_per_second"] for r in ours)
    best_plain = max(r["tokens_per_second"] for r in plain)
    ratio = best_ours / best_plain
    print(
        f"best of {args.rounds}: palmsweb {best_ours:.1f} tok/s, plain Trainer "
        f"{best_plain:.1f} tok/s, speed-up {ratio:.2f}x"
    )
    if args.json:
        figures = {"ours": ours, "trainer": plain, "ratio": ratio}
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
