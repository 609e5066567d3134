"""A rater changes their last submitted rating while the study is open.

Only the score and the comment change: the rating stays completed, the output's
``completed_count`` and quota are untouched, so every assignment rule still holds. What was
replaced goes into :class:`~evaluation.models.RatingRevision`. Locks are taken in the order
the rest of the rating code uses: the output row, then the rating row.
"""

from __future__ import annotations

from django.db import transaction

from evaluation.errors import RatingError
from evaluation.models import MAX_COMMENT_CHARS, SCORES, Rating, RatingRevision, Study, StudyOutput
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
