"""The name an arm goes by in the rating table: its role, plus its free label if any.

A study arm has a role (``base``, ``control``, ``values_targeted``) and, optionally, a free
label ("values-targeted + DPO") that tells two arms of one role at one size apart (an SFT
model and its DPO'd successor). The rating table's ``arm`` field must keep such arms apart,
so a labelled arm is written ``role:label``; an unlabelled arm is just its role, exactly as
before labels existed (old exports and studies analyse unchanged). Roles never contain
``:``, so the first ``:`` splits a name back into its two parts, whatever the label holds.
"""

from __future__ import annotations

SEPARATOR = ":"


def arm_name(role: str, label: str = "") -> str:
    """``role`` for an unlabelled arm, ``role:label`` for a labelled one."""
    label = (label or "").strip()
    return f"{role}{SEPARATOR}{label}" if label else role


def arm_role(name: str) -> str:
    """The role part of an arm name (``values_targeted:SFT+DPO`` → ``values_targeted``)."""
    return name.partition(SEPARATOR)[0]


def arm_label(name: str) -> str:
    """The label part of an arm name ("" for an unlabelled arm)."""
    return name.partition(SEPARATOR)[2]


def is_labelled(name: str) -> bool:
    return bool(arm_label(name))
