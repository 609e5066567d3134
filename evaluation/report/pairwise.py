"""The report of a pairwise study: win/tie/loss per arm pair and category, Bradley–Terry
strengths per arm, and agreement between raters on pairs (the numbers come from
:mod:`palmsweb.lib.pairwise`; the unit of analysis is the prompt).

What a reader sees follows :func:`evaluation.access.report_mode`: unblinded, the arms by
name; admins before unblinding, the study's blind letters ("Arm A", the same letters as
the 1–5 report); researchers on a closed, blinded study, agreement and counts only.
"""

from __future__ import annotations

from dataclasses import asdict

from evaluation.models import PairJudgment, Study
from evaluation.studies.blinding import blind_labels
from evaluation.studies.pairwise_selectors import counted
from palmsweb.lib import pairwise

UNIT_OF_ANALYSIS = (
    "The unit of analysis is the prompt: each rate is the mean over prompts of the prompt's "
    "share of judgments, with a bootstrap interval that resamples prompts; Bradley–Terry "
    "strengths (statsmodels logistic regression, ties and 'both bad' left out, an intercept "
    "for any preference for A) have 95% intervals from standard errors clustered by prompt. "
    "Strengths are log-odds of beating the reference arm, which is 0."
)


def judgment_rows(study: Study) -> list[dict]:
    """The completed judgments of the study's counted pairs (no output excluded), one dict
    per judgment with the arms of A (left) and B (right) as study-arm ids."""
    pairs = counted(study).values("pk")
    values = PairJudgment.objects.filter(
        study=study, status=PairJudgment.Status.COMPLETED, pair__in=pairs
    ).values_list(
        "pair_id",
        "pair__prompt_id",
        "pair__prompt__category__name",
        "pair__left__arm_id",
        "pair__right__arm_id",
        "verdict",
        "rater_id",
    )
    keys = ("pair", "prompt", "category", "left", "right", "verdict", "rater")
    return [dict(zip(keys, row, strict=True)) for row in values]


def _arm_labels(study: Study, mode: str) -> dict[int, str]:
    arms = list(study.arms.all())
    if mode == "arms":
        return {arm.pk: f"{arm.get_arm_display()} · {arm.size_tag}" for arm in arms}
    labels = blind_labels(study)
    return {arm.pk: labels[arm.pk] for arm in sorted(arms, key=lambda a: labels[a.pk])}


def _relabel(found: dict, labels: dict[int, str]) -> dict:
    for key in ("first", "second", "arm"):
        if key in found:
            found[key] = labels[found[key]]
    return found


def pairwise_report(study: Study, mode: str) -> dict:
    """The report's numbers as JSON-friendly dicts (the page and the API share it)."""
    rows = judgment_rows(study)
    agreement = asdict(pairwise.pair_agreement(rows))
    report = {
        "study": study.pk,
        "mode": mode,
        "unit_of_analysis": UNIT_OF_ANALYSIS,
        "n_judgments": len(rows),
        "n_prompts": len({r["prompt"] for r in rows}),
        "agreement": agreement,
        "outcomes": [],
        "bradley_terry": None,
    }
    if mode == "arm-free":
        return report
    labels = _arm_labels(study, mode)
    order = list(labels)  # reference arm first: the study's first arm, or Arm A when blind
    if mode == "arms":
        order = [arm.pk for arm in study.arms.all()]
    outcomes = pairwise.win_tie_loss(rows, order)
    report["outcomes"] = [_relabel(asdict(o), labels) for o in outcomes]
    fit = asdict(pairwise.bradley_terry(rows, order))
    fit["strengths"] = [_relabel(s, labels) for s in fit["strengths"]]
    report["bradley_terry"] = fit
    return report
