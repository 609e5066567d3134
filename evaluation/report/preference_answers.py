"""A curator's own better answer as the chosen side of a preference pair (issue 18, item 2).

The answer is kept like a sample's content (:mod:`curation.services`): every saved version
is a :class:`~evaluation.models.PreferenceAnswerRevision` with its author, and a save names
the version it started from (``base_version``), so two curators never silently overwrite
each other: the guarded UPDATE (``WHERE answer_version = base_version``) lets exactly one of
two racing saves through, and the other is refused with both texts. A blank answer gives the
chosen side back to the raters' choice (a revision too). Frozen snapshots keep what they
froze; the next freeze uses the answer and says so in its provenance.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import F

from curation.models import MAX_TEXT_CHARS
from evaluation.errors import EvaluationError, StaleAnswerError
from evaluation.models import PreferenceAnswerRevision, PreferencePair


def _clean(answer: str) -> str:
    answer = (answer or "").strip()
    if len(answer) > MAX_TEXT_CHARS:
        raise EvaluationError(f"An answer is limited to {MAX_TEXT_CHARS:,} characters.")
    return answer


@transaction.atomic
def _apply(pair_id: int, base_version: int, answer: str, user, note: str):
    won = PreferencePair.objects.filter(pk=pair_id, answer_version=base_version).update(
        answer=answer, answer_version=F("answer_version") + 1, answer_by=user
    )
    if not won:
        return None
    pair = PreferencePair.objects.get(pk=pair_id)
    PreferenceAnswerRevision.objects.create(
        pair=pair, number=pair.answer_version, answer=answer, author=user, note=note
    )
    return pair


def preference_answer_save(
    *, pair: PreferencePair, answer: str, base_version: int, user, note: str = ""
) -> PreferencePair:
    """Save the curator's answer (blank: use the raters' chosen output again) if nobody
    saved since ``base_version``; the same text again changes nothing. Raises
    :class:`StaleAnswerError` (carrying the current pair) when someone saved first."""
    answer = _clean(answer)
    current = PreferencePair.objects.get(pk=pair.pk)
    if current.answer_version == base_version and current.answer == answer:
        return current
    saved = _apply(pair.pk, base_version, answer, user, note[:200])
    if saved is not None:
        return saved
    current = PreferencePair.objects.select_related("answer_by").get(pk=pair.pk)
    who = current.answer_by.get_username() if current.answer_by else "someone"
    raise StaleAnswerError(
        f"{who} saved an answer to this pair first (now version {current.answer_version}, "
        f"your edit started from version {base_version}). Your text is kept below; compare "
        "both and save again.",
        current=current,
    )


def preference_answer_restore(
    *, pair: PreferencePair, number: int, base_version: int, user
) -> PreferencePair:
    """Bring back an earlier revision's answer as a new revision."""
    try:
        revision = pair.revisions.get(number=number)
    except PreferenceAnswerRevision.DoesNotExist:
        raise EvaluationError("No such revision of this answer.") from None
    return preference_answer_save(
        pair=pair, answer=revision.answer, base_version=base_version, user=user,
        note=f"restored revision {number}",
    )  # fmt: skip
