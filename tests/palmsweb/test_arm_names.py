"""Arms with a free label (palmsweb.lib.arm_names): their own name in the rating table,
their own comparisons (labelled vs the plain arm of its role, and vs base/control), and
an unambiguous family lookup."""

from __future__ import annotations

from palmsweb.lib import analysis, verdict
from palmsweb.lib.arm_names import arm_label, arm_name, arm_role, is_labelled
from palmsweb.lib.design import StudyDesign
from palmsweb.lib.ratings import RatingTable
from palmsweb.lib.simulate import simulate_study

DPO = arm_name("values_targeted", "values-targeted + DPO")
FAST = dict(n_resamples=200, alpha_resamples=20, mixed_model=False)


def test_a_name_encodes_role_and_label_and_splits_back():
    assert arm_name("base") == arm_name("base", "  ") == "base"
    assert DPO == "values_targeted:values-targeted + DPO"
    assert (arm_role(DPO), arm_label(DPO), is_labelled(DPO)) == (
        "values_targeted",
        "values-targeted + DPO",
        True,
    )
    # a colon inside the label stays in the label
    odd = arm_name("control", "v2: re-run")
    assert (arm_role(odd), arm_label(odd)) == ("control", "v2: re-run")
    assert (arm_role("base"), arm_label("base"), is_labelled("base")) == ("base", "", False)


def _table(arms: tuple[str, ...], effects: dict) -> RatingTable:
    design = StudyDesign(categories=3, prompts_per_category=6, arms=arms)
    return RatingTable(simulate_study(design, effects=effects, seed=4))


def test_a_labelled_arm_gets_families_against_the_comparators_and_its_own_role():
    arms = ("base@135M", "control@135M", "values_targeted@135M", f"{DPO}@135M")
    table = _table(arms, {"values_targeted@135M": 0.5, f"{DPO}@135M": 1.0})
    pairs = analysis.comparisons(table)
    vt, dpo = ("values_targeted", "135M"), (DPO, "135M")
    base, control = ("base", "135M"), ("control", "135M")
    assert pairs == [(vt, base), (vt, control), (dpo, base), (dpo, control), (dpo, vt)]

    result = analysis.analyse_study(table, seed=1, **FAST)
    assert [(f.a, f.b) for f in result.families] == pairs
    # both sides decide: three families have base or vt as comparator, each found once
    assert result.family("base", "135M").a == vt
    assert result.family("base", "135M", targeted=DPO).a == dpo
    assert result.family("values_targeted", "135M", targeted=DPO).b == vt
    assert result.family("values_targeted", "135M") is None  # vt is never compared with itself
    bullets = verdict.summary_bullets(result)
    assert any(b.startswith("values-targeted + DPO vs Values-targeted:") for b in bullets)
    assert any(b.startswith("values-targeted + DPO vs base:") for b in bullets)


def test_without_labels_the_comparisons_are_as_before_and_the_trend_ignores_labels():
    arms = ("base@1B", "values_targeted@1B", "base@2B", "values_targeted@2B", f"{DPO}@2B")
    table = _table(arms, {"values_targeted@1B": 0.5, "values_targeted@2B": 0.5})
    plain = RatingTable(r for r in table.rows if not is_labelled(r.arm))
    assert analysis.comparisons(plain) == [
        (("values_targeted", "1B"), ("base", "1B")),
        (("values_targeted", "2B"), ("base", "2B")),
    ]
    result = analysis.analyse_study(table, sizes=["1B", "2B"], seed=1, **FAST)
    assert [(t.targeted, t.comparator) for t in result.size_trends] == [
        ("values_targeted", "base")
    ]
    # the labelled arm has no plain counterpart at 1B, so nothing of it there
    assert result.family("values_targeted", "2B", targeted=DPO) is not None
    assert all(f.a[1] == f.b[1] for f in result.families)
