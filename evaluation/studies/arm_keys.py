"""What tells a study's arms apart: the report pools ratings by (arm label, size tag), so
that key must be unique within a study (``lifecycle`` checks it on create and edit)."""

from __future__ import annotations

from evaluation.errors import EvaluationError
from training.models import ModelVersion


def arm_size_tag(spec) -> str:
    """The arm's size tag as stored: the one given, else its model's size label."""
    return (spec.size_tag or "").strip() or spec.model_version.size_label


def check_arms_stay_apart(arms) -> None:
    """The report pools ratings by (arm, size tag): two models under one such key would be
    read as one arm (an SFT model and its DPO'd successor, both values-targeted at 135M)."""
    seen: dict[tuple[str, str], str] = {}
    for spec in arms:
        key = (spec.arm, arm_size_tag(spec))
        if key in seen:
            label = dict(ModelVersion.Arm.choices)[spec.arm]
            raise EvaluationError(
                f"{seen[key]} and {spec.model_version.name} are both {label} arms tagged "
                f"{key[1]!r}: the report would pool their ratings. Give one another size "
                "tag (for example \"135M + DPO\")."
            )
        seen[key] = spec.model_version.name
