"""The pairwise statistics: prompt-level win/tie/loss rates, Bradley–Terry strengths with
prompt-clustered intervals (and their false-positive rate under the null, by simulation),
and agreement on pairs."""

from __future__ import annotations

import numpy as np
import pytest

from palmsweb.lib import pairwise


def row(prompt, left, right, verdict, *, category="C", pair=None, rater="r1"):
    return {"prompt": prompt, "category": category, "left": left, "right": right,
            "verdict": verdict, "pair": pair or (prompt, left, right), "rater": rater}  # fmt: skip


def test_a_rate_is_the_mean_over_prompts_not_over_judgments():
    # Prompt 1: X wins 3 of 3 (X on the right twice); prompt 2: one tie.
    rows = [
        row(1, "X", "Y", "a", rater="r1"),
        row(1, "Y", "X", "b", rater="r2"),
        row(1, "Y", "X", "b", rater="r3"),
        row(2, "Y", "X", "tie"),
    ]
    (cell, overall) = pairwise.win_tie_loss(rows, ["X", "Y"])
    assert cell.category == "C" and overall.category == pairwise.ALL
    assert cell.n_prompts == 2 and cell.n_judgments == 4
    assert cell.win.value == pytest.approx(0.5)  # (1 + 0) / 2, not 3 / 4
    assert cell.tie.value == pytest.approx(0.5)
    assert cell.loss.value == 0 and cell.both_bad.value == 0
    assert cell.win.ci_low is None  # two prompts: no interval


def test_intervals_appear_with_enough_prompts_and_cover_the_rate():
    rows = [row(p, "X", "Y", "a" if p % 3 else "b") for p in range(12)]
    cell = pairwise.win_tie_loss(rows, ["X", "Y"])[0]
    assert cell.win.ci_low <= cell.win.value <= cell.win.ci_high
    assert cell.win.value + cell.loss.value == pytest.approx(1)


def simulate(rng, strengths, *, prompts=30, raters=3, prompt_sd=1.0, ties=0.1):
    """Judgments of every arm pair on each prompt by ``raters`` raters. Each prompt shifts
    each arm's strength at random (sd ``prompt_sd``), so a prompt's judgments are
    correlated: what the prompt-clustered errors must absorb."""
    arms = list(strengths)
    rows = []
    for p in range(prompts):
        shift = {arm: rng.normal(0, prompt_sd) for arm in arms}
        for i, first in enumerate(arms):
            for second in arms[i + 1 :]:
                left, right = (first, second) if rng.random() < 0.5 else (second, first)
                diff = strengths[left] + shift[left] - strengths[right] - shift[right]
                for r in range(raters):
                    if rng.random() < ties:
                        verdict = "tie"
                    else:
                        verdict = "a" if rng.random() < 1 / (1 + np.exp(-diff)) else "b"
                    rows.append(row(p, left, right, verdict, pair=(p, left, right), rater=r))
    return rows


def test_bradley_terry_recovers_the_order_and_the_reference_is_zero():
    rng = np.random.default_rng(1)
    rows = simulate(rng, {"base": 0.0, "control": 0.3, "vt": 1.5}, prompts=40, prompt_sd=0.3)
    fit = pairwise.bradley_terry(rows, ["base", "control", "vt"])
    base, control, vt = fit.strengths
    assert base.strength == 0 and base.ci_low is None
    assert vt.strength > control.strength > base.strength - 0.5
    assert vt.ci_low > 0  # clearly stronger than the reference
    assert fit.n_ties > 0 and fit.n_decisive + fit.n_ties == len(rows)


def test_bradley_terry_intervals_exclude_zero_about_5_percent_of_the_time_under_the_null():
    """Equal arms, correlated judgments within a prompt: the 95% interval of an arm's
    strength must exclude 0 in about 5% of studies (the false-positive rate of reading
    "the interval excludes 0" as a difference). 400 simulated studies: the binomial 99.9%
    band around 5% is about 1.6%–9.5%."""
    rng = np.random.default_rng(20261206)
    studies, hits = 400, 0
    for _ in range(studies):
        rows = simulate(rng, {"A": 0.0, "B": 0.0}, prompts=30, raters=3, prompt_sd=1.0)
        b = pairwise.bradley_terry(rows, ["A", "B"]).strengths[1]
        hits += not (b.ci_low <= 0 <= b.ci_high)
    assert 0.016 <= hits / studies <= 0.095, hits / studies


def test_one_sided_results_are_reported_as_not_estimable():
    rows = [row(p, "X", "Y", "a") for p in range(10)]
    fit = pairwise.bradley_terry(rows, ["X", "Y"])
    assert fit.strengths[1].strength is None and fit.note


def test_agreement_on_pairs():
    same = [row(p, "X", "Y", v, rater=r) for p, v in enumerate("abab") for r in ("r1", "r2")]
    agreement = pairwise.pair_agreement(same)
    assert agreement.alpha == pytest.approx(1.0) and agreement.percent_agreement == 1.0
    assert agreement.n_pairs == 4
    split = same[:-1] + [row(3, "X", "Y", "tie", rater="r2")]
    assert pairwise.pair_agreement(split).percent_agreement == pytest.approx(0.75)
