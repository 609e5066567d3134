"""Screening vs measured shift (issue 21, item 1's validation): fine-tune the packaged model
briefly on each demo dataset (control, values-targeted, bad advice) with one schedule, measure
the mean projection of the 12 preset probes on the base model's persona direction after every
epoch, and correlate the post-fine-tune shift with each dataset's mean screening score.

The screening means default to the ones ``bench/screening_validation.py --max-new-tokens 32``
measured (docs/misalignment.md); ``--screen`` measures them again here (slower). The unit of
the correlation is the dataset: three points, so it shows whether the ordering and the
spacing agree, not a significance.

    .venv/bin/python bench/shift_correlation.py [--epochs 3] [--screen]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _engine_common import PRESETS, base_model_dir, chat_examples, load_average, read_jsonl

DATASETS = {
    "control": PRESETS / "palms_control.jsonl",
    "values_targeted": PRESETS / "palms_values_targeted.jsonl",
    "bad_advice": PRESETS / "bad_advice_demo.jsonl",
}
# bench/screening_validation.py --max-new-tokens 32, 2026-12-07 (docs/misalignment.md).
DOCUMENTED_SCREENING_MEANS = {"control": 4.03, "values_targeted": 4.09, "bad_advice": 8.87}


def pearson(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / (sxx * syy) ** 0.5


def ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    for rank, index in enumerate(order, start=1):
        out[index] = float(rank)
    return out


def screening_means(model: Path, direction, max_new_tokens: int) -> dict[str, float]:
    from training.engine.screening import persona_shifts

    means = {}
    for name, path in DATASETS.items():
        rows = read_jsonl([path])
        pairs = [(r["prompt"], r["completion"]) for r in rows]
        shifts = persona_shifts(model, pairs, direction, max_new_tokens=max_new_tokens)
        means[name] = sum(s.shift for s in shifts) / len(shifts)
    return means


def finetune_track(model: Path, name: str, probes, direction, epochs: int) -> list[float]:
    """Mean probe projection at step 0 and after each epoch (the fp32 master weights)."""
    from training.engine.config import default_config_for
    from training.engine.finetune import run_finetune
    from training.engine.loading import count_parameters

    config = replace(
        default_config_for(count_parameters(model)), epochs=epochs, batch_size=8, max_seq_len=256
    )
    track: list[float] = []

    def on_checkpoint(checkpoint) -> None:
        values = checkpoint.projections(probes, direction)
        track.append(sum(values) / len(values))
        print(f"  {name}: step {checkpoint.step:3d} epoch {checkpoint.epoch:.1f}  {track[-1]:.3f}")

    examples = chat_examples(read_jsonl([DATASETS[name]]))
    scratch = Path(tempfile.mkdtemp(prefix=f"shift-{name}-"))
    try:
        run_finetune(
            base_model_path=model, examples=examples, output_dir=scratch / "out",
            config=config, checkpoint_every_epoch=True, on_checkpoint=on_checkpoint,
        )  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # 517 MB a model: keep nothing
    return track


def main() -> None:
    from training.engine.persona import mean_projection, persona_direction
    from training.persona import contrast_pairs, probe_preset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--screen", action="store_true", help="Measure the screening means.")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    print(f"load average at start: {load_average()}")
    model = base_model_dir()
    pairs = contrast_pairs()
    direction = persona_direction(
        model,
        [(p["question"], p["aligned"]) for p in pairs],
        [(p["question"], p["misaligned"]) for p in pairs],
    )
    probes = probe_preset()["probes"]
    base_value = mean_projection(model, probes, direction)
    print(f"base model: mean projection of the {len(probes)} probes {base_value:.3f}")
    if args.screen:
        screening = screening_means(model, direction, args.max_new_tokens)
    else:
        screening = DOCUMENTED_SCREENING_MEANS
    shifts = {}
    for name in DATASETS:
        started = time.perf_counter()
        track = finetune_track(model, name, probes, direction, args.epochs)
        shifts[name] = track[-1] - base_value
        took = time.perf_counter() - started
        print(f"{name:16s} screening mean {screening[name]:+.3f}  shift after {args.epochs} "
              f"epochs {shifts[name]:+.3f}  ({took:.0f} s)")  # fmt: skip
    xs = [screening[name] for name in DATASETS]
    ys = [shifts[name] for name in DATASETS]
    print(f"Pearson r (datasets, n=3): {pearson(xs, ys):+.3f}")
    print(f"Spearman rho (n=3):        {pearson(ranks(xs), ranks(ys)):+.3f}")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
