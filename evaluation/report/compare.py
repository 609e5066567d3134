"""Comparing two closed, unblinded studies: the values-targeted model's prompt-level mean
per category, from study A to study B, and each study's lead over base.

Two studies of *different value profiles* ("same model, different values": each profile's
fine-tune of one base model, rated against its own positions) are compared category by
category *name*, and only through each study's lead over its own base: their raw ratings
were given against different positions, so a test of B's mean against A's would compare
two rubrics, not two models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from evaluation.models import Study
from evaluation.report.build import BASE, CI_RESAMPLES, VT, build_report
from evaluation.report.compare_checks import (
    FrozenPosition,
    PromptOverlap,
    TrainingCheck,
    frozen_positions,
    prompt_overlap,
    training_checks,
)
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
    # the position each study's raters judged this category against (frozen at opening)
    position_a: FrozenPosition | None = None
    position_b: FrozenPosition | None = None

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
    # Different value profiles: categories matched by name, leads compared, no raw test.
    cross_profile: bool = False
    same_base_model: bool = True
    overlap: PromptOverlap | None = None
    training: list[TrainingCheck] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """What stands between these numbers and "same model, different values"."""
        found = [self.overlap.warning] if self.overlap else []
        if self.cross_profile and not self.same_base_model:
            found.append(
                "The values-targeted arms start from different base models, so this is not "
                "the same model adapted twice."
            )
        return [w for w in [*found, *(c.warning for c in self.training)] if w]


def _compare_row(
    ca: CategoryInfo | None,
    cb: CategoryInfo | None,
    ra: Report,
    rb: Report,
    seed: int,
    *,
    test_means: bool = True,
) -> CompareRow:
    """One category (``ca`` in study A, ``cb`` in B; one may be missing): values-targeted
    prompt means of B against those of A (Welch: the two studies' outputs and raters are
    independent; skipped across profiles), and each study's lead over base."""
    pk_a, pk_b = (ca.pk if ca else None), (cb.pk if cb else None)
    vta, vtb = ra.pooled.get((VT, pk_a), []), rb.pooled.get((VT, pk_b), [])
    basea, baseb = ra.pooled.get((BASE, pk_a), []), rb.pooled.get((BASE, pk_b), [])
    test = None
    if test_means and vta and vtb:
        test = stats.compare(vtb, vta, n_resamples=CI_RESAMPLES, seed=seed)
    gap_a = mean_of(vta) - mean_of(basea) if vta and basea else None
    gap_b = mean_of(vtb) - mean_of(baseb) if vtb and baseb else None
    mean_a = mean_of(vta) if vta else None
    mean_b = mean_of(vtb) if vtb else None
    return CompareRow(
        ca or cb, mean_a, mean_b, gap_a, gap_b, test, None, _lead(ra, pk_a), _lead(rb, pk_b)
    )


def _lead(report: Report, category_pk: int | None) -> PairedComparison | None:
    """The study's own paired test of values-targeted vs base in this category."""
    fam = report.family("vt-base")
    row = next((r for r in fam.rows if r.category.pk == category_pk), None) if fam else None
    return row.result if row else None


def _targeted_base_models(study: Study) -> set[int]:
    arms = study.arms.filter(arm=VT).select_related("model_version")
    return {arm.model_version.base_model_id for arm in arms}


def compare_studies(
    a: Study, b: Study, readable_profiles: Iterable[int] | None = None
) -> StudyComparison:
    """Per-category change of the values-targeted mean (and of its lead over base) from
    study ``a`` to study ``b``, on prompt means pooled over sizes. Unblinded use only.
    Studies of two value profiles are matched by category name and compared by their
    leads over base only (see the module's docstring). ``readable_profiles``: the profiles
    the reader is a member of, the only ones a training check names (None: all)."""
    ra = build_report(a, blinded=False)
    rb = build_report(b, blinded=False)
    cross = a.profile_id != b.profile_id
    key = (lambda c: c.name.casefold()) if cross else (lambda c: c.pk)
    in_a, in_b = {key(c): c for c in ra.categories}, {key(c): c for c in rb.categories}
    order = list(dict.fromkeys([*in_a, *in_b]))
    seed = study_seed(b)
    frozen_a, frozen_b = frozen_positions(a), frozen_positions(b)
    rows = []
    for k in order:
        ca, cb = in_a.get(k), in_b.get(k)
        row = _compare_row(ca, cb, ra, rb, seed, test_means=not cross)
        rows.append(
            replace(
                row,
                position_a=frozen_a.get(ca.pk) if ca else None,
                position_b=frozen_b.get(cb.pk) if cb else None,
            )
        )
    comparison = _cross_profile_comparison(a, b, rows) if cross else _within_profile(a, b, rows)
    comparison.overlap = prompt_overlap(a, b)
    comparison.training = [
        *training_checks(a, readable_profiles),
        *training_checks(b, readable_profiles),
    ]
    return comparison


def _within_profile(a: Study, b: Study, rows: list[CompareRow]) -> StudyComparison:
    """Studies of one profile: B's values-targeted prompt means tested against A's."""
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


def _significant_leads(rows: list[CompareRow], side: str) -> int:
    leads = [getattr(r, f"lead_{side}") for r in rows]
    return sum(
        1
        for lead in leads
        if lead and lead.mean_diff > 0 and lead.p_holm is not None and lead.p_holm < ALPHA
    )


def _cross_profile_comparison(a: Study, b: Study, rows: list[CompareRow]) -> StudyComparison:
    """Two profiles' studies: how each profile's values-targeted model does against its own
    positions (its lead over its base), category by category name."""
    shared = [r for r in rows if r.gap_a is not None and r.gap_b is not None]
    profile_a, profile_b = a.prompt_set.profile.name, b.prompt_set.profile.name
    summary = (
        f"Same model, different values: against its own profile's positions, the "
        f"values-targeted model of “{a.name}” ({profile_a}) leads its base significantly in "
        f"{_significant_leads(shared, 'a')} of {len(shared)} categories both studies rated, "
        f"that of “{b.name}” ({profile_b}) in {_significant_leads(shared, 'b')} (paired t "
        f"on prompt means, Holm-adjusted within each study, p < {ALPHA}). The raw means are "
        "not tested against each other: they were rated against different positions."
    )
    same_base = _targeted_base_models(a) == _targeted_base_models(b)
    return StudyComparison(a, b, rows, summary, cross_profile=True, same_base_model=same_base)


def mean_of(values: list[float]) -> float:
    return sum(values) / len(values)
