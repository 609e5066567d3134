"""Intervals that resample the right cluster: agreement and misalignment rates.

Outputs of one prompt are correlated, and a misalignment evaluation asks every probe
several times, so an interval that resamples single outputs or answers is too narrow.

- Krippendorff's α: :func:`alpha_by_prompt` resamples **prompts**, each with all its
  outputs and all their ratings (percentile bootstrap, seeded).
- Judge–human agreement: :func:`judge_agreement_by_prompt` keeps the point values of
  :func:`palmsweb.lib.stats.judge_agreement` and replaces Spearman's ρ interval with a
  percentile bootstrap over **prompts**.
- Misalignment rate: :func:`misalignment_rate` gives a **design-effect-adjusted Wilson**
  interval: the effective sample size is n / (1 + (m̄ − 1)·ICC), the ICC of answers within
  a probe estimated by one-way ANOVA. Chosen over a bootstrap by probe because 12 probes
  are too few clusters for a bootstrap, and because Wilson still gives an upper bound
  when no answer is misaligned, where every bootstrap resample would be 0.

scipy.stats.bootstrap resamples observations, not clusters of different sizes, so these
loops are written out with numpy.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from palmsweb.lib import stats
from palmsweb.lib.ratings import RatingTable, sort_value

ALPHA_RESAMPLES = 1_000
RHO_RESAMPLES = 2_000
PROMPT_BOOTSTRAP = "percentile bootstrap over prompts"


def _percentile(draws: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    valid = draws[~np.isnan(draws)]
    if valid.size == 0:
        return None, None
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(valid, [tail, 1.0 - tail])
    return float(low), float(high)


# --------------------------------------------------------------------------- α


@dataclass(frozen=True)
class ClusterAlpha:
    alpha: float | None
    ci_low: float | None
    ci_high: float | None
    level: str
    n_units: int  # pairable outputs (two or more ratings)
    n_clusters: int  # prompts holding them: what is resampled
    n_resamples: int
    n_undefined: int  # resamples where α was undefined; left out of the interval
    method: str = PROMPT_BOOTSTRAP


def alpha_by_prompt(
    table: RatingTable,
    level: stats.Level = "ordinal",
    *,
    confidence: float = 0.95,
    n_resamples: int = ALPHA_RESAMPLES,
    seed: int = 0,
) -> ClusterAlpha:
    """Krippendorff's α over the table's outputs with a prompt-cluster bootstrap interval.

    Only pairable outputs count (as in :func:`stats.alpha_bootstrap_ci`); a resample
    where α is undefined is skipped and counted."""
    matrix = stats.reliability_matrix(
        {"unit": r.output_id, "rater": r.rater, "score": r.score} for r in table.rows
    )
    m = matrix.data
    keep = (~np.isnan(m)).sum(axis=0) >= 2
    m = m[:, keep]
    units = [u for u, k in zip(matrix.units, keep, strict=True) if k]
    prompt_of = {o.output_id: o.prompt_id for o in table.output_means}
    prompts = sorted({prompt_of[u] for u in units}, key=sort_value)
    columns = [np.flatnonzero([prompt_of[u] == p for u in units]) for p in prompts]
    point = stats.krippendorff_alpha(m, level) if units else None
    head = dict(level=level, n_units=len(units), n_clusters=len(prompts))
    if point is None or len(prompts) < 2:
        return ClusterAlpha(point, None, None, n_resamples=0, n_undefined=0, **head)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(prompts), size=(n_resamples, len(prompts)))
    if level in ("ordinal", "interval"):
        draws = _alpha_draws(m, columns, picks, level)
    else:
        draws = np.array(
            [
                stats.krippendorff_alpha(m[:, np.concatenate([columns[i] for i in p])], level)
                for p in picks
            ],
            dtype=float,
        )
    low, high = _percentile(draws, confidence)
    undefined = int(np.isnan(draws).sum())
    return ClusterAlpha(point, low, high, n_resamples=n_resamples, n_undefined=undefined, **head)


def _alpha_draws(
    m: np.ndarray, columns: list[np.ndarray], picks: np.ndarray, level: str
) -> np.ndarray:
    """α of every resample at once (NaN where undefined), equal to calling
    ``stats.krippendorff_alpha`` on each resampled matrix (tested), ~100× faster.

    Krippendorff's coincidence matrix is a sum over units, so each prompt's matrix is
    computed once and a resample's matrix is the pick counts times them. α = 1 − (n − 1)
    Σ o·δ² / Σ n_c·n_k·δ², with δ² from the resample's own marginals for the ordinal level
    (values absent from a resample have n = 0 and add nothing, as in the package)."""
    values = np.unique(m[~np.isnan(m)])
    v = values.size
    per_prompt = np.zeros((len(columns), v, v))
    for i, cols in enumerate(columns):
        for unit in m[:, cols].T:
            counts = np.array([(unit == x).sum() for x in values], dtype=float)
            mu = counts.sum()
            per_prompt[i] += (np.outer(counts, counts) - np.diag(counts)) / (mu - 1)
    weights = np.stack([np.bincount(p, minlength=len(columns)) for p in picks]).astype(float)
    o = np.einsum("bp,pck->bck", weights, per_prompt)
    n_c = o.sum(axis=2)
    n = n_c.sum(axis=1)
    d2 = _squared_distances(values, n_c, level)
    observed = (o * d2).sum(axis=(1, 2))
    expected = (n_c[:, :, None] * n_c[:, None, :] * d2).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = 1.0 - (n - 1) * observed / expected
    draws[~(expected > 0)] = np.nan
    return draws


def _squared_distances(values: np.ndarray, n_c: np.ndarray, level) -> np.ndarray:
    """δ²(c, k) per resample: interval (c − k)², ordinal (Σ_{g=c..k} n_g − (n_c + n_k)/2)²."""
    b, v = n_c.shape
    if level == "interval":
        return np.broadcast_to(np.subtract.outer(values, values) ** 2, (b, v, v))
    if level != "ordinal":
        raise ValueError(f"level {level!r}: only ordinal and interval are vectorised")
    cum = np.concatenate([np.zeros((b, 1)), np.cumsum(n_c, axis=1)], axis=1)
    lo = np.minimum.outer(np.arange(v), np.arange(v))
    hi = np.maximum.outer(np.arange(v), np.arange(v))
    between = cum[:, hi + 1] - cum[:, lo]
    return (between - (n_c[:, :, None] + n_c[:, None, :]) / 2) ** 2


# --------------------------------------------------------------------------- judge


def judge_agreement_by_prompt(
    judge: Sequence[float],
    human_mean: Sequence[float],
    human_median: Sequence[float],
    prompts: Sequence[Hashable],
    *,
    scale: Sequence[int] = (1, 2, 3, 4, 5),
    confidence: float = 0.95,
    n_resamples: int = RHO_RESAMPLES,
    seed: int = 0,
) -> stats.JudgeAgreement:
    """:func:`stats.judge_agreement` with the interval of ρ from resampling prompts.

    ``prompts[i]`` is the prompt of item i. Items are sorted by prompt (and then by
    their values) first, so the result does not depend on the order they came in."""
    if not len(judge) == len(human_mean) == len(human_median) == len(prompts):
        raise ValueError("judge, human_mean, human_median and prompts must have the same length")
    order = sorted(
        range(len(judge)),
        key=lambda i: (sort_value(prompts[i]), judge[i], human_mean[i], human_median[i]),
    )
    j = [float(judge[i]) for i in order]
    hm = [float(human_mean[i]) for i in order]
    hmed = [float(human_median[i]) for i in order]
    cl = [prompts[i] for i in order]
    point = stats.judge_agreement(j, hm, hmed, scale=scale, n_resamples=1, seed=seed)
    clusters = list(dict.fromkeys(cl))
    if point.spearman is None or len(clusters) < 2:
        return replace(
            point, spearman_ci_low=None, spearman_ci_high=None, n_resamples=0, n_undefined=0
        )
    members = [np.flatnonzero([c == k for c in cl]) for k in clusters]
    x, y = np.asarray(j), np.asarray(hm)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(clusters), size=(n_resamples, len(clusters)))
    sizes = {m.size for m in members}
    if len(sizes) == 1:  # balanced (the usual case): one vectorised pass
        idx = np.stack(members)[picks].reshape(n_resamples, -1)
        draws = stats.spearman_rows(x[idx], y[idx])
    else:
        draws = np.empty(n_resamples)
        for b, pick in enumerate(picks):
            idx = np.concatenate([members[i] for i in pick])
            rho = stats.spearman_rho(x[idx], y[idx]) if idx.size >= 3 else None
            draws[b] = np.nan if rho is None else rho
    low, high = _percentile(draws, confidence)
    return replace(
        point,
        spearman_ci_low=low,
        spearman_ci_high=high,
        n_resamples=n_resamples,
        n_undefined=int(np.isnan(draws).sum()),
    )


# --------------------------------------------------------------------------- misalignment


@dataclass(frozen=True)
class RateInterval:
    """A proportion over answers clustered by probe, with a design-effect-adjusted
    Wilson interval."""

    n: int
    count: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    n_clusters: int
    icc: float | None  # within-probe correlation (ANOVA), truncated to [0, 1]
    design_effect: float | None
    n_effective: float | None
    method: str = "Wilson, design-effect adjusted (ICC by probe)"
    notes: tuple[str, ...] = ()


def _anova_icc(groups: list[np.ndarray]) -> float | None:
    """One-way ANOVA ICC of binary outcomes (Fleiss), unequal cluster sizes."""
    sizes = np.array([g.size for g in groups], dtype=float)
    n, k = sizes.sum(), len(groups)
    if k < 2 or n <= k:
        return None
    means = np.array([g.mean() for g in groups])
    grand = float(np.concatenate(groups).mean())
    msb = float((sizes * (means - grand) ** 2).sum() / (k - 1))
    msw = float(sum(((g - g.mean()) ** 2).sum() for g in groups) / (n - k))
    m0 = (n - (sizes**2).sum() / n) / (k - 1)
    denominator = msb + (m0 - 1) * msw
    if denominator <= 0:
        return None
    return float(min(1.0, max(0.0, (msb - msw) / denominator)))


def misalignment_rate(
    flags_by_probe: Mapping[Hashable, Sequence[bool]], *, confidence: float = 0.95
) -> RateInterval:
    """The share of flagged answers (e.g. misaligned among counted ones) over probes.

    The Wilson interval (``statsmodels`` ``proportion_confint``) is computed on the
    effective sample size n / deff, deff = 1 + (Σm²/n − 1)·ICC. When the ICC cannot be
    estimated (every answer the same, or one probe) no adjustment is made and a note
    says so."""
    from statsmodels.stats.proportion import proportion_confint

    groups = [
        np.asarray(flags_by_probe[k], dtype=float)
        for k in sorted(flags_by_probe, key=sort_value)
        if len(flags_by_probe[k])
    ]
    n = int(sum(g.size for g in groups))
    count = int(sum(g.sum() for g in groups))
    if n == 0:
        return RateInterval(0, 0, None, None, None, 0, None, None, None)
    icc = _anova_icc(groups)
    notes = ()
    if icc is None:
        notes = ("the within-probe correlation could not be estimated: no adjustment",)
    sizes = np.array([g.size for g in groups], dtype=float)
    deff = 1.0 + ((sizes**2).sum() / n - 1.0) * (icc or 0.0)
    n_eff = n / deff
    low, high = proportion_confint(count / n * n_eff, n_eff, alpha=1 - confidence, method="wilson")
    # Wilson's bounds are exactly 0 for no flagged answer and 1 for all flagged; the
    # rescaled count leaves rounding noise (2.8e-17) there.
    low = 0.0 if count == 0 else float(low)
    high = 1.0 if count == n else float(high)
    return RateInterval(
        n=n,
        count=count,
        rate=count / n,
        ci_low=low,
        ci_high=high,
        n_clusters=len(groups),
        icc=icc,
        design_effect=float(deff),
        n_effective=float(n_eff),
        notes=notes,
    )
