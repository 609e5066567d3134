"""Comparing two closed, unblinded studies: the values-targeted model's prompt-level mean
per category, from study A to study B, and each study's lead over base."""

from __future__ import annotations

from dataclasses import dataclass, replace

from evaluation.models import Study
from evaluation.report.build import BASE, CI_RESAMPLES, VT, build_report
from evaluation.report.table import study_seed
from evaluation.report.tree import CategoryInfo, Report
from palmsweb.lib import stats
from palmsweb.lib.clustered import ALPHA, PairedComparison


@dataclass(frozen=True)
class CompareRow:
    category: CategoryInfo
    vt_a: float | None
    vt_b: float | None
    gap_a: float | None  # values-targeted − base in study A
    gap_b: float | None
    test: stats.Comparison | None  # values-targeted in B against values-targeted in A
    p_holm: float | None = None
    # each study's own test of its lead (paired t on prompt means, Holm; first size)
    lead_a: PairedComparison | None = None
    lead_b: PairedComparison | None = None

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


def _compare_row(pk, names, ra: Report, rb: Report, seed: int) -> CompareRow:
    """One category: values-targeted prompt means of B against those of A (Welch: the
    two studies' outputs and raters are independent), and each study's lead over base."""
    vta, vtb = ra.pooled.get((VT, pk), []), rb.pooled.get((VT, pk), [])
    basea, baseb = ra.pooled.get((BASE, pk), []), rb.pooled.get((BASE, pk), [])
    test = stats.compare(vtb, vta, n_resamples=CI_RESAMPLES, seed=seed) if vta and vtb else None
    gap_a = mean_of(vta) - mean_of(basea) if vta and basea else None
    gap_b = mean_of(vtb) - mean_of(baseb) if vtb and baseb else None
    mean_a = mean_of(vta) if vta else None
    mean_b = mean_of(vtb) if vtb else None
    return CompareRow(
        names[pk], mean_a, mean_b, gap_a, gap_b, test, None, _lead(ra, pk), _lead(rb, pk)
    )


def _lead(report: Report, category_pk: int) -> PairedComparison | None:
    """The study's own paired test of values-targeted vs base in this category."""
    fam = report.family("vt-base")
    row = next((r for r in fam.rows if r.category.pk == category_pk), None) if fam else None
    return row.result if row else None


def compare_studies(a: Study, b: Study) -> StudyComparison:
    """Per-category change of the values-targeted mean (and of its lead over base) from
    study ``a`` to study ``b``, on prompt means pooled over sizes. Unblinded use only."""
    ra = build_report(a, blinded=False)
    rb = build_report(b, blinded=False)
    names = {c.pk: c for c in ra.categories + rb.categories}
    order = list(dict.fromkeys(c.pk for c in ra.categories + rb.categories))
    seed = study_seed(b)
    rows = [_compare_row(pk, names, ra, rb, seed) for pk in order]
    adjusted = stats.holm({r.category.pk: r.test.welch_p for r in rows if r.test is not None})
    rows = [replace(r, p_holm=adjusted.get(r.category.pk)) for r in rows]
    deltas = [r for r in rows if r.delta is not None]
    up = sum(1 for r in deltas if r.delta > 0 and r.p_holm is not None and r.p_holm < ALPHA)
    down = sum(1 for r in deltas if r.delta < 0 and r.p_holm is not None and r.p_holm < ALPHA)
    if deltas:
        summary = (
            f"On prompt means, the values-targeted model of “{b.name}” scores significantly "
            f"higher than that of “{a.name}” in {up} of {len(deltas)} shared categories and "
            f"significantly lower in {down} (Welch's t on prompt means, Holm-adjusted "
            f"p < {ALPHA}); the other {len(deltas) - up - down} are not significant."
        )
    else:
        summary = "The two studies share no rated values-targeted category."
    return StudyComparison(a, b, rows, summary)


def mean_of(values: list[float]) -> float:
    return sum(values) / len(values)
