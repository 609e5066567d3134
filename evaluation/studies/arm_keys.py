"""What tells a study's arms apart: the report pools ratings by (role, label, size tag), so
that key must be unique within a study (``lifecycle`` checks it on create and edit).

The label is free text beside the role ("values-targeted + DPO"): it lets an SFT model and
its DPO'd successor, both values-targeted at 135M, be two arms of one study. Blank means
the role's own name. In the rating table a labelled arm is ``role:label``
(:func:`palmsweb.lib.arm_names.arm_name`). Raters never see it (blinding)."""

from __future__ import annotations

from evaluation.errors import EvaluationError
from training.models import ModelVersion

MAX_LABEL_CHARS = 60
EXAMPLE_LABEL = "values-targeted + DPO"


def arm_size_tag(spec) -> str:
    """The arm's size tag as stored: the one given, else its model's size label."""
    return (spec.size_tag or "").strip() or spec.model_version.size_label


def _role_names() -> dict[str, str]:
    """Every spelling of a role, lowercased → the role: its value and its display name."""
    names = {}
    for value, display in ModelVersion.Arm.choices:
        names[value.lower()] = value
        names[str(display).lower()] = value
        names[value.replace("_", "-").lower()] = value
    return names


def clean_arm_label(spec) -> str:
    """The arm's label as stored: stripped; blank (or whitespace only) when the arm goes by
    its role's name, and so does a label that is just its own role's name. Refuses
    (EvaluationError) a label that is too long, runs over lines, or names another role
    (a values-targeted arm labelled "base" would be read as the wrong arm)."""
    label = str(getattr(spec, "label", "") or "").strip()
    if len(label) > MAX_LABEL_CHARS:
        raise EvaluationError(
            f"An arm's label has at most {MAX_LABEL_CHARS} characters "
            f"({spec.model_version.name}'s has {len(label)})."
        )
    if any(not ch.isprintable() for ch in label):
        raise EvaluationError(f"{spec.model_version.name}'s label must be one line of text.")
    role = _role_names().get(label.lower())
    if role == spec.arm:
        return ""
    if role is not None:
        raise EvaluationError(
            f"{spec.model_version.name} is a {spec.arm} arm: its label cannot be the name "
            f"of another role ({label!r})."
        )
    return label


def check_arms_stay_apart(arms) -> None:
    """The report pools ratings by (role, label, size tag): two models under one such key
    would be read as one arm (an SFT model and its DPO'd successor, both values-targeted
    at 135M, unless one of them has a label). Checks each label too."""
    seen: dict[tuple[str, str, str], str] = {}
    for spec in arms:
        key = (spec.arm, clean_arm_label(spec).casefold(), arm_size_tag(spec))
        if key in seen:
            role = dict(ModelVersion.Arm.choices)[spec.arm]
            labelled = f" labelled {clean_arm_label(spec)!r}" if key[1] else ""
            raise EvaluationError(
                f"{seen[key]} and {spec.model_version.name} are both {role} arms{labelled} "
                f"tagged {key[2]!r}: the report would pool their ratings. Give one a label "
                f"(for example \"{EXAMPLE_LABEL}\")."
            )
        seen[key] = spec.model_version.name


def arm_title(arm, *, size: bool = True) -> str:
    """How reports and exports name a study arm: its label, else its role's name, then its
    size tag ("values-targeted + DPO · 135M"). Never for raters."""
    name = arm.label or arm.get_arm_display()
    return f"{name} · {arm.size_tag}" if size and arm.size_tag else name
