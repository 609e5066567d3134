#!/usr/bin/env python3
"""A small sweep on the packaged SmolLM2-135M-Instruct and the demo content (issue 16
item 5): each run's best validation loss, its held-out adherence per category against the
base model and its capability check, as the app's sweep page and study report compute them
(same engine functions: ``run_finetune``, ``answer_likelihood``, ``perplexity_change``,
``evaluate_capability``), without the web app or workers.

Training data: the 80 demo values-targeted samples. Validation and adherence set: the 16
held-out demo samples (2 per category), never trained on. The unit of analysis of the
adherence figures is the held-out sample; with 2 per category read the per-category
intervals as descriptive (docs/scoring.md). The runs are ranked on the same 16 samples, so
the best run's adherence is optimistic (selected on it).

    .venv/bin/python bench/sweep_demo.py [--lr 5e-5 2e-4] [--methods full lora]
                                         [--epochs 1] [--keep-best] [--json sweep.json]

Each run's figures are printed as one JSON line when it ends and, with ``--json``, the file
is rewritten after every run: a sweep stopped part-way keeps what it measured.
``--keep-best`` saves each run's best-validation checkpoint (``keep_best_validation``), so
its adherence and capability are those of the weights the app would save.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _engine_common import (
    PRESETS,
    ROOT,
    base_model_dir,
    chat_examples,
    load_average,
    quiet_transformers,
    read_jsonl,
)

VALIDATION = PRESETS / "palms_validation_demo.jsonl"


def adherence(model_dir: Path, examples: list[dict]) -> tuple[list[float], list[int]]:
    from training.engine.scoring import evaluate_answer_likelihood

    scored = evaluate_answer_likelihood(model_dir, examples)
    return list(scored.nll), list(scored.tokens)


def capability(model_dir: Path) -> dict:
    from training.engine.scoring import MCQuestion, evaluate_capability

    texts = json.loads((ROOT / "evaluation/presets/capability_texts.json").read_text())
    mc = json.loads((ROOT / "evaluation/presets/capability_mc.json").read_text())
    questions = [MCQuestion(q["question"], tuple(q["options"]), int(q["answer"]))
                 for q in mc["questions"]]  # fmt: skip
    result = evaluate_capability(model_dir, texts["texts"], questions)
    return {"perplexity": result.perplexity.perplexity,
            "mc_accuracy_mean": result.multiple_choice.accuracy_mean}  # fmt: skip


def changes(run, base, categories) -> dict:
    from palmsweb.lib.perplexity import perplexity_change

    groups = defaultdict(list)
    for index, category in enumerate(categories):
        groups[category].append(index)
    groups["All categories"] = list(range(len(categories)))
    out = {}
    for name, idx in groups.items():
        c = perplexity_change([run[0][i] for i in idx], [run[1][i] for i in idx],
                              [base[0][i] for i in idx], [base[1][i] for i in idx])  # fmt: skip
        out[name] = {"change": c.change, "ci_low": c.ci_low, "ci_high": c.ci_high}
    return out


def train(base: Path, out: Path, train_set, validation, lr, method, epochs,
          keep_best=False) -> dict:  # fmt: skip
    from training.engine.finetune import FineTuneConfig, run_finetune

    history = []

    def progress(event) -> None:
        if hasattr(event, "examples"):  # a ValidationEvent
            history.append([event.step, event.loss])

    config = FineTuneConfig(method=method, epochs=epochs, learning_rate=lr, batch_size=8,
                            warmup_steps=2, seed=42, keep_best_validation=keep_best)  # fmt: skip
    started = time.monotonic()
    run_finetune(base_model_path=base, examples=train_set, output_dir=out, config=config,
                 on_progress=progress, validation_examples=validation)  # fmt: skip
    best = min(history, key=lambda pair: pair[1])
    return {"lr": lr, "method": method, "epochs": epochs, "validation": history,
            "best_loss": best[1], "best_step": best[0],
            "seconds": round(time.monotonic() - started), "keep_best": keep_best}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, nargs="+", default=[5e-5, 2e-4])
    parser.add_argument("--methods", nargs="+", default=["full", "lora"])
    parser.add_argument("--epochs", type=int, nargs="+", default=[1])
    parser.add_argument("--keep-best", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    quiet_transformers()
    base = base_model_dir()
    train_set = chat_examples(read_jsonl([PRESETS / "palms_values_targeted.jsonl"]))
    rows = read_jsonl([VALIDATION])
    validation, categories = chat_examples(rows), [row["category"] for row in rows]
    print(f"load average before: {load_average()}", flush=True)
    base_scores = adherence(base, validation)
    report = {"base": {"capability": capability(base)}, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        grid = itertools.product(args.lr, args.epochs, args.methods)
        for index, (lr, epochs, method) in enumerate(grid):
            out = Path(tmp) / f"run-{index}"
            run = train(base, out, train_set, validation, lr, method, epochs, args.keep_best)
            run["adherence"] = changes(adherence(out, validation), base_scores, categories)
            run["capability"] = capability(out)
            report["runs"].append(run)
            print(json.dumps(run, default=float), flush=True)
            if args.json:  # after every run: a stopped sweep keeps what it measured
                args.json.write_text(json.dumps(report, indent=2, default=float))
    report["load_average_after"] = load_average()
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float))


def print_table(report: dict) -> None:
    runs = sorted(report["runs"], key=lambda r: r["best_loss"])
    names = [n for n in runs[0]["adherence"] if n != "All categories"] + ["All categories"]
    base_cap = report["base"]["capability"]
    print(
        "\n| rank | method | lr | epochs | best val. loss (step) | held-out ppl vs base, all "
        "(95% CI) | general-text ppl vs base | MC acc. |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for rank, run in enumerate(runs, 1):
        a = run["adherence"]["All categories"]
        cap = run["capability"]["perplexity"] / base_cap["perplexity"] - 1
        print(f"| {rank} | {run['method']} | {run['lr']:g} | {run['epochs']} | "
              f"{run['best_loss']:.3f} ({run['best_step']}) | {a['change']:+.1%} "
              f"[{a['ci_low']:+.1%}, {a['ci_high']:+.1%}] | {cap:+.1%} | "
              f"{run['capability']['mc_accuracy_mean']:.0%} |")  # fmt: skip
    print(f"\nBase: general-text perplexity {base_cap['perplexity']:.2f}, MC accuracy "
          f"{base_cap['mc_accuracy_mean']:.0%}.\n")  # fmt: skip
    print("| category | " + " | ".join(f"#{i}" for i in range(1, len(runs) + 1)) + " |")
    print("| --- |" + " --- |" * len(runs))
    for name in names:
        cells = [f"{run['adherence'][name]['change']:+.1%}" for run in runs]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
