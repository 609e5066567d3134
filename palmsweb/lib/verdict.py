"""The plain-language summary of a study, written only from tested results.

Rules (issue 15):

- a category is "better" (or "worse") only when its Holm-adjusted prompt-level paired t
  says so; otherwise it is "not significant". Point estimates are never counted as wins;
- a category where every prompt differs by the same amount (zero variance) is reported
  as *perfectly separated*, with the difference, because no test is possible, never as
  weak or as a win;
- a change of the effect with model size is claimed only when the arm × size test
  (:func:`palmsweb.lib.clustered.size_trend`) is significant;
- no interval for fewer than 5 prompts: the line names n instead;
- the interval method actually used is named (BCa, or the percentile fallback);
- the overall line names its method (the mixed model, or the paired-t fallback and why).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from palmsweb.lib.analysis import StudyAnalysis
from palmsweb.lib.arm_names import arm_label
from palmsweb.lib.clustered import MIN_CI_N, STRATIFIED, TESTED, ComparisonFamily, SizeTrend
from palmsweb.lib.mixed import Contrast
from palmsweb.lib.power import AchievedPower
from palmsweb.lib.raters import RaterQuality

ARM_NAMES = {"values_targeted": "Values-targeted", "base": "base", "control": "control"}


def fmt_p(p: float | None) -> str:
    if p is None:
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _ci(low: float | None, high: float | None) -> str:
    return "" if low is None or high is None else f" (95% CI {low:+.2f} to {high:+.2f})"


class _Names:
    def __init__(self, categories, arms, several_sizes):
        self.categories = categories or {}
        self.arms = {**ARM_NAMES, **(arms or {})}
        self.several_sizes = several_sizes

    def category(self, c: Hashable) -> str:
        return str(self.categories.get(c, c))

    def arm(self, kind: str) -> str:
        # a labelled arm goes by its label ("values-targeted + DPO"), see arm_names
        return self.arms.get(kind) or arm_label(kind) or kind

    def comparison(self, fam: ComparisonFamily) -> str:
        size = f" at {fam.a[1]}" if self.several_sizes and fam.a[1] else ""
        return f"{self.arm(fam.a[0])} vs {self.arm(fam.b[0])}{size}"


def summary_bullets(
    analysis: StudyAnalysis,
    *,
    category_names: Mapping[Hashable, str] | None = None,
    arm_names: Mapping[str, str] | None = None,
    arm_free: bool = False,
) -> list[str]:
    """The summary as a list of sentences (see the module docstring for the rules).

    ``arm_free=True`` keeps only what says nothing about arms (counts, agreement, flagged
    raters), for a report shown before unblinding."""
    if analysis.n_ratings == 0:
        return ["No completed ratings yet."]
    names = _Names(category_names, arm_names, len(analysis.sizes) > 1)
    lines = [
        f"{analysis.n_ratings} ratings of {analysis.n_outputs} outputs of "
        f"{analysis.n_prompts} prompts by {analysis.n_raters} "
        f"rater{'s' if analysis.n_raters != 1 else ''}."
    ]
    lines += _agreement(analysis)
    if arm_free:
        return lines + _raters(analysis.raters)
    for fam, achieved in zip(analysis.families, analysis.achieved, strict=True):
        lines.append(_family(fam, names))
        lines.append(_overall(fam, analysis, names))
        lines += _power(achieved, analysis.effect)
    lines += [_trend(t, names, analysis.alpha) for t in analysis.size_trends]
    lines += _intervals(analysis, names)
    lines += _raters(analysis.raters)
    return lines


def _agreement(analysis: StudyAnalysis) -> list[str]:
    a = analysis.agreement
    if a is None or a.alpha is None:
        return []
    quality = "good" if a.alpha >= 0.8 else "tentative" if a.alpha >= 0.667 else "low"
    ci = ""
    if a.ci_low is not None:
        ci = f" (95% CI {a.ci_low:.2f} to {a.ci_high:.2f}, bootstrap over {a.n_clusters} prompts)"
    return [f"Rater agreement (Krippendorff's α, ordinal) is {a.alpha:.2f}{ci}: {quality}."]


def _listing(fam: ComparisonFamily, verdict: str, names: _Names, detail=None) -> str:
    rows = [r for r in fam.rows if r.verdict(fam.alpha) == verdict]
    labels = [names.category(r.category) + (detail(r) if detail else "") for r in rows]
    return f"{len(rows)}" + (f" ({', '.join(labels)})" if labels else "")


def _family(fam: ComparisonFamily, names: _Names) -> str:
    m = len(fam.rows)
    parts = [
        f"better in {_listing(fam, 'better', names)} of {m} categories by the prompt-level "
        f"paired t (Holm-adjusted p < {fam.alpha})",
        f"not significant in {fam.count('not_significant')}",
    ]
    if fam.count("worse"):
        parts.append(f"worse in {_listing(fam, 'worse', names)}")
    for verdict, text in (("separated_higher", "higher"), ("separated_lower", "lower")):
        if fam.count(verdict):
            listing = _listing(fam, verdict, names, lambda r: f": every prompt {r.mean_diff:+.2f}")
            parts.append(f"perfectly separated, {text}, with no variance to test, in {listing}")
    if fam.count("identical"):
        parts.append(f"identical in {_listing(fam, 'identical', names)}")
    if fam.count("too_few"):
        listing = _listing(fam, "too_few", names, lambda r: f", n = {r.n_prompts}")
        parts.append(f"too few prompts to test in {listing}")
    return f"{names.comparison(fam)}: " + "; ".join(parts) + "."


def _overall_contrast(
    fam: ComparisonFamily, analysis: StudyAnalysis
) -> tuple[Contrast | None, str]:
    mixed = analysis.mixed
    if mixed is not None:
        found = mixed.contrast(fam.a, fam.b)
        if found is not None and not mixed.fell_back:
            how = "a mixed model with random prompt, prompt×arm and output effects"
            if mixed.rater_effects == "fixed":
                how += " and rater offsets"
            elif mixed.rater_effects == "random":
                how += " and random rater effects"
            return found, how
        if found is not None:
            return found, f"the paired t on {fam.overall.n_prompts} prompt means ({mixed.notes[0]})"
    o = fam.overall
    if o.status != TESTED:
        return None, o.notes[-1] if o.notes else o.status
    ci_low, ci_high = o.t_ci_low, o.t_ci_high
    return (
        Contrast(fam.a, fam.b, "paired t", o.mean_diff, None, ci_low, ci_high, o.t, o.p),
        f"the paired t on {o.n_prompts} prompt means",
    )


def _overall(fam: ComparisonFamily, analysis: StudyAnalysis, names: _Names) -> str:
    contrast, how = _overall_contrast(fam, analysis)
    if contrast is None or contrast.estimate is None:
        return f"Over all categories ({names.comparison(fam)}): no test possible ({how})."
    sig = "significant" if contrast.p is not None and contrast.p < fam.alpha else "not significant"
    return (
        f"Over all categories ({names.comparison(fam)}): {contrast.estimate:+.2f} points"
        f"{_ci(contrast.ci_low, contrast.ci_high)}, {sig} ({fmt_p(contrast.p)}), by {how}."
    )


def _power(achieved: AchievedPower, effect: float) -> list[str]:
    rows = [c for c in achieved.per_category if c.power is not None]
    m = len(rows)
    if not rows or achieved.overall_power is None:
        return []
    ns = sorted({c.n_prompts for c in rows})
    n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    low = min(c.power for c in rows)
    high = max(c.power for c in rows)
    power = f"{low:.2f}" if abs(high - low) < 0.005 else f"{low:.2f}–{high:.2f}"
    mde = max(c.mde for c in rows if c.mde is not None)
    return [
        f"Power to detect a {effect:.2f}-point difference: {power} per category ({n} prompts, "
        f"at α/{m}, Holm's strictest step; smallest detectable difference {mde:.2f}) and "
        f"{achieved.overall_power:.2f} over all categories (smallest detectable "
        f"{achieved.overall_mde:.2f})."
    ]


def _trend(t: SizeTrend, names: _Names, alpha: float) -> str:
    label = f"{names.arm(t.targeted)} − {names.arm(t.comparator)} difference"
    by_size = ", ".join(
        f"{s} {d:+.2f}" for s, d in zip(t.sizes, t.mean_diffs, strict=True) if d is not None
    )
    by_size = f"by size: {by_size}" if by_size else "no size has both arms"
    verdict = t.verdict(alpha)
    if verdict in ("grows", "shrinks"):
        return (
            f"The {label} {verdict} with size: {t.slope:+.2f} points per step"
            f"{_ci(t.ci_low, t.ci_high)}, {fmt_p(t.p)}, over {t.n_prompts} prompts ({by_size})."
        )
    if verdict == "no_evidence":
        return (
            f"No evidence that the {label} changes with size (arm × size test, {fmt_p(t.p)}, "
            f"{t.n_prompts} prompts; {by_size})."
        )
    reason = t.notes[0] if t.notes else t.status
    return f"The {label} by size is not tested ({reason}; {by_size})."


def _intervals(analysis: StudyAnalysis, names: _Names) -> list[str]:
    """Which interval methods were actually used, where; n where there is none."""
    rows = [r for fam in analysis.families for r in fam.rows]
    per_category = [(r.category, r.ci_method) for r in rows] + [
        (c.category, c.ci_method) for c in analysis.cells if c.category is not None
    ]
    used = {m for _, m in per_category}
    overall = {f.overall.ci_method for f in analysis.families} | {
        c.ci_method for c in analysis.cells if c.category is None
    }
    parts = []
    if "BCa" in used:
        fallback = sorted({names.category(c) for c, m in per_category if m == "percentile"})
        text = "per category, cluster bootstrap over prompts, BCa"
        if fallback:
            text += f" (percentile where BCa was undefined: {', '.join(fallback)})"
        parts.append(text)
    elif "percentile" in used:
        parts.append("per category, cluster bootstrap over prompts, percentile (BCa undefined)")
    if STRATIFIED in overall:
        parts.append("over all categories, percentile, resampling prompts within each category")
    lines = ["Intervals: " + "; ".join(parts) + "."] if parts else []
    lines += _small_n(rows, names)
    tested = [r.n_prompts for r in rows if r.status == TESTED]
    if tested and min(tested) <= 5:
        n = min(tested)
        lines.append(
            f"With {n} prompts the Wilcoxon check cannot reach p < 0.05 (its smallest "
            f"two-sided p is {2 / 2**n:.4f}); the paired t is the primary test."
        )
    return lines


def _small_n(rows, names: _Names) -> list[str]:
    small = {
        names.category(r.category): r.n_prompts
        for r in rows
        if r.category is not None and 0 < r.n_prompts < MIN_CI_N
    }
    if not small:
        return []
    listing = ", ".join(f"{k} (n = {v})" for k, v in sorted(small.items()))
    return [f"No interval where fewer than {MIN_CI_N} prompts: {listing}."]


def _raters(raters: tuple[RaterQuality, ...]) -> list[str]:
    return [
        f"Rater {q.rater} flagged ({q.n_ratings} ratings): {'; '.join(q.reasons)}."
        for q in raters
        if q.flagged
    ]
