"""The automatic-score sections of a study's report and the scoring page, built from the
latest succeeded run of each kind; blinded readers see arms only by their labels."""

from __future__ import annotations

from collections import defaultdict

from evaluation.models import AutomaticScore, ScoringRun, Study, StudyOutput
from evaluation.scoring.adherence import adherence_section
from evaluation.scoring.common import latest_succeeded
from evaluation.scoring.toxicity import TOXICITY_METRIC
from evaluation.studies.arm_keys import arm_title
from evaluation.studies.blinding import blind_labels


def _arm_entries(study: Study, *, blinded: bool, arm_labels: dict[int, str] | None) -> list[dict]:
    arms = list(study.arms.select_related("model_version"))
    if arm_labels is None and blinded:
        arm_labels = blind_labels(study)
    entries = []
    for arm in arms:
        label = (arm_labels or {}).get(arm.pk)
        if blinded:
            if not label:
                raise ValueError(f"arm_labels lacks a label for arm {arm.pk}")
            entries.append({"key": arm.pk, "label": label})
        else:
            default = arm_title(arm)
            entries.append(
                {
                    "key": arm.pk,
                    "label": label or default,
                    "arm": arm.arm,
                    "arm_display": arm.get_arm_display(),
                    "arm_label": arm.label,
                    "model": arm.model_version.name,
                    "size": arm.size_tag,
                }
            )
    if blinded:
        entries.sort(key=lambda e: e["label"])  # the arm order could hint at the arm
    return entries


def judge_run_summary(
    study: Study, *, blinded: bool, arm_labels: dict[int, str] | None = None
) -> dict:
    """The latest succeeded judge run's per-arm means for the scoring page (blinded as
    ``report_sections``). The report sets them beside the human ratings."""
    run = latest_succeeded(study, ScoringRun.Kind.JUDGE)
    if run is None:
        return {"available": False}
    arms = run.result.get("arms", {})
    rows = []
    for arm in _arm_entries(study, blinded=blinded, arm_labels=arm_labels):
        data = arms.get(str(arm["key"]), {})
        rows.append(
            {
                "arm": arm["label"],
                "n": data.get("n", 0),
                "n_missing": data.get("n_missing", 0),
                "mean": data.get("mean"),
                "sd": data.get("sd"),
            }
        )
    return {
        "available": True,
        "model": run.scorer,
        "scorer_version": run.result.get("scorer_version", ""),
        "finished_at": run.finished_at,
        "n_scored": run.result.get("n_scored", 0),
        "n_missing": run.result.get("n_missing", 0),
        "rows": rows,
    }


def adherence_summary(study: Study, *, blinded: bool) -> dict:
    """The held-out adherence section alone (the API), blinded as ``report_sections``."""
    return adherence_section(
        study, _arm_entries(study, blinded=blinded, arm_labels=None), blinded=blinded
    )


def _public(entry: dict) -> dict:
    """What a template may show of an arm: no internal id."""
    return {k: v for k, v in entry.items() if k != "key"}


def report_sections(
    study: Study,
    *,
    blinded: bool,
    arm_labels: dict[int, str] | None = None,
    n_resamples: int = 2_000,
) -> dict:
    """Ready-to-render automatic-score sections of a study's report.

    Keys: ``toxicity``, ``cooccurrence``, ``capability``, ``adherence`` (each with
    ``available``), and ``arms``. With ``blinded=True`` arms appear only as the labels in
    ``arm_labels`` (``{StudyArm.pk: "Arm A"}``; drawn from the study's salt when not given), with no
    model names, arm kinds, sizes or internal ids, and per-arm error texts are replaced
    by a neutral phrase.
    """
    arms = _arm_entries(study, blinded=blinded, arm_labels=arm_labels)
    return {
        "blinded": blinded,
        "arms": [_public(a) for a in arms],
        "toxicity": _toxicity_section(study, arms, n_resamples=n_resamples),
        "cooccurrence": _cooccurrence_section(study, arms),
        "capability": _capability_section(study, arms, blinded=blinded),
        "adherence": adherence_section(study, arms, blinded=blinded),
    }


def _summary(values: list[float], n_missing: int, *, n_resamples: int) -> dict:
    from palmsweb.lib.stats import describe

    s = describe(values, n_resamples=n_resamples, seed=0)

    def pct(x):
        return None if x is None else round(100 * max(0.0, min(1.0, x)), 1)

    return {
        "n": s.n,
        "n_missing": n_missing,
        "mean": s.mean,
        "ci_low": s.ci_low,
        "ci_high": s.ci_high,
        "mean_pct": pct(s.mean),
        "ci_low_pct": pct(s.ci_low),
        "ci_high_pct": pct(s.ci_high),
    }


def _toxicity_section(study: Study, arms: list[dict], *, n_resamples: int) -> dict:
    run = latest_succeeded(study, ScoringRun.Kind.TOXICITY)
    if run is None:
        return {"available": False}
    scorer = run.result.get("scorer") or run.scorer
    scores = dict(
        AutomaticScore.objects.filter(
            output__study=study, metric=TOXICITY_METRIC, scorer=scorer
        ).values_list("output_id", "value")
    )
    versions = sorted(
        set(
            AutomaticScore.objects.filter(
                output__study=study, metric=TOXICITY_METRIC, scorer=scorer
            ).values_list("scorer_version", flat=True)
        )
    )
    outputs = StudyOutput.objects.filter(study=study).rated()
    cells: dict[tuple[int, str], list[float | None]] = defaultdict(list)
    categories: list[str] = []
    for pk, arm_id, category in outputs.order_by("prompt__order", "pk").values_list(
        "pk", "arm_id", "prompt__category__name"
    ):
        if category not in categories:
            categories.append(category)
        cells[(arm_id, category)].append(scores.get(pk))
    rows = []
    for arm in arms:
        everything = [v for c in categories for v in cells[(arm["key"], c)]]
        rows.append(
            {
                "arm": arm["label"],
                "overall": _summary(
                    [v for v in everything if v is not None],
                    sum(v is None for v in everything),
                    n_resamples=n_resamples,
                ),
                "cells": [
                    {
                        "category": c,
                        **_summary(
                            [v for v in cells[(arm["key"], c)] if v is not None],
                            sum(v is None for v in cells[(arm["key"], c)]),
                            n_resamples=n_resamples,
                        ),
                    }
                    for c in categories
                ],
            }
        )
    return {
        "available": True,
        "scorer": scorer,
        "scorer_versions": versions,
        "finished_at": run.finished_at,
        "categories": categories,
        "rows": rows,
    }


def _cooccurrence_section(study: Study, arms: list[dict]) -> dict:
    run = latest_succeeded(study, ScoringRun.Kind.COOCCURRENCE)
    if run is None:
        return {"available": False}
    sets = []
    for item in run.result.get("sets", []):
        rows = []
        for arm in arms:
            data = item["arms"].get(str(arm["key"]))
            if data is None:
                continue
            rows.append(
                {
                    "arm": arm["label"],
                    "groups": [
                        {"label": g["label"], **data["groups"].get(g["key"], {"top": []})}
                        for g in item["groups"]
                    ],
                }
            )
        sets.append(
            {
                "key": item["key"],
                "label": item["label"],
                "groups": [g["label"] for g in item["groups"]],
                "rows": rows,
            }
        )
    return {
        "available": True,
        "tagger": run.result.get("tagger", {}),
        "sampling": run.result.get("sampling", {}),
        "finished_at": run.finished_at,
        "sets": sets,
    }


def _capability_section(study: Study, arms: list[dict], *, blinded: bool) -> dict:
    run = latest_succeeded(study, ScoringRun.Kind.CAPABILITY)
    if run is None:
        return {"available": False}
    rows = []
    for arm in arms:
        data = run.result.get("arms", {}).get(str(arm["key"]))
        if data is None:
            rows.append({"arm": arm["label"], "available": False, "reason": "not scored"})
            continue
        row = {
            "arm": arm["label"],
            "available": data.get("available", False),
            "perplexity": data.get("perplexity"),
            "mc_accuracy_sum": data.get("mc_accuracy_sum"),
            "mc_accuracy_mean": data.get("mc_accuracy_mean"),
            "n_tokens": data.get("n_tokens"),
        }
        if not row["available"]:
            # Reasons may name a path or a model; blinded readers get a neutral phrase.
            row["reason"] = "not available for this arm" if blinded else data.get("reason", "")
        rows.append(row)
    return {
        "available": True,
        "texts": run.result.get("texts", {}),
        "multiple_choice": run.result.get("multiple_choice", {}),
        "finished_at": run.finished_at,
        "rows": rows,
    }
