#!/usr/bin/env python3
"""Simulated false-positive rates (and power) of the report's tests, before and after
issue 15.

For each variance structure in ``palmsweb.lib.simulate.STRUCTURES`` it simulates null
studies of the PALMS design (8 categories × 5 prompts, 3 samples, 3 raters, ratings
rounded to 1–5) and prints how often each test rejects at α = 0.05:

- **after**: the paired t on prompt means (primary per category), Holm's family-wise
  rate, and the paired t on all 40 prompts (the mixed model's fallback);
- **before**: Welch's t on per-output means, 15 vs 15 per category (what
  ``palmsweb.lib.stats.compare`` computes and the report used), Holm's family-wise rate,
  and Welch on all 120 vs 120 outputs.

Then the power of both at a true difference of 0.5 (default prior). With ``--mixed N``
it also fits the overall mixed model (``palmsweb.lib.mixed``) to N null studies of the
default prior: a few seconds each, so keep N in the hundreds.

Usage (from the repository root):

    .venv/bin/python bench/simulate_fpr.py                 # 10,000 studies per structure
    .venv/bin/python bench/simulate_fpr.py --studies 2000 --mixed 200 --json fpr.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from palmsweb.lib import mixed, simulate  # noqa: E402
from palmsweb.lib.ratings import RatingTable  # noqa: E402

VT, BASE = ("values_targeted", ""), ("base", "")


def mixed_rates(n: int, seed: int) -> dict:
    rejected = fell_back = 0
    start = time.perf_counter()
    for i in range(n):
        table = RatingTable(simulate.simulate_study(seed=seed + i))
        fit = mixed.fit_mixed(table, [(VT, BASE)])
        fell_back += fit.fell_back
        p = fit.contrasts[0].p
        rejected += p is not None and p < 0.05
    rate = rejected / n
    return {
        "studies": n,
        "rate": rate,
        "se": math.sqrt(rate * (1 - rate) / n),
        "fell_back": fell_back,
        "seconds_per_fit": (time.perf_counter() - start) / n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed", type=int, default=0, help="null studies for the mixed model")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"{args.studies} null studies per structure; per-category rates over "
        f"{args.studies * 8} tests (± Monte Carlo SE)\n"
    )
    header = (
        f"{'structure':36} {'ICC':>5} | {'paired t':>15} {'Holm FW':>8} {'overall':>8} | "
        f"{'Welch (old)':>15} {'Holm FW':>8} {'overall':>8}"
    )
    print(header)
    print("-" * len(header))
    results = {}
    for name, comps in simulate.STRUCTURES:
        r = simulate.rejection_rates(components=comps, n_studies=args.studies, seed=args.seed)
        icc = comps.intra_prompt_correlation(3)
        results[name] = {"icc": icc, "components": comps.as_dict(), **asdict(r)}
        print(
            f"{name:36} {icc:5.2f} | {r.paired:.4f} ± {r.paired_se:.4f} {r.paired_familywise:8.4f} "
            f"{r.paired_overall:8.4f} | {r.welch:.4f} ± {r.welch_se:.4f} "
            f"{r.welch_familywise:8.4f} {r.welch_overall:8.4f}"
        )
    power = simulate.rejection_rates(effect=0.5, n_studies=args.studies, seed=args.seed + 1)
    print(
        f"\npower at +0.5 (default prior): paired t per category {power.paired:.3f}, "
        f"overall {power.paired_overall:.3f}; Welch per category {power.welch:.3f}, "
        f"overall {power.welch_overall:.3f}"
    )
    out = {"studies": args.studies, "seed": args.seed, "null": results, "power_0_5": asdict(power)}
    if args.mixed:
        m = mixed_rates(args.mixed, args.seed + 100_000)
        out["mixed_model_null"] = m
        print(
            f"mixed model, default prior, {m['studies']} null studies: false-positive rate "
            f"{m['rate']:.3f} ± {m['se']:.3f} ({m['fell_back']} fell back to the paired t; "
            f"{m['seconds_per_fit']:.1f} s per fit)"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
