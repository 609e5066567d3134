"""Statistics for the PALMS report: summaries, two-arm comparisons, Holm, Krippendorff's α,
and the agreement of an LLM judge with the human raters (Spearman's ρ, weighted κ).

Django-free on purpose: the report code gathers plain numbers and calls these functions.
The tests come from scipy, statsmodels and `krippendorff`. The few lines of arithmetic
done here (Cohen's d, rank-biserial from U, the percentile bootstrap over units for α, a
vectorised Spearman for its bootstrap) have no library function in those packages.
docs/statistics.md explains each choice. The prompt-level analysis that the report's
primary numbers come from is in :mod:`palmsweb.lib.clustered` and its siblings.

Undefined results (too few values, no variance) come back as ``None`` with a note. They
never come back as 0 or NaN, which could be mistaken for a real value.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import krippendorff
import numpy as np
from scipy import stats as sps

Level = Literal["nominal", "ordinal", "interval", "ratio"]


# --------------------------------------------------------------------------- helpers


def _clean(scores: Iterable[float | None]) -> np.ndarray:
    """Return the present values as floats; None and NaN mean "missing" and are dropped."""
    values = np.array([np.nan if s is None else float(s) for s in scores], dtype=float)
    if np.isinf(values).any():
        raise ValueError("scores must be finite numbers or None")
    return values[~np.isnan(values)]


def json_float(x: Any) -> float | None:
    """A plain float for JSON, or None when the value is undefined (NaN or infinite)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


_float = json_float  # the short name this module uses


def bootstrap_ci(
    data: tuple[np.ndarray, ...],
    statistic,
    *,
    confidence: float,
    n_resamples: int,
    seed: int,
) -> tuple[float | None, float | None, str | None]:
    """Seeded BCa interval from scipy; percentile if BCa is undefined (e.g. all values tied).

    Returns (low, high, method actually used: "BCa", "percentile", or None when neither
    gives a finite interval). ``statistic`` must be vectorised (take ``axis``).
    """
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            # scipy warns (DegenerateDataWarning) and returns NaN when BCa's
            # acceleration is 0/0. We then fall back to the percentile method.
            warnings.simplefilter("ignore")
            res = sps.bootstrap(
                data,
                statistic,
                n_resamples=n_resamples,
                confidence_level=confidence,
                method=method,
                vectorized=True,
                rng=np.random.default_rng(seed),
            )
        low, high = _float(res.confidence_interval.low), _float(res.confidence_interval.high)
        if low is not None and high is not None:
            return low, high, method
    return None, None, None


# --------------------------------------------------------------------------- describe


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float | None
    sd: float | None  # sample standard deviation (ddof=1)
    ci_low: float | None
    ci_high: float | None
    ci_method: str | None = None  # "BCa" or "percentile" (fallback); None when no CI


def describe(
    scores: Iterable[float | None],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> Summary:
    """n, mean, SD and a seeded bootstrap CI of the mean.

    The CI is BCa (``scipy.stats.bootstrap``). When BCa is undefined, for example when
    every value is the same, it falls back to the percentile method. With n < 2 the SD
    and CI are None. Missing scores (None or NaN) are dropped, so n counts only the
    present ones.
    """
    x = _clean(scores)
    n = int(x.size)
    if n == 0:
        return Summary(n=0, mean=None, sd=None, ci_low=None, ci_high=None)
    mean = float(np.mean(x))
    if n < 2:
        return Summary(n=n, mean=mean, sd=None, ci_low=None, ci_high=None)
    low, high, method = bootstrap_ci(
        (x,), np.mean, confidence=confidence, n_resamples=n_resamples, seed=seed
    )
    return Summary(
        n=n,
        mean=mean,
        sd=float(np.std(x, ddof=1)),
        ci_low=low,
        ci_high=high,
        ci_method=method,
    )


# --------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class Comparison:
    """Two-sided comparison of sample a against sample b. Positive effects mean a > b."""

    n_a: int
    n_b: int
    mean_diff: float | None = None  # mean(a) - mean(b)
    welch_t: float | None = None
    welch_df: float | None = None
    welch_p: float | None = None
    mannwhitney_u: float | None = None  # U statistic of sample a
    mannwhitney_p: float | None = None
    cohens_d: float | None = None  # (mean_a - mean_b) / pooled SD
    rank_biserial: float | None = None  # P(a > b) - P(a < b), in [-1, 1]
    diff_ci_low: float | None = None  # seeded bootstrap CI of mean_diff
    diff_ci_high: float | None = None
    notes: tuple[str, ...] = ()


def _mean_diff(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def compare(
    a: Iterable[float | None],
    b: Iterable[float | None],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> Comparison:
    """Compare a (e.g. values-targeted) with b (e.g. base). All tests are two-sided.

    - Welch's t-test: ``scipy.stats.ttest_ind(equal_var=False)``.
    - Mann-Whitney U: ``scipy.stats.mannwhitneyu``, method "auto": the exact null when
      one sample has at most 8 values and there are no ties, otherwise the normal
      approximation with tie and continuity correction (always so for 15 vs 15 outputs).
    - Cohen's d uses the pooled SD. Rank-biserial is ``2*U_a/(n_a*n_b) - 1``.
    - ``seed`` seeds the bootstrap CI of the mean difference (BCa, independent
      resampling of each sample).

    Missing values (None or NaN) are dropped. Any statistic that is undefined for the
    data comes back as None, and ``notes`` says why.
    """
    xa, xb = _clean(a), _clean(b)
    na, nb = int(xa.size), int(xb.size)
    if na == 0 or nb == 0:
        return Comparison(n_a=na, n_b=nb, notes=("a sample is empty",))
    notes: list[str] = []

    mean_diff = float(np.mean(xa) - np.mean(xb))

    mwu = sps.mannwhitneyu(xa, xb, alternative="two-sided")
    u, mw_p = _float(mwu.statistic), _float(mwu.pvalue)
    rank_biserial = None if u is None else 2.0 * u / (na * nb) - 1.0

    welch_t = welch_df = welch_p = cohens_d = None
    low = high = None
    if na < 2 or nb < 2:
        notes.append("Welch's t, Cohen's d and the CI need at least 2 values per sample")
    else:
        var_a, var_b = np.var(xa, ddof=1), np.var(xb, ddof=1)
        if var_a == 0 and var_b == 0:
            notes.append("both samples are constant: t and d are undefined")
        else:
            t = sps.ttest_ind(xa, xb, equal_var=False)
            welch_t, welch_df, welch_p = _float(t.statistic), _float(t.df), _float(t.pvalue)
            pooled = math.sqrt(((na - 1) * var_a + (nb - 1) * var_b) / (na + nb - 2))
            cohens_d = mean_diff / pooled
        low, high, _method = bootstrap_ci(
            (xa, xb), _mean_diff, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
    return Comparison(
        n_a=na,
        n_b=nb,
        mean_diff=mean_diff,
        welch_t=welch_t,
        welch_df=welch_df,
        welch_p=welch_p,
        mannwhitney_u=u,
        mannwhitney_p=mw_p,
        cohens_d=_float(cohens_d),
        rank_biserial=_float(rank_biserial),
        diff_ci_low=low,
        diff_ci_high=high,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- Holm


def holm(pvalues: Mapping[str, float | None]) -> dict[str, float | None]:
    """Holm-Bonferroni adjusted p-values, keyed like the input (same order).

    The family is every finite p-value passed in; the report passes the categories of
    one comparison, for example values-targeted vs base. None or NaN entries are not
    tested: they stay None and do not count toward the family size. Computed with
    ``statsmodels.stats.multitest.multipletests(method="holm")``.
    """
    # statsmodels costs about a second to import; load it only when the report needs it.
    from statsmodels.stats.multitest import multipletests

    keys = [k for k, p in pvalues.items() if p is not None and not math.isnan(p)]
    raw = np.array([float(pvalues[k]) for k in keys], dtype=float)
    if ((raw < 0) | (raw > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    adjusted: dict[str, float] = {}
    if keys:
        _reject, corrected, _sidak, _bonf = multipletests(raw, method="holm")
        adjusted = {k: float(p) for k, p in zip(keys, corrected, strict=True)}
    return {k: adjusted.get(k) for k in pvalues}


# --------------------------------------------------------------------------- agreement


@dataclass(frozen=True)
class ReliabilityData:
    """Raters x units matrix (NaN = no rating), with the row and column labels."""

    data: np.ndarray
    raters: list[Hashable]
    units: list[Hashable]


def _ordered(labels: list[Hashable]) -> list[Hashable]:
    # Sorting makes the matrix (and so a seeded bootstrap) independent of row order.
    # Labels that cannot be compared keep their first-seen order.
    try:
        return sorted(labels)
    except TypeError:
        return labels


def reliability_matrix(
    rows: Iterable[Mapping[str, Any]],
    *,
    unit: str = "unit",
    rater: str = "rater",
    score: str = "score",
) -> ReliabilityData:
    """Turn long-format rows ``{"unit": ..., "rater": ..., "score": ...}`` into a matrix.

    A None score is kept as a missing cell. Two ratings of one unit by one rater raise
    ValueError, because the database should never allow that.
    """
    cells: dict[tuple[Hashable, Hashable], float] = {}
    raters: dict[Hashable, None] = {}
    units: dict[Hashable, None] = {}
    for row in rows:
        u, r, s = row[unit], row[rater], row[score]
        if (u, r) in cells:
            raise ValueError(f"rater {r!r} rated unit {u!r} more than once")
        cells[(u, r)] = np.nan if s is None else float(s)
        raters.setdefault(r)
        units.setdefault(u)
    rater_list, unit_list = _ordered(list(raters)), _ordered(list(units))
    ri = {r: i for i, r in enumerate(rater_list)}
    ui = {u: j for j, u in enumerate(unit_list)}
    data = np.full((len(rater_list), len(unit_list)), np.nan)
    for (u, r), s in cells.items():
        data[ri[r], ui[u]] = s
    return ReliabilityData(data=data, raters=rater_list, units=unit_list)


def _as_matrix(reliability_data) -> np.ndarray:
    if isinstance(reliability_data, ReliabilityData):
        return reliability_data.data
    rows = [[np.nan if v is None else float(v) for v in row] for row in reliability_data]
    if len({len(r) for r in rows}) > 1:
        raise ValueError("every rater row must have one cell per unit")
    return np.array(rows, dtype=float).reshape(len(rows), -1)


def _alpha(m: np.ndarray, level: Level, value_domain) -> float | None:
    try:
        a = krippendorff.alpha(
            reliability_data=m, level_of_measurement=level, value_domain=value_domain
        )
    except ValueError:
        # The package refuses when no unit has two ratings, or when only one value
        # occurs at all. Both make α 0/0.
        return None
    return _float(a)


def krippendorff_alpha(
    reliability_data: ReliabilityData | Sequence[Sequence[float | None]] | np.ndarray,
    level: Level = "ordinal",
    *,
    value_domain: Sequence[float] | None = None,
) -> float | None:
    """Krippendorff's α for a raters x units matrix (None/NaN = missing), via `krippendorff`.

    ``level`` picks the difference function. For PALMS ratings the primary level is
    ordinal and interval is secondary. Pass ``value_domain=[1, 2, 3, 4, 5]`` to fix the
    scale; it does not change ordinal or interval α, only nominal bookkeeping. Returns
    None when α is undefined: no unit has two ratings, or every rating is the same value
    (no variation, so agreement cannot be told apart from chance).
    """
    return _alpha(_as_matrix(reliability_data), level, value_domain)


@dataclass(frozen=True)
class AlphaInterval:
    alpha: float | None
    ci_low: float | None
    ci_high: float | None
    n_units: int  # pairable units (two or more ratings), the units resampled
    n_resamples: int
    n_undefined: int  # resamples where α was undefined; left out of the interval


def alpha_bootstrap_ci(
    reliability_data: ReliabilityData | Sequence[Sequence[float | None]] | np.ndarray,
    level: Level = "ordinal",
    *,
    value_domain: Sequence[float] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 1_000,
    seed: int = 0,
) -> AlphaInterval:
    """α with a seeded percentile bootstrap interval that resamples units (columns).

    Only pairable units (two or more ratings) are resampled, since the others add
    nothing to α. A resample where α is undefined (every value identical) is skipped
    and counted in ``n_undefined``. scipy.stats.bootstrap cannot skip such resamples,
    which is why this loop is written out with numpy.
    """
    m = _as_matrix(reliability_data)
    m = m[:, (~np.isnan(m)).sum(axis=0) >= 2]
    n_units = int(m.shape[1])
    point = _alpha(m, level, value_domain) if n_units else None
    if point is None:
        return AlphaInterval(point, None, None, n_units, 0, 0)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_units, size=(n_resamples, n_units))
    draws = np.array([_alpha(m[:, p], level, value_domain) for p in picks], dtype=float)
    valid = draws[~np.isnan(draws)]
    n_undefined = int(n_resamples - valid.size)
    if valid.size == 0:
        return AlphaInterval(point, None, None, n_units, n_resamples, n_undefined)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(valid, [tail, 1.0 - tail])
    return AlphaInterval(point, float(low), float(high), n_units, n_resamples, n_undefined)


# --------------------------------------------------------------------------- judge vs humans


def round_score(x: float) -> int:
    """Round half up (2.5 → 3), so a tie never depends on Python's banker's rounding."""
    return int(math.floor(float(x) + 0.5))


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ: Pearson's r of the average ranks (ties share a rank). None when
    fewer than 3 pairs or either side is constant."""
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    if len(x) < 3:
        return None
    return _float(spearman_rows(np.asarray([x], dtype=float), np.asarray([y], dtype=float))[0])


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ρ for each row pair of two (B, n) arrays; NaN where a row is constant (vectorised,
    for bootstraps; scipy's spearmanr would need a loop)."""
    rx = sps.rankdata(x, axis=1)
    ry = sps.rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    num = (rx * ry).sum(axis=1)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def quadratic_weighted_kappa(
    a: Sequence[int], b: Sequence[int], *, categories: Sequence[int] = (1, 2, 3, 4, 5)
) -> float | None:
    """Cohen's κ with quadratic weights w_ij = (i − j)² / (k − 1)² on the positions of
    ``categories``, by ``statsmodels.stats.inter_rater.cohens_kappa(table,
    wt="quadratic")``. None when there is no pair or the chance disagreement is 0 (both
    sides one same value)."""
    from statsmodels.stats.inter_rater import cohens_kappa

    if len(a) != len(b):
        raise ValueError("a and b must have the same length")
    if not a or len(categories) < 2:
        return None
    table = confusion_matrix(a, b, categories=categories)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        # statsmodels divides 0 by 0 (with a RuntimeWarning) when κ is undefined.
        warnings.simplefilter("ignore", RuntimeWarning)
        kappa = cohens_kappa(table, wt="quadratic", return_results=False)
    return _float(kappa)


def confusion_matrix(
    a: Sequence[int], b: Sequence[int], *, categories: Sequence[int] = (1, 2, 3, 4, 5)
) -> np.ndarray:
    """Counts: row = a's category, column = b's. A value outside ``categories`` raises."""
    index = {c: n for n, c in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)), dtype=int)
    for x, y in zip(a, b, strict=True):
        if x not in index or y not in index:
            raise ValueError(f"scores must be among {list(categories)}: got {x!r}, {y!r}")
        table[index[x], index[y]] += 1
    return table


@dataclass(frozen=True)
class JudgeAgreement:
    """How far an automatic judge agrees with the human raters, over items with both.

    ``spearman`` compares the judge's score with the humans' mean; ``kappa`` (quadratic
    weights) the rounded judge score with the rounded median human rating; ``table`` is
    that pair's 5 × 5 count matrix (rows: humans 1–5, columns: judge 1–5).
    """

    n: int
    spearman: float | None
    spearman_ci_low: float | None
    spearman_ci_high: float | None
    kappa: float | None
    mean_abs_diff: float | None  # mean |judge − human mean|, in scale points
    table: tuple[tuple[int, ...], ...]
    n_resamples: int = 0
    n_undefined: int = 0  # resamples where ρ was undefined; left out of the interval


def judge_agreement(
    judge: Sequence[float],
    human_mean: Sequence[float],
    human_median: Sequence[float],
    *,
    scale: Sequence[int] = (1, 2, 3, 4, 5),
    confidence: float = 0.95,
    n_resamples: int = 2_000,
    seed: int = 0,
) -> JudgeAgreement:
    """Judge–human agreement over paired items (one judge score, the humans' mean and
    median per item). ρ gets a seeded percentile bootstrap interval over items; resamples
    where ρ is undefined (a constant side) are skipped and counted."""
    if not len(judge) == len(human_mean) == len(human_median):
        raise ValueError("judge, human_mean and human_median must have the same length")
    n = len(judge)
    empty = tuple(tuple(0 for _ in scale) for _ in scale)
    if n == 0:
        return JudgeAgreement(0, None, None, None, None, None, empty)
    low_end, high_end = min(scale), max(scale)

    def clamp(v: float) -> int:
        return min(high_end, max(low_end, round_score(v)))

    rounded_judge = [clamp(v) for v in judge]
    rounded_human = [clamp(v) for v in human_median]
    table = confusion_matrix(rounded_human, rounded_judge, categories=scale)
    x = np.asarray(judge, dtype=float)
    y = np.asarray(human_mean, dtype=float)
    rho = spearman_rho(x, y)
    ci_low = ci_high = None
    n_undefined = 0
    used = 0
    if rho is not None:
        used = n_resamples
        picks = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
        draws = spearman_rows(x[picks], y[picks])
        valid = draws[~np.isnan(draws)]
        n_undefined = int(n_resamples - valid.size)
        if valid.size:
            tail = (1.0 - confidence) / 2.0
            lo, hi = np.quantile(valid, [tail, 1.0 - tail])
            ci_low, ci_high = float(lo), float(hi)
    return JudgeAgreement(
        n=n,
        spearman=rho,
        spearman_ci_low=ci_low,
        spearman_ci_high=ci_high,
        kappa=quadratic_weighted_kappa(rounded_human, rounded_judge, categories=scale),
        mean_abs_diff=float(np.mean(np.abs(x - y))),
        table=tuple(tuple(int(c) for c in row) for row in table),
        n_resamples=used,
        n_undefined=n_undefined,
    )
