"""The primary analysis of a PALMS study: comparisons paired by prompt.

The outputs of one prompt are correlated (they answer the same question) and the same
prompts are answered by every arm. So the unit of analysis is the **prompt**: each
prompt gets one number per arm, the mean over its outputs of their mean ratings, and two
arms are compared on the per-prompt differences.

- primary test: paired t (``scipy.stats.ttest_rel``) on the prompt means;
- robustness check: Wilcoxon signed-rank (``scipy.stats.wilcoxon``, method "auto");
- Holm (``stats.holm``) across the categories of one comparison at one size, each test
  its own family; the "all categories" row is outside the family;
- intervals: a **cluster bootstrap** that resamples prompts (a prompt carries all its
  outputs in both arms, so the pairing is kept). For one category that is scipy's BCa
  bootstrap of the per-prompt differences, with the percentile method as the fallback;
  over all categories it resamples prompts within each category (stratified percentile
  bootstrap, written out with numpy because scipy cannot stratify). No interval for
  fewer than :data:`MIN_CI_N` prompts.
- per-output numbers (n, mean, SD of output means) ride along as descriptive columns.

Every result is a frozen dataclass with JSON-friendly fields; undefined values are
None with a note, never NaN. Input goes through :class:`~palmsweb.lib.ratings.RatingTable`,
which sorts it, so results do not depend on row order.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as sps

from palmsweb.lib import stats
from palmsweb.lib.ratings import ArmKey, RatingTable

ALPHA = 0.05
MIN_CI_N = 5  # fewer prompts than this: no interval, only n
CI_RESAMPLES = 10_000
STRATIFIED = "percentile (stratified by category)"


# --------------------------------------------------------------------------- bootstrap


def _interval(
    values: np.ndarray, strata: np.ndarray | None, *, confidence, n_resamples, seed
) -> tuple[float | None, float | None, str | None]:
    """Cluster-bootstrap CI of the mean of per-prompt values: plain (one category, BCa
    with percentile fallback) or stratified by category (percentile)."""
    if values.size < MIN_CI_N or n_resamples <= 0:
        return None, None, None
    if strata is None or np.unique(strata).size == 1:
        return stats.bootstrap_ci(
            (values,), np.mean, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
    return _stratified_percentile(values, strata, confidence, n_resamples, seed)


def _stratified_percentile(values, strata, confidence, n_resamples, seed):
    rng = np.random.default_rng(seed)
    total = np.zeros(n_resamples)
    for stratum in np.unique(strata):  # strata are integer codes: a fixed order
        members = values[strata == stratum]
        picks = rng.integers(0, members.size, size=(n_resamples, members.size))
        total += members[picks].sum(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(total / values.size, [tail, 1.0 - tail])
    return float(low), float(high), STRATIFIED


def _strata(table: RatingTable, prompts: Sequence[Hashable]) -> np.ndarray:
    code = {c: i for i, c in enumerate(table.categories)}
    return np.array([code[table.prompt_category[p]] for p in prompts], dtype=int)


def _sd(x: np.ndarray) -> float | None:
    return float(np.std(x, ddof=1)) if x.size >= 2 else None


# --------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class CellSummary:
    """One arm in one category (``category`` None: all categories), prompt-level.

    ``mean`` is the mean over prompts of the prompt means and ``sd`` their SD; the CI
    resamples prompts. ``output_*`` describe the individual outputs' mean ratings."""

    arm: str
    size_tag: str
    category: Hashable | None
    n_prompts: int
    mean: float | None
    sd: float | None
    ci_low: float | None
    ci_high: float | None
    ci_method: str | None
    n_outputs: int
    n_ratings: int
    output_mean: float | None
    output_sd: float | None
    notes: tuple[str, ...] = ()


def describe_cell(
    table: RatingTable,
    arm: ArmKey,
    category: Hashable | None = None,
    *,
    confidence: float = 0.95,
    n_resamples: int = CI_RESAMPLES,
    seed: int = 0,
) -> CellSummary:
    """Prompt-level mean of one arm (in one category or all) with a cluster-bootstrap CI."""
    prompts = [p for p in table.prompts(category) if (p, arm) in table.prompt_means]
    values = np.array([table.prompt_means[(p, arm)] for p in prompts], dtype=float)
    outputs = [
        o
        for o in table.output_means
        if o.arm == arm and (category is None or o.category == category)
    ]
    out = np.array([o.mean for o in outputs], dtype=float)
    notes: list[str] = []
    low = high = method = None
    if values.size < MIN_CI_N:
        if values.size:
            notes.append(f"n = {values.size} prompts: too few for an interval")
    else:
        strata = _strata(table, prompts) if category is None else None
        low, high, method = _interval(
            values, strata, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
    return CellSummary(
        arm=arm[0],
        size_tag=arm[1],
        category=category,
        n_prompts=int(values.size),
        mean=float(values.mean()) if values.size else None,
        sd=_sd(values),
        ci_low=low,
        ci_high=high,
        ci_method=method,
        n_outputs=len(outputs),
        n_ratings=sum(o.n_ratings for o in outputs),
        output_mean=float(out.mean()) if out.size else None,
        output_sd=_sd(out),
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- paired


TESTED = "tested"
TOO_FEW = "too_few"  # fewer than 2 paired prompts
IDENTICAL = "identical"  # every prompt difference is 0
SEPARATED = "separated"  # every prompt differs by the same nonzero amount: no variance


@dataclass(frozen=True)
class PairedComparison:
    """Arm a against arm b, paired by prompt, in one category (None: all categories).

    Signed a − b. ``p`` is the paired t's two-sided p-value, ``p_holm`` its Holm-adjusted
    value within the family (None for the all-categories row). ``ci_*`` is the cluster
    bootstrap interval of ``mean_diff``; ``t_ci_*`` the paired t's own interval.
    ``status`` is "tested", "too_few", "identical" or "separated" (zero variance)."""

    a: ArmKey
    b: ArmKey
    category: Hashable | None
    status: str
    n_prompts: int  # prompts rated in both arms: the paired test's n
    n_unpaired: int  # prompts with only one of the two arms, left out
    mean_a: float | None = None
    mean_b: float | None = None
    mean_diff: float | None = None
    sd_diff: float | None = None
    dz: float | None = None  # Cohen's d_z = mean_diff / sd_diff
    t: float | None = None
    df: float | None = None
    p: float | None = None
    t_ci_low: float | None = None
    t_ci_high: float | None = None
    wilcoxon_w: float | None = None
    wilcoxon_p: float | None = None
    wilcoxon_method: str | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str | None = None
    p_holm: float | None = None
    wilcoxon_p_holm: float | None = None
    n_outputs_a: int = 0
    n_outputs_b: int = 0
    output_mean_a: float | None = None
    output_mean_b: float | None = None
    notes: tuple[str, ...] = ()

    def verdict(self, alpha: float = ALPHA) -> str:
        """One of: "better" / "worse" (significant at ``alpha``, Holm-adjusted within a family),
        "not_significant", "separated_higher" / "separated_lower", "identical" or
        "too_few"."""
        if self.status == SEPARATED:
            return "separated_higher" if self.mean_diff > 0 else "separated_lower"
        if self.status != TESTED:
            return self.status
        p = self.p if self.category is None else self.p_holm
        if p is None or p >= alpha:
            return "not_significant"
        return "better" if self.mean_diff > 0 else "worse"


def _wilcoxon(d: np.ndarray) -> tuple[float | None, float | None, str | None]:
    """scipy's Wilcoxon with zeros dropped ("wilcox"); says which null it used."""
    nonzero = np.abs(d[d != 0])
    if nonzero.size == 0:
        return None, None, None
    ties = np.unique(nonzero).size < nonzero.size
    if d.size > 50:
        method = "normal approximation"
    elif ties or nonzero.size < d.size:
        method = "exact permutation" if d.size <= 13 else "normal approximation"
    else:
        method = "exact"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.wilcoxon(d)
    return stats.json_float(res.statistic), stats.json_float(res.pvalue), method


def _described(table: RatingTable, a: ArmKey, b: ArmKey, category) -> dict:
    """The per-output numbers that ride along as description."""
    found = {}
    for arm, side in ((a, "a"), (b, "b")):
        means = [
            o.mean
            for o in table.output_means
            if o.arm == arm and (category is None or o.category == category)
        ]
        found[f"n_outputs_{side}"] = len(means)
        found[f"output_mean_{side}"] = float(np.mean(means)) if means else None
    return found


def _without_variance(d: np.ndarray, notes: list[str], **fields) -> PairedComparison:
    """Every prompt differs by the same amount: no t-test, a status that says why."""
    if abs(d[0]) <= 1e-12:
        status, text = IDENTICAL, "every prompt has the same mean in both arms"
    else:
        status = SEPARATED
        text = (
            f"every prompt differs by exactly {d[0]:+.2f}: no variance, so the t-test "
            "and its interval are undefined"
        )
    w, wp, wm = _wilcoxon(d)
    return PairedComparison(
        status=status,
        sd_diff=0.0,
        wilcoxon_w=w,
        wilcoxon_p=wp,
        wilcoxon_method=wm,
        notes=(*notes, text),
        **fields,
    )


def compare_paired(
    table: RatingTable,
    a: ArmKey,
    b: ArmKey,
    category: Hashable | None = None,
    *,
    confidence: float = 0.95,
    n_resamples: int = CI_RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """Compare arm a with arm b on the prompts rated in both (see the module docstring).

    ``n_resamples=0`` skips the bootstrap (the tests alone)."""
    prompts, xa, xb, unpaired = table.paired(a, b, category)
    x, y = np.array(xa, dtype=float), np.array(xb, dtype=float)
    d = x - y
    n = int(d.size)
    fields = dict(a=a, b=b, category=category, n_prompts=n, n_unpaired=unpaired)
    fields.update(_described(table, a, b, category))
    notes = [f"{unpaired} prompt(s) rated in only one arm left out"] if unpaired else []
    if n:
        fields.update(mean_a=float(x.mean()), mean_b=float(y.mean()), mean_diff=float(d.mean()))
    if n < 2:
        notes.append("a paired test needs at least 2 prompts rated in both arms")
        return PairedComparison(status=TOO_FEW, notes=tuple(notes), **fields)
    if np.ptp(d) <= 1e-12:
        return _without_variance(d, notes, **fields)
    res = sps.ttest_rel(x, y)
    ci = res.confidence_interval(confidence)
    w, wp, wm = _wilcoxon(d)
    if n < MIN_CI_N:
        notes.append(f"n = {n} prompts: too few for a bootstrap interval")
    strata = _strata(table, prompts) if category is None else None
    low, high, method = _interval(
        d, strata, confidence=confidence, n_resamples=n_resamples, seed=seed
    )
    sd = float(np.std(d, ddof=1))
    return PairedComparison(
        status=TESTED,
        sd_diff=sd,
        dz=fields["mean_diff"] / sd,
        t=stats.json_float(res.statistic),
        df=stats.json_float(res.df),
        p=stats.json_float(res.pvalue),
        t_ci_low=stats.json_float(ci.low),
        t_ci_high=stats.json_float(ci.high),
        wilcoxon_w=w,
        wilcoxon_p=wp,
        wilcoxon_method=wm,
        ci_low=low,
        ci_high=high,
        ci_method=method,
        notes=tuple(notes),
        **fields,
    )


# --------------------------------------------------------------------------- families


@dataclass(frozen=True)
class ComparisonFamily:
    """Arm a against arm b in every category: one Holm family (paired t), with the
    Wilcoxon p-values adjusted as a family of their own. ``overall`` pools the prompts of
    all categories (outside the family; the report's overall primary is the mixed model
    of :mod:`palmsweb.lib.mixed`, with this as its fallback)."""

    a: ArmKey
    b: ArmKey
    alpha: float
    rows: tuple[PairedComparison, ...]
    overall: PairedComparison

    def count(self, verdict: str) -> int:
        return sum(1 for r in self.rows if r.verdict(self.alpha) == verdict)

    def categories_with(self, verdict: str) -> list[Hashable]:
        return [r.category for r in self.rows if r.verdict(self.alpha) == verdict]


def compare_family(
    table: RatingTable,
    a: ArmKey,
    b: ArmKey,
    *,
    categories: Sequence[Hashable] | None = None,
    alpha: float = ALPHA,
    confidence: float = 0.95,
    n_resamples: int = CI_RESAMPLES,
    seed: int = 0,
) -> ComparisonFamily:
    """Paired comparisons of a and b per category, Holm-adjusted, and over all categories.

    Categories where the t-test is undefined (too few prompts, no variance) are not in
    the family: they do not count toward its size."""
    cats = list(table.categories if categories is None else categories)
    opts = dict(confidence=confidence, n_resamples=n_resamples, seed=seed)
    rows = [compare_paired(table, a, b, c, **opts) for c in cats]
    t_holm = stats.holm({i: r.p for i, r in enumerate(rows)})
    w_holm = stats.holm({i: r.wilcoxon_p for i, r in enumerate(rows)})
    rows = [replace(r, p_holm=t_holm[i], wilcoxon_p_holm=w_holm[i]) for i, r in enumerate(rows)]
    overall = compare_paired(table, a, b, None, **opts)
    return ComparisonFamily(a=a, b=b, alpha=alpha, rows=tuple(rows), overall=overall)


# --------------------------------------------------------------------------- size trend


@dataclass(frozen=True)
class SizeTrend:
    """Does the targeted − comparator difference change with model size (arm × size)?

    Per prompt, the difference at each size is regressed on ``x`` (the sizes' positions);
    the per-prompt slopes are tested against 0 with a one-sample t (``ttest_1samp``), so
    prompts stay the unit. With two sizes and x = (0, 1) this is the paired t of the
    difference of differences. ``slope`` is in scale points per unit of x."""

    targeted: str
    comparator: str
    sizes: tuple[str, ...]
    x: tuple[float, ...]
    status: str
    n_prompts: int
    mean_diffs: tuple[float | None, ...]  # targeted − comparator per size, these prompts
    slope: float | None = None
    t: float | None = None
    df: float | None = None
    p: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    notes: tuple[str, ...] = ()

    def verdict(self, alpha: float = ALPHA) -> str:
        """One of: "grows" / "shrinks" (significant slope), "no_evidence", or the status."""
        if self.status != TESTED:
            return self.status
        if self.p is None or self.p >= alpha:
            return "no_evidence"
        return "grows" if self.slope > 0 else "shrinks"


def size_trend(
    table: RatingTable,
    *,
    targeted: str = "values_targeted",
    comparator: str = "base",
    sizes: Sequence[str] | None = None,
    x: Sequence[float] | None = None,
    confidence: float = 0.95,
) -> SizeTrend:
    """Test arm × size on the prompts that have both arms at every size.

    ``sizes`` in increasing order (default: the table's size tags, sorted); ``x`` their
    positions, e.g. log10 of the parameter counts (default 0, 1, 2, …)."""
    sizes = list(table.size_tags if sizes is None else sizes)
    xs = np.arange(len(sizes), dtype=float) if x is None else np.asarray(x, dtype=float)
    if xs.size != len(sizes):
        raise ValueError("x needs one position per size")
    means = table.prompt_means
    rows = []
    for p in table.prompts():
        keys = [((p, (targeted, s)), (p, (comparator, s))) for s in sizes]
        if all(k in means and j in means for k, j in keys):
            rows.append([means[k] - means[j] for k, j in keys])
    d = np.array(rows, dtype=float).reshape(len(rows), len(sizes))
    mean_diffs = tuple(float(v) for v in d.mean(axis=0)) if rows else (None,) * len(sizes)
    head = dict(
        targeted=targeted,
        comparator=comparator,
        sizes=tuple(sizes),
        x=tuple(float(v) for v in xs),
        n_prompts=len(rows),
        mean_diffs=mean_diffs,
    )
    if len(sizes) < 2 or np.ptp(xs) == 0:
        return SizeTrend(status=TOO_FEW, notes=("a trend needs two distinct sizes",), **head)
    if len(rows) < 2:
        return SizeTrend(
            status=TOO_FEW, notes=("fewer than 2 prompts have both arms at every size",), **head
        )
    centred = xs - xs.mean()
    slopes = (d - d.mean(axis=1, keepdims=True)) @ centred / (centred @ centred)
    if np.ptp(slopes) <= 1e-12:
        return SizeTrend(
            status=SEPARATED if abs(slopes[0]) > 1e-12 else IDENTICAL,
            slope=float(slopes[0]),
            notes=("every prompt has the same slope: no variance, no test",),
            **head,
        )
    res = sps.ttest_1samp(slopes, 0.0)
    ci = res.confidence_interval(confidence)
    return SizeTrend(
        status=TESTED,
        slope=float(slopes.mean()),
        t=stats.json_float(res.statistic),
        df=stats.json_float(res.df),
        p=stats.json_float(res.pvalue),
        ci_low=stats.json_float(ci.low),
        ci_high=stats.json_float(ci.high),
        **head,
    )


__all__ = [
    "CellSummary",
    "ComparisonFamily",
    "PairedComparison",
    "SizeTrend",
    "compare_family",
    "compare_paired",
    "describe_cell",
    "size_trend",
]
