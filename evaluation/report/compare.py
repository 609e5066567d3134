"""Two studies side by side: the per-category change of the values-targeted mean (and of
its lead over base) from one study to the next, Holm-adjusted. Only for unblinded use."""

from __future__ import annotations

from dataclasses import dataclass

from evaluation.models import Study
from evaluation.report.build import BASE, CI_RESAMPLES, VT, build_report
from evaluation.report.tree import ALPHA, CategoryInfo
from palmsweb.lib import stats


@dataclass(frozen=True)
class CompareRow:
    category: CategoryInfo
    vt_a: float | None
    vt_b: float | None
    gap_a: float | None  # values-targeted − base in study A
    gap_b: float | None
    test: stats.Comparison | None  # values-targeted in B against values-targeted in A
    p_holm: float | None = None

    @property
    def delta(self) -> float | None:
        if self.vt_a is None or self.vt_b is None:
            return None
        return self.vt_b - self.vt_a

    @property
    def gap_delta(self) -> float | None:
        if self.gap_a is None or self.gap_b is None:
            return None
        return self.gap_b - self.gap_a


@dataclass
class StudyComparison:
    a: Study
    b: Study
    rows: list[CompareRow]
    summary: str


def compare_studies(a: Study, b: Study) -> StudyComparison:
    """Per-category change of the values-targeted mean (and of its lead over base) from
    study ``a`` to study ``b``, pooled over sizes. Only for unblinded use."""
    ra = build_report(a, blinded=False)
    rb = build_report(b, blinded=False)
    seed = int(b.seed) % (2**32)
    names = {c.pk: c for c in ra.categories}
    names.update({c.pk: c for c in rb.categories})
    order = [c.pk for c in ra.categories] + [
        c.pk for c in rb.categories if c.pk not in {x.pk for x in ra.categories}
    ]

    def m(values):
        return sum(values) / len(values) if values else None

    rows, pvalues = [], {}
    for pk in order:
        vta, vtb = ra.pooled.get((VT, pk), []), rb.pooled.get((VT, pk), [])
        basea, baseb = ra.pooled.get((BASE, pk), []), rb.pooled.get((BASE, pk), [])
        test = stats.compare(vtb, vta, n_resamples=CI_RESAMPLES, seed=seed) if vta and vtb else None
        if test is not None:
            pvalues[pk] = test.welch_p
        gap_a = m(vta) - m(basea) if vta and basea else None
        gap_b = m(vtb) - m(baseb) if vtb and baseb else None
        rows.append(CompareRow(names[pk], m(vta), m(vtb), gap_a, gap_b, test))
    adjusted = stats.holm(pvalues) if pvalues else {}
    rows = [
        CompareRow(
            r.category, r.vt_a, r.vt_b, r.gap_a, r.gap_b, r.test, adjusted.get(r.category.pk)
        )
        for r in rows
    ]
    deltas = [r for r in rows if r.delta is not None]
    up = sum(1 for r in deltas if r.delta > 0)
    sig = sum(1 for r in deltas if r.delta > 0 and r.p_holm is not None and r.p_holm < ALPHA)
    if deltas:
        summary = (
            f"The values-targeted model of “{b.name}” scores higher than that of “{a.name}” "
            f"in {up}/{len(deltas)} categories (Holm-adjusted p < {ALPHA} in {sig})."
        )
    else:
        summary = "The two studies share no rated values-targeted category."
    return StudyComparison(a, b, rows, summary)
