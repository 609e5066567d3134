"""A rater changes their last submitted rating (1–5) or judgment (pairwise) while the study
is open.

Only the score and the comment change: the rating stays completed, the output's
``completed_count`` and quota are untouched, so every assignment rule still holds. What was
replaced goes into :class:`~evaluation.models.RatingRevision`. Locks are taken in the order
the rest of the rating code uses: the output row, then the rating row (for a judgment: the
pair row, then the judgment row). Only the last one can change, and the public id of the
output or pair names it, so a page that went stale cannot change another.
"""

from __future__ import annotations

from django.db import transaction

from evaluation.errors import RatingError
from evaluation.models import (
    MAX_COMMENT_CHARS,
    SCORES,
    PairJudgment,
    PairJudgmentRevision,
    Rating,
    RatingRevision,
    Study,
    StudyOutput,
    StudyPair,
)
from evaluation.studies.queue import check_can_rate

PICK_A_SCORE = "Pick a score 1–5 first."


def rating_last(study: Study, rater) -> Rating | None:
    """The rater's most recently submitted rating in the study, with what the page shows."""
    return (
        Rating.objects.filter(study=study, rater=rater, status=Rating.Status.COMPLETED)
        .select_related("output__prompt__category")
        .order_by("-completed_at", "-pk")
        .first()
    )


@transaction.atomic
def rating_revise(*, study: Study, rater, public_id: str, score: int, comment: str = "") -> Rating:
    """Change the score and comment of the rater's last submitted rating (``public_id``
    names it, so a page that went stale cannot change a different one). Returns the rating;
    the same values again change nothing and log nothing."""
    check_can_rate(study, rater)
    if score not in SCORES:
        raise RatingError(PICK_A_SCORE)
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT_CHARS:
        raise RatingError(f"Comments have at most {MAX_COMMENT_CHARS} characters.")
    last = rating_last(study, rater)
    if last is None or last.output.public_id != public_id:
        raise RatingError("Only your last submitted rating can be changed.")
    StudyOutput.objects.select_for_update(of=("self",)).filter(pk=last.output_id).first()
    rating = Rating.objects.select_for_update().get(pk=last.pk)
    # Read again under the locks: a submit that landed meanwhile makes this one not the last.
    latest = rating_last(study, rater)
    if rating.status != Rating.Status.COMPLETED or latest is None or latest.pk != rating.pk:
        raise RatingError("Only your last submitted rating can be changed.")
    if (rating.score, rating.comment) == (score, comment):
        return rating
    RatingRevision.objects.create(
        rating=rating,
        previous_score=rating.score,
        previous_comment=rating.comment,
        score=score,
        comment=comment,
    )
    rating.score, rating.comment = score, comment
    rating.save(update_fields=["score", "comment"])
    return rating


def judgment_last(study: Study, rater) -> PairJudgment | None:
    """The rater's most recently submitted pairwise judgment in the study, with the task."""
    return (
        PairJudgment.objects.filter(study=study, rater=rater, status=PairJudgment.Status.COMPLETED)
        .select_related("pair__prompt__category", "pair__left", "pair__right")
        .order_by("-completed_at", "-pk")
        .first()
    )


@transaction.atomic
def judgment_revise(
    *, study: Study, rater, public_id: str, verdict: str, reason: str = ""
) -> PairJudgment:
    """Change the verdict and reason of the rater's last submitted judgment (``public_id``
    is its pair's). The pair's ``completed_count`` is untouched; the replaced values go into
    :class:`PairJudgmentRevision`. The same values again change nothing and log nothing."""
    check_can_rate(study, rater, mode=Study.Mode.PAIRWISE)
    if verdict not in PairJudgment.Verdict.values:
        raise RatingError("The verdict must be a, b, tie or both_bad.")
    reason = (reason or "").strip()
    if len(reason) > MAX_COMMENT_CHARS:
        raise RatingError(f"Reasons have at most {MAX_COMMENT_CHARS} characters.")
    refused = "Only your last submitted judgment can be changed."
    last = judgment_last(study, rater)
    if last is None or last.pair.public_id != public_id:
        raise RatingError(refused)
    StudyPair.objects.select_for_update(of=("self",)).filter(pk=last.pair_id).first()
    judgment = PairJudgment.objects.select_for_update().get(pk=last.pk)
    latest = judgment_last(study, rater)  # again under the locks, as for a 1–5 rating
    still_last = latest is not None and latest.pk == judgment.pk
    if judgment.status != PairJudgment.Status.COMPLETED or not still_last:
        raise RatingError(refused)
    if (judgment.verdict, judgment.reason) == (verdict, reason):
        return judgment
    PairJudgmentRevision.objects.create(
        judgment=judgment,
        previous_verdict=judgment.verdict,
        previous_reason=judgment.reason,
        verdict=verdict,
        reason=reason,
    )
    judgment.verdict, judgment.reason = verdict, reason
    judgment.save(update_fields=["verdict", "reason"])
    return judgment
