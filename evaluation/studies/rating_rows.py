"""A study's completed ratings as the tidy rows every prompt-level analysis starts from
(the rows the ratings export writes; see :mod:`palmsweb.lib.ratings`). Read by the report
(:mod:`evaluation.report.table`) and by the study planner, which estimates variance
components from the last closed study."""

from __future__ import annotations

from evaluation.models import Rating, Study, StudyOutput
from evaluation.studies.blinding import rater_pseudonym
from palmsweb.lib.arm_names import arm_name


def study_rows(study: Study, *, include_arms: bool) -> list[dict]:
    """The completed ratings of counted outputs, one dict per rating, as exported."""
    rows = (
        Rating.objects.filter(study=study, status=Rating.Status.COMPLETED)
        .exclude(output__screening=StudyOutput.Screening.EXCLUDED)
        .values_list(
            "output__public_id",
            "output__prompt_id",
            "output__arm__arm",
            "output__arm__label",
            "output__prompt__category__name",
            "output__arm__size_tag",
            "output__sample_index",
            "rater_id",
            "score",
        )
    )
    pseudonyms: dict[int, str] = {}
    out = []
    for public_id, prompt_id, arm, label, category, size_tag, sample, rater_id, score in rows:
        if rater_id not in pseudonyms:
            pseudonyms[rater_id] = rater_pseudonym(study, rater_id)
        out.append(
            {
                "output_id": public_id,
                "prompt_id": prompt_id,
                # a labelled arm is "role:label", apart from its role's plain arm
                "arm": arm_name(arm, label) if include_arms else "",
                "category": category,
                "size_tag": (size_tag or "") if include_arms else "",
                "sample_index": sample,
                "rater": pseudonyms[rater_id],
                "score": score,
            }
        )
    return out
