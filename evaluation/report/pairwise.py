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
from evaluation.studies.arm_keys import arm_title
from evaluation.studies.blinding import blind_labels, rater_pseudonym
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
    per judgment with the arms of A (left) and B (right) as study-arm ids. Pairs and raters
    are named as the export names them (public id, pseudonym), so the numbers computed from
    an export's rows are the report's, to the last digit."""
    pairs = counted(study).values("pk")
    values = PairJudgment.objects.filter(
        study=study, status=PairJudgment.Status.COMPLETED, pair__in=pairs
    ).values_list(
        "pair__public_id",
        "pair__prompt_id",
        "pair__prompt__category__name",
        "pair__left__arm_id",
        "pair__right__arm_id",
        "verdict",
        "rater_id",
    )
    keys = ("pair", "prompt", "category", "left", "right", "verdict", "rater")
    rows = [dict(zip(keys, row, strict=True)) for row in values]
    for row in rows:
        row["rater"] = rater_pseudonym(study, row["rater"])
    return rows


def _arm_labels(study: Study, mode: str) -> dict[int, str]:
    arms = list(study.arms.all())
    if mode == "arms":
        return {arm.pk: f"{arm_title(arm, size=False)} · {arm.size_tag}" for arm in arms}
    labels = blind_labels(study)
    return {arm.pk: labels[arm.pk] for arm in sorted(arms, key=lambda a: labels[a.pk])}


def _relabel(found: dict, labels: dict) -> dict:
    for key in ("first", "second", "arm"):
        if key in found:
            found[key] = labels[found[key]]
    return found


def pairwise_numbers(rows: list[dict], order: list, labels: dict, *, with_arms: bool) -> dict:
    """The report's numbers from judgment rows (``left``/``right``: arm keys in ``order``,
    shown as ``labels``). Rows are put in one canonical order first, so the database's rows
    and an export's give identical numbers."""
    rows = sorted(rows, key=lambda r: (str(r["prompt"]), str(r["pair"]), str(r["rater"])))
    numbers = {
        "n_judgments": len(rows),
        "n_prompts": len({str(r["prompt"]) for r in rows}),
        "agreement": asdict(pairwise.pair_agreement(rows)),
        "outcomes": [],
        "bradley_terry": None,
    }
    if not with_arms:
        return numbers
    outcomes = pairwise.win_tie_loss(rows, order)
    numbers["outcomes"] = [_relabel(asdict(o), labels) for o in outcomes]
    fit = asdict(pairwise.bradley_terry(rows, order))
    fit["strengths"] = [_relabel(s, labels) for s in fit["strengths"]]
    numbers["bradley_terry"] = fit
    return numbers


def pairwise_report(study: Study, mode: str) -> dict:
    """The report's numbers as JSON-friendly dicts (the page, the API, the HTML document and
    the export's manifest share it)."""
    report = {"study": study.pk, "mode": mode, "unit_of_analysis": UNIT_OF_ANALYSIS}
    labels = _arm_labels(study, mode) if mode != "arm-free" else {}
    order = list(labels)  # reference arm first: the study's first arm, or Arm A when blind
    if mode == "arms":
        order = [arm.pk for arm in study.arms.all()]
    rows = judgment_rows(study)
    return report | pairwise_numbers(rows, order, labels, with_arms=mode != "arm-free")
