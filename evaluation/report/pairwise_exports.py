"""Exports of a pairwise study: its judgments as CSV, JSON Lines or Parquet (one row per
completed judgment of a counted pair), and what the study bundle needs besides them: the
manifest's record of the report's numbers and the replay that recomputes them from
``judgments.csv`` alone.

The rules of :mod:`evaluation.report.exports` hold: closed studies only, rows streamed in
chunks, arms (and model versions) only in exports of an unblinded study, raters as the
study's pseudonyms. A and B are the pair's stored order, so a row says what the rater saw.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

from evaluation.models import PairJudgment, Study
from evaluation.report.exports import (
    CHUNK_SIZE,
    WRITERS,
    ExportError,
    HashingWriter,
    Written,
    columns_for,
    write_ratings,
)
from evaluation.report.exports import replay_record as scale_replay_record
from evaluation.report.pairwise import pairwise_numbers, pairwise_report
from evaluation.studies.arm_keys import arm_title
from evaluation.studies.blinding import rater_pseudonym
from evaluation.studies.pairwise_selectors import counted
from evaluation.studies.positions import frozen_numbers

KIND = "pairwise"
JUDGMENT_COLUMNS = [
    "rater", "pair_id", "prompt_id", "prompt", "category", "position_version", "sample_index",
    "a_output_id", "a_text", "b_output_id", "b_text", "verdict", "reason", "revisions",
    "claimed_at", "completed_at",
]  # fmt: skip
JUDGMENT_ARM_COLUMNS = ["a_arm", "a_arm_label", "a_size_tag", "a_model_version",
                        "b_arm", "b_arm_label", "b_size_tag", "b_model_version"]  # fmt: skip
_SIDES = {"a": "pair__left", "b": "pair__right"}


def judgment_columns(*, includes_arms: bool) -> list[str]:
    return JUDGMENT_COLUMNS + (JUDGMENT_ARM_COLUMNS if includes_arms else [])


def _judgments(study: Study):
    from django.db.models import Count

    fields = ["rater_id", "pair__public_id", "pair__prompt_id", "pair__prompt__text",
              "pair__prompt__category__name", "pair__prompt__category_id", "pair__sample_index",
              "verdict", "reason", "claimed_at", "completed_at", "n_revisions"]  # fmt: skip
    for side in _SIDES.values():
        fields += [f"{side}__public_id", f"{side}__text", f"{side}__arm__arm",
                   f"{side}__arm__label", f"{side}__arm__size_tag",
                   f"{side}__arm__model_version__name"]  # fmt: skip
    return (
        PairJudgment.objects.filter(study=study, status=PairJudgment.Status.COMPLETED)
        .filter(pair__in=counted(study).values("pk"))
        .annotate(n_revisions=Count("revisions"))
        .order_by("pair__prompt__order", "pair__prompt_id", "pair_id", "claimed_at", "pk")
        .values(*fields)
    )


def _row(study: Study, r: dict, *, includes_arms: bool, versions: dict[int, int]) -> dict:
    row = {
        "rater": rater_pseudonym(study, r["rater_id"]),
        "pair_id": r["pair__public_id"],
        "prompt_id": r["pair__prompt_id"],
        "prompt": r["pair__prompt__text"],
        "category": r["pair__prompt__category__name"],
        # The category's position version frozen when the study opened.
        "position_version": versions.get(r["pair__prompt__category_id"]),
        "sample_index": r["pair__sample_index"],
        "verdict": r["verdict"],
        "reason": r["reason"],
        "revisions": r["n_revisions"],
        "claimed_at": r["claimed_at"].isoformat() if r["claimed_at"] else None,
        "completed_at": r["completed_at"].isoformat() if r["completed_at"] else None,
    }
    for letter, side in _SIDES.items():
        row[f"{letter}_output_id"] = r[f"{side}__public_id"]
        row[f"{letter}_text"] = r[f"{side}__text"]
        if includes_arms:
            row[f"{letter}_arm"] = r[f"{side}__arm__arm"]
            row[f"{letter}_arm_label"] = r[f"{side}__arm__label"]
            row[f"{letter}_size_tag"] = r[f"{side}__arm__size_tag"]
            row[f"{letter}_model_version"] = r[f"{side}__arm__model_version__name"]
    return row


def iter_judgment_chunks(
    study: Study, *, includes_arms: bool, chunk_size: int = CHUNK_SIZE
) -> Iterator[list[dict]]:
    """Export rows in chunks of at most ``chunk_size``, read with ``.iterator()``."""
    versions = frozen_numbers(study)
    rows = _judgments(study).iterator(chunk_size=chunk_size)
    while chunk := list(islice(rows, chunk_size)):
        yield [_row(study, r, includes_arms=includes_arms, versions=versions) for r in chunk]


def write_judgments(
    study: Study, fmt: str, path: Path, *, includes_arms: bool, chunk_size: int = CHUNK_SIZE
) -> Written:
    """Write the judgments of a pairwise ``study`` to ``path`` as ``fmt``."""
    if fmt not in WRITERS:
        raise ExportError(f"Unknown judgments format {fmt!r}.")
    columns = judgment_columns(includes_arms=includes_arms)
    chunks = iter_judgment_chunks(study, includes_arms=includes_arms, chunk_size=chunk_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw:
        sink = HashingWriter(raw)
        rows = WRITERS[fmt](sink, chunks, columns)
        sink.flush()
    return Written(path, sink.hexdigest, sink.size, rows)


def rows_writer(study: Study):
    """("ratings", write_ratings), or for a pairwise study ("judgments", write_judgments):
    what an export and a bundle write rows with."""
    if study.mode == Study.Mode.PAIRWISE:
        return "judgments", write_judgments
    return "ratings", write_ratings


# --- the report's numbers, recorded and replayed ---------------------------------------------


def manifest_analysis(study: Study, mode: str, *, includes_arms: bool) -> dict:
    """The bundle manifest's ``columns`` and ``analysis`` (what a replay checks), for a 1–5
    or a pairwise study."""
    if study.mode != Study.Mode.PAIRWISE:
        from evaluation.report.document import report_for

        return {"columns": columns_for(study, includes_arms=includes_arms),
                "analysis": scale_replay_record(report_for(study, mode))}  # fmt: skip
    return {"columns": judgment_columns(includes_arms=includes_arms),
            "analysis": replay_record(study, includes_arms=includes_arms)}  # fmt: skip


def flatten(value: Any, path: str = "", out: dict | None = None) -> dict[str, Any]:
    """Every number of a pairwise report as ``path → value``; a win/tie/loss row is keyed by
    its arms and category, a strength by its arm."""
    out = {} if out is None else out
    if isinstance(value, Mapping):
        for key in sorted(value, key=str):
            flatten(value[key], f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, (list, tuple)) and value and isinstance(value[0], Mapping):
        for i, item in enumerate(value):
            label = "/".join(str(item[k]) for k in ("first", "second", "category", "arm")
                             if k in item) or str(i)  # fmt: skip
            flatten(item, f"{path}[{label}]", out)
    else:
        out[path] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def replay_record(study: Study, *, includes_arms: bool) -> dict:
    """The manifest's ``analysis`` of a pairwise bundle: the settings a replay needs (the
    arms' order and labels, keyed by model version) and every number of the report."""
    mode = "arms" if includes_arms else "arm-free"
    report = pairwise_report(study, mode)
    numbers = {k: v for k, v in report.items() if k not in ("study", "mode", "unit_of_analysis")}
    arms = list(study.arms.select_related("model_version")) if includes_arms else []
    return {
        "settings": {
            "kind": KIND,
            "includes_arms": includes_arms,
            "arm_order": [arm.model_version.name for arm in arms],
            "arm_labels": {arm.model_version.name: f"{arm_title(arm, size=False)} · {arm.size_tag}"
                           for arm in arms},  # fmt: skip
        },
        "numbers": json.loads(json.dumps(flatten(numbers))),
        "replay": "python manage.py replay_report <this bundle>.zip",
    }


def replay_numbers(records: list[dict[str, str]], settings: dict) -> dict[str, Any]:
    """The report's numbers recomputed from ``judgments.csv`` records alone (arms by their
    model version columns, in the recorded order)."""
    includes_arms = settings["includes_arms"]
    rows = [
        {"pair": r["pair_id"], "prompt": r["prompt_id"], "category": r["category"],
         "verdict": r["verdict"], "rater": r["rater"],
         "left": r["a_model_version"] if includes_arms else None,
         "right": r["b_model_version"] if includes_arms else None}
        for r in records
    ]  # fmt: skip
    numbers = pairwise_numbers(
        rows, settings["arm_order"], settings["arm_labels"], with_arms=includes_arms
    )
    return json.loads(json.dumps(flatten(numbers)))
