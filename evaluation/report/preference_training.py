"""DPO on a preference snapshot (issue 18, item 3): the evaluation side of the launch.

``training`` may not import ``evaluation``, so this module reads the snapshot's frozen pairs
(through :func:`preferences.snapshot_jsonl`, the prompt / chosen / rejected rows TRL reads:
the content format stays the snapshot module's business) and hands them, with the snapshot's
hash and a line saying where they came from, to :func:`training.services.dpo_launch`,
which queues an ordinary fine-tune job with ``objective="dpo"``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from evaluation.errors import EvaluationError
from evaluation.models import PreferenceSnapshot
from evaluation.report.preferences import snapshot_jsonl
from palmsweb.roles import Role, has_role
from training.models import FineTuneJob, ModelVersion


def can_launch_dpo(user) -> bool:
    """Admins launch fine-tunes, DPO among them (curators build and freeze the pairs)."""
    return has_role(user, Role.ADMIN)


def snapshot_pairs(snapshot: PreferenceSnapshot) -> list[dict[str, str]]:
    """The snapshot's pairs as ``{"prompt", "chosen", "rejected"}`` rows."""
    text = snapshot_jsonl(snapshot, "trl")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def snapshot_source(snapshot: PreferenceSnapshot) -> str:
    """One line of provenance for the job page: which study the pairs came from."""
    study = json.loads(snapshot.content).get("provenance", {}).get("study", {})
    return (
        f"Preference snapshot {snapshot.content_hash[:12]} from study "
        f'"{study.get("name", "?")}" (#{study.get("id", "?")}), {snapshot.pair_count} pairs'
    )


def dpo_jobs_for(snapshot: PreferenceSnapshot):
    """The DPO fine-tunes trained on this snapshot's pairs, newest first."""
    return FineTuneJob.objects.filter(
        objective=FineTuneJob.Objective.DPO, preference_snapshot_hash=snapshot.content_hash
    ).select_related("start_version", "result", "base_model")


def dpo_start_versions():
    """The versions a DPO can start from: any a study may use (a sweep's losers aside)."""
    return ModelVersion.objects.for_studies().select_related("base_model")


def preference_dpo_launch(
    *,
    snapshot: PreferenceSnapshot,
    start_version: ModelVersion,
    method: str = FineTuneJob.Method.FULL,
    hyperparameters: Mapping[str, Any] | None = None,
    arm: str | None = None,
    user=None,
) -> FineTuneJob:
    """Queue a DPO fine-tune of ``start_version`` on ``snapshot``'s pairs. A refusal (bad
    hyperparameters, a hosted provider past its cut-off, a method it cannot run) raises
    EvaluationError with the training service's reason, and nothing is created."""
    from training.services import TrainingError, dpo_launch

    try:
        return dpo_launch(
            start_version=start_version,
            pairs=snapshot_pairs(snapshot),
            preference_snapshot_hash=snapshot.content_hash,
            profile_id=snapshot.preference_set.profile_id,
            source=snapshot_source(snapshot),
            method=method,
            hyperparameters=hyperparameters,
            arm=arm,
            user=user,
        )
    except TrainingError as refused:
        raise EvaluationError(str(refused)) from refused
