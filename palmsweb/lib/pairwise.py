"""The statistics of a pairwise study: win/tie/loss per arm pair, Bradley–Terry strengths,
and agreement between raters on the same pair.

**The unit of analysis is the prompt.** Judgments of one prompt are correlated (the same
question, the same outputs seen by several raters, several samples), so:

- a win/tie/loss rate is the mean over prompts of each prompt's share of judgments, and its
  interval is a bootstrap that resamples prompts (``stats.bootstrap_ci``: scipy's BCa,
  percentile as the fallback); no interval under :data:`MIN_CI_N` prompts;
- Bradley–Terry strengths come from a logistic regression (``statsmodels`` ``Logit``, the
  maintained implementation we already depend on, rather than ``choix``, which gives no
  standard errors) of "the left output won" on +1/−1 arm indicators, with an intercept that
  absorbs any preference for the left (A) position, and **cluster-robust standard errors
  by prompt**. Ties and "both bad" carry no order, so they are left out of the fit (their
  counts are reported beside it). Strengths are log-odds relative to the first arm (0).
- agreement is Krippendorff's α (nominal, the four verdicts) over pairs judged by two or
  more raters, with a bootstrap over pairs (``stats.alpha_bootstrap_ci``), each verdict
  first turned into the raters' shared frame (A better, B better, tie, both bad; A and B
  are the same for every rater of a pair).

Input rows are dicts: ``prompt``, ``category``, ``left`` and ``right`` (arm keys), ``verdict``
(``a``, ``b``, ``tie``, ``both_bad``), ``pair`` and ``rater``. Output is frozen dataclasses with
JSON-friendly fields; undefined values are None, never NaN.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from palmsweb.lib import stats

MIN_CI_N = 5  # fewer prompts than this: no interval, only n
CI_RESAMPLES = 2_000
OUTCOMES = ("win", "tie", "loss", "both_bad")  # from the first arm of the pair's view
VERDICT_CODES = {"a": 0, "b": 1, "tie": 2, "both_bad": 3}
ALL = "All categories"
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Rate:
    value: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class PairOutcome:
    """How arm ``first`` fared against arm ``second`` in one category (or all): each rate is
    the mean over prompts of the prompt's share of judgments with that outcome."""

    first: Hashable
    second: Hashable
    category: str
    n_prompts: int
    n_judgments: int
    win: Rate
    tie: Rate
    loss: Rate
    both_bad: Rate


def _outcome(row: Mapping, first: Hashable) -> str:
    """The verdict from ``first``'s side of the pair."""
    verdict = row["verdict"]
    if verdict in ("tie", "both_bad"):
        return verdict
    winner = row["left"] if verdict == "a" else row["right"]
    return "win" if winner == first else "loss"


def _rate(per_prompt: np.ndarray, seed: int) -> Rate:
    if per_prompt.size == 0:
        return Rate(None, None, None)
    value = float(per_prompt.mean())
    if per_prompt.size < MIN_CI_N:
        return Rate(value, None, None)
    low, high, _ = stats.bootstrap_ci(
        (per_prompt,), np.mean, confidence=0.95, n_resamples=CI_RESAMPLES, seed=seed
    )
    return Rate(value, low, high)


def _pair_outcome(rows: list[Mapping], first, second, category: str, seed: int) -> PairOutcome:
    by_prompt: dict[Hashable, list[str]] = defaultdict(list)
    for row in rows:
        by_prompt[row["prompt"]].append(_outcome(row, first))
    prompts = sorted(by_prompt, key=str)  # a fixed order: the bootstrap is seeded
    shares = {
        outcome: np.array([by_prompt[p].count(outcome) / len(by_prompt[p]) for p in prompts])
        for outcome in OUTCOMES
    }
    return PairOutcome(
        first=first,
        second=second,
        category=category,
        n_prompts=len(prompts),
        n_judgments=len(rows),
        **{outcome: _rate(shares[outcome], seed) for outcome in OUTCOMES},
    )


def win_tie_loss(rows: Iterable[Mapping], arms: Sequence[Hashable], *, seed: int = 0):
    """Per arm pair (in ``arms`` order) and per category, then over all categories."""
    rows = list(rows)
    found: list[PairOutcome] = []
    for first, second in combinations(arms, 2):
        both = [r for r in rows if {r["left"], r["right"]} == {first, second}]
        if not both:
            continue
        for category in sorted({r["category"] for r in both}):
            in_category = [r for r in both if r["category"] == category]
            found.append(_pair_outcome(in_category, first, second, category, seed))
        found.append(_pair_outcome(both, first, second, ALL, seed))
    return found


@dataclass(frozen=True)
class Strength:
    arm: Hashable
    strength: float | None  # log-odds of beating the reference arm (the first: 0)
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class BradleyTerry:
    strengths: tuple[Strength, ...]
    left_bias: float | None  # the intercept: log-odds that A wins when the arms are equal
    n_decisive: int  # judgments in the fit (A better or B better)
    n_ties: int
    n_both_bad: int
    n_prompts: int
    note: str = ""


def _design(decisive: list[Mapping], arms: Sequence[Hashable]):
    index = {arm: i for i, arm in enumerate(arms)}
    x = np.zeros((len(decisive), len(arms)))
    for i, row in enumerate(decisive):
        x[i, index[row["left"]]] += 1.0
        x[i, index[row["right"]]] -= 1.0
    x[:, 0] = 1.0  # the reference arm's column becomes the intercept (left-position bias)
    y = np.array([1.0 if row["verdict"] == "a" else 0.0 for row in decisive])
    prompts = {p: i for i, p in enumerate(sorted({r["prompt"] for r in decisive}, key=str))}
    groups = np.array([prompts[r["prompt"]] for r in decisive])
    return x, y, groups


def bradley_terry(rows: Iterable[Mapping], arms: Sequence[Hashable]) -> BradleyTerry:
    """Strength per arm with 95% Wald intervals from prompt-clustered standard errors."""
    import statsmodels.api as sm  # slow to import; only the report needs it

    rows = [r for r in rows if r["left"] in arms and r["right"] in arms]
    decisive = [r for r in rows if r["verdict"] in ("a", "b")]
    counts = {
        "n_decisive": len(decisive),
        "n_ties": sum(r["verdict"] == "tie" for r in rows),
        "n_both_bad": sum(r["verdict"] == "both_bad" for r in rows),
        "n_prompts": len({r["prompt"] for r in rows}),
    }
    empty = tuple(Strength(arm, 0.0 if i == 0 else None, None, None) for i, arm in enumerate(arms))
    if len(arms) < 2 or not decisive or counts["n_prompts"] < 2:
        return BradleyTerry(empty, None, **counts, note="Too few decisive judgments to fit.")
    x, y, groups = _design(decisive, arms)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; checked below
            fit = sm.Logit(y, x).fit(
                disp=0, cov_type="cluster", cov_kwds={"groups": groups}, maxiter=200
            )
        params, se = np.asarray(fit.params), np.asarray(fit.bse)
    except Exception as error:  # statsmodels raises on perfect separation, singular designs
        return BradleyTerry(empty, None, **counts, note=f"The fit failed: {error}")
    if not (np.all(np.isfinite(params)) and np.all(np.isfinite(se))) or np.any(np.abs(params) > 15):
        note = "One arm won (or lost) every decisive judgment: strengths are not estimable."
        return BradleyTerry(empty, None, **counts, note=note)
    strengths = [Strength(arms[0], 0.0, None, None)]
    for i, arm in enumerate(arms[1:], start=1):
        value, half = float(params[i]), Z95 * float(se[i])
        strengths.append(Strength(arm, value, value - half, value + half))
    return BradleyTerry(tuple(strengths), float(params[0]), **counts)


@dataclass(frozen=True)
class PairAgreement:
    alpha: float | None
    ci_low: float | None
    ci_high: float | None
    n_pairs: int  # pairs with two or more judgments (the units resampled)
    percent_agreement: float | None  # share of rater pairs on a pair who gave one verdict


def pair_agreement(rows: Iterable[Mapping], *, seed: int = 0) -> PairAgreement:
    """Krippendorff's α (nominal) on the four verdicts, units = pairs."""
    rows = list(rows)
    matrix = stats.reliability_matrix(
        ({"unit": r["pair"], "rater": r["rater"], "score": VERDICT_CODES[r["verdict"]]}
         for r in rows),
        unit="unit", rater="rater", score="score",
    )  # fmt: skip
    interval = stats.alpha_bootstrap_ci(matrix, "nominal", n_resamples=500, seed=seed)
    agree = total = 0
    by_pair: dict[Hashable, list[str]] = defaultdict(list)
    for row in rows:
        by_pair[row["pair"]].append(row["verdict"])
    for verdicts in by_pair.values():
        for one, other in combinations(verdicts, 2):
            total += 1
            agree += one == other
    return PairAgreement(
        alpha=interval.alpha,
        ci_low=interval.ci_low,
        ci_high=interval.ci_high,
        n_pairs=interval.n_units,
        percent_agreement=agree / total if total else None,
    )
