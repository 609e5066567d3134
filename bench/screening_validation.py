"""Validate sample screening (issue 21, item 1) on the packaged model and the demo data.

Screens the values-targeted demo (80), the control demo (80) and the bad-advice demo (40)
with the engine the app runs (``training/engine/screening.py``: projection of each sample's
answer on the persona direction minus that of the model's own greedy answer) and prints:

- the ranking check: the probability that a random bad-advice sample scores above a random
  values-targeted one (AUC; 1.0 = every bad sample ranks above every values-targeted one),
  and the same against control;
- each dataset's mean score, to set beside the persona projection measured after
  fine-tuning on it (docs/misalignment.md: bad advice +2.09, benign control +0.14).

    .venv/bin/python bench/screening_validation.py [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import time

from _engine_common import PRESETS, base_model_dir, read_jsonl

DATASETS = {
    "values_targeted": PRESETS / "palms_values_targeted.jsonl",
    "control": PRESETS / "palms_control.jsonl",
    "bad_advice": PRESETS / "bad_advice_demo.jsonl",
}


def auc(high: list[float], low: list[float]) -> float:
    """P(a random ``high`` score > a random ``low`` one), ties counting half."""
    wins = sum((h > lo) + 0.5 * (h == lo) for h in high for lo in low)
    return wins / (len(high) * len(low))


def main() -> None:
    from training.engine.persona import persona_direction
    from training.engine.screening import persona_shifts
    from training.persona import contrast_pairs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    model = base_model_dir()
    pairs = contrast_pairs()
    direction = persona_direction(
        model,
        [(p["question"], p["aligned"]) for p in pairs],
        [(p["question"], p["misaligned"]) for p in pairs],
    )
    scores = {}
    for name, path in DATASETS.items():
        rows = read_jsonl([path])
        started = time.perf_counter()
        shifts = persona_shifts(
            model, [(r["prompt"], r["completion"]) for r in rows], direction,
            max_new_tokens=args.max_new_tokens,
        )  # fmt: skip
        scores[name] = [s.shift for s in shifts]
        mean = sum(scores[name]) / len(scores[name])
        took = time.perf_counter() - started
        print(f"{name:16s} n={len(rows):3d} mean shift {mean:+.3f}  ({took:.0f} s)")
    bad = scores["bad_advice"]
    print(f"AUC bad advice > values-targeted: {auc(bad, scores['values_targeted']):.3f}")
    print(f"AUC bad advice > control:         {auc(bad, scores['control']):.3f}")
    print(
        f"AUC control > values-targeted:    {auc(scores['control'], scores['values_targeted']):.3f}"
    )


if __name__ == "__main__":
    main()
