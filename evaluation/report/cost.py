"""What a study cost, in one total that names no arm (so every report mode shows it): the
local fine-tunes spent on its arms' models, lineage included
(``training.services.compute_total``), its sampling jobs (its own and its co-occurrence
runs') and its scoring runs, failed ones with what they spent."""

from __future__ import annotations

from evaluation.models import Study
from evaluation.scoring.compute import study_cost_parts
from training.services import compute_total


def study_cost(study: Study) -> dict:
    """The study's total (``palmsweb.lib.compute.total`` with a ``summary`` line)."""
    sampling_ids, scoring_records = study_cost_parts(study)
    return compute_total(
        model_versions=study.arms.values_list("model_version_id", flat=True),
        sampling_job_ids=sampling_ids,
        extra=scoring_records,
    )
