"""A study's planned rating-close date: optional, checked when it is set, and what the
hosted-shutdown warning (:func:`evaluation.studies.selectors.shutdown_warnings`) compares
each arm's model with."""

from __future__ import annotations

from datetime import date

from evaluation.errors import EvaluationError
from training.services import hosted_dates

UNCHANGED = object()  # an edit that leaves the date out keeps it


def check_rating_closes_on(value: date | None, *, previous: date | None = None) -> None:
    """Refuse a planned close date in the past (by the hosted-dates clock, which tests and
    operators can move). A date kept unchanged on an edit stays allowed even once it has
    passed: the study merely runs late."""
    if value is None or value == previous:
        return
    today = hosted_dates.today()
    if value < today:
        raise EvaluationError(
            f"The planned rating-close date {value.isoformat()} is in the past (today is "
            f"{today.isoformat()}): choose today or a later day, or leave it blank."
        )
