"""Blinding: the letters that stand for a study's arms wherever arms must stay anonymous
(the report, the scores, the outputs page), so "Arm A" is the same arm on every page; and
the pseudonyms that stand for raters where only admins may see names (exports, the API)."""

from __future__ import annotations

import hashlib
import string

from evaluation.models import Study, StudyArm


def blind_letters(study: Study, arms: list[StudyArm]) -> dict[int, str]:
    """A, B, C… per arm in an order that is random per study (salted) but fixed."""
    ranked = sorted(
        arms,
        key=lambda a: hashlib.sha256(f"{study.order_salt}:{a.pk}".encode()).hexdigest(),
    )
    letters = list(string.ascii_uppercase)
    return {arm.pk: (letters[i] if i < 26 else f"Z{i}") for i, arm in enumerate(ranked)}


def blind_labels(study: Study) -> dict[int, str]:
    """Arm A, B, C… in an order drawn from the study's secret salt, not the arm order:
    the report's letters, so "Arm A" is the same arm on every page."""
    letters = blind_letters(study, list(study.arms.all()))
    return {pk: f"Arm {letter}" for pk, letter in letters.items()}


def rater_pseudonym(study: Study, rater_id: int) -> str:
    """ "R" + a short hash of the study's secret salt and the rater: stable within a study,
    different across studies, not reversible to a username."""
    digest = hashlib.sha256(f"{study.pk}:{study.order_salt}:{rater_id}".encode()).hexdigest()
    return "R" + digest[:10]
