"""The rating table the report analyses, and the settings of its analysis.

The report and ``replay_report`` must compute the same numbers, so both start from the
same rows: the ones the ratings export writes (output public id, prompt id, arm, category
name, size tag, sample index, rater pseudonym, score). A labelled arm's ``arm`` is
``role:label`` (:mod:`palmsweb.lib.arm_names`); the export writes the role and the label
in two columns, ``arm`` and ``arm_label``.
:func:`evaluation.studies.rating_rows.study_rows` reads them from the database,
:func:`bundle_rows` from an export's ``ratings.csv``;
:class:`~palmsweb.lib.ratings.RatingTable` sorts them (the row-order contract), and
:func:`run_analysis` calls :func:`palmsweb.lib.analysis.analyse_study` with the settings
the bundle's manifest records (:func:`analysis_settings`).

An arm-free report (a study not yet unblinded) analyses the same rows with the arm and
size left blank, so its numbers (counts, agreement, raters) can be replayed from an
arm-free export, which has no arm column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from evaluation.models import Study
from palmsweb.lib.analysis import StudyAnalysis, analyse_study
from palmsweb.lib.arm_names import arm_name
from palmsweb.lib.clustered import CI_RESAMPLES
from palmsweb.lib.csvsafe import unescape_cell
from palmsweb.lib.intervals import ALPHA_RESAMPLES
from palmsweb.lib.ratings import SORT_KEY, RatingTable

PLANNED_EFFECT = 0.5  # the difference the achieved power is computed for (1–5 scale)
ROW_ORDER_CONTRACT = (
    "RatingTable sorts the rows by "
    + ", ".join(SORT_KEY)
    + " (numbers before strings, numbers by value, strings by code point) before any "
    "computation; every bootstrap is seeded with `seed`. The numbers depend only on the "
    "set of rows and the settings, never on the order of ratings.csv."
)


def study_seed(study: Study) -> int:
    return int(study.seed) % (2**32)


def bundle_rows(records: Iterable[Mapping[str, str]], *, include_arms: bool) -> list[dict]:
    """The same rows from an export's CSV records (strings, formula-escaped by csvsafe)."""
    return [
        {
            "output_id": unescape_cell(r["output_id"]),
            "prompt_id": int(r["prompt_id"]),
            "arm": _arm(r) if include_arms else "",
            "category": unescape_cell(r["category"]),
            "size_tag": unescape_cell(r.get("size_tag") or "") if include_arms else "",
            "sample_index": int(r["sample_index"]),
            "rater": unescape_cell(r["rater"]),
            "score": int(r["score"]),
        }
        for r in records
    ]


def _arm(record: Mapping[str, str]) -> str:
    """The table's arm name: the role column, with the ``arm_label`` column when there is
    one (bundles from before arm labels have none: their arms are roles)."""
    return arm_name(unescape_cell(record["arm"]), unescape_cell(record.get("arm_label") or ""))


def analysis_settings(*, seed: int, sizes: list[str], include_arms: bool) -> dict:
    """Everything besides the rows that the analysis depends on (the manifest keeps it)."""
    return {
        "seed": seed,
        "sizes": list(sizes),
        "effect": PLANNED_EFFECT,
        "n_resamples": CI_RESAMPLES,
        "alpha_resamples": ALPHA_RESAMPLES,
        "mixed_model": include_arms,
        "includes_arms": include_arms,
        "row_order": list(SORT_KEY),
        "row_order_contract": ROW_ORDER_CONTRACT,
    }


def run_analysis(rows: Iterable[Mapping], settings: Mapping) -> tuple[RatingTable, StudyAnalysis]:
    """The table and its analysis; arm-free settings skip the intervals of arm cells."""
    table = RatingTable(rows)
    sizes = [s for s in settings["sizes"] if s in table.size_tags] or None
    analysis = analyse_study(
        table,
        sizes=sizes if settings["includes_arms"] else None,
        seed=settings["seed"],
        effect=settings["effect"],
        n_resamples=settings["n_resamples"] if settings["includes_arms"] else 0,
        alpha_resamples=settings["alpha_resamples"],
        mixed_model=settings["mixed_model"],
    )
    return table, analysis
