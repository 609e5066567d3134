"""The blinded rating queue: claim the next output, submit, skip, flag.

Every change that can fill an output (claim, submit, skip, flag) first locks
that output's row, so a check made after the lock ("is there still room?") cannot be
invalidated before commit; closing a study only ends claims, which frees room. Claiming
is one short transaction: on PostgreSQL ``SELECT … FOR UPDATE SKIP LOCKED`` takes the
rater's next candidate that nobody else is claiming right now; on SQLite the transaction is
``BEGIN IMMEDIATE`` (see ``palmsweb.lib.dburl``), which serialises writers, so the same
query without row locks is already exclusive. The database backs the rules up with a unique
(output, rater) pair, one open claim per rater and study, and ``completed_count <= quota``.
A claim does not scan the study: it looks at the prompt the rater is on first, then at
widening windows of their personal prompt order (see :func:`prompt_windows`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TypeVar

from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Q, When
from django.utils import timezone

from curation.models import Category, PositionVersion
from evaluation.access import can_see_generations, has_rater_role
from evaluation.errors import (
    NotARater,
    OutputNotFound,
    RatingError,
    StudyStateError,
)
from evaluation.models import (
    MAX_COMMENT_CHARS,
    SCORES,
    Prompt,
    Rating,
    Study,
    StudyOutput,
)

CLAIM_ATTEMPTS = 20  # candidates found full on re-check before giving up (contention only)

Item = TypeVar("Item")  # what a queue hands out: an output (1–5) or a pair (pairwise)
Claim = TypeVar("Claim")


def check_can_rate(study: Study, user, *, mode: str = Study.Mode.SCALE) -> None:
    """Raise unless ``user`` is a rater in ``study``'s pool and the study is rating now in
    ``mode`` (read from the database: one query, whatever the caller holds in memory)."""
    status = None
    if has_rater_role(user):
        in_pool = Study.objects.filter(pk=study.pk, raters=user)
        row = in_pool.values_list("status", "prompt_set__profile_id", "mode").first()
        # A rater whose membership of the study's profile was withdrawn rates no more.
        if row is not None and has_rater_role(user, row[1]):
            status = row[0]
            if row[2] != mode:
                raise StudyStateError(f"This study is rated in {Study.Mode(row[2]).label}.")
    if status is None:
        raise NotARater("You are not in this study's rater pool.")
    if can_see_generations(user):  # made an admin after joining the pool
        raise NotARater("Admins can see which model wrote each output, so they cannot rate.")
    if status != Study.Status.RATING:
        raise StudyStateError("This study is not open for rating.")


def live_claims(now: datetime):
    """A live claim: claimed and its lease not over (ratings and pair judgments alike)."""
    return Q(status=Rating.Status.CLAIMED, expires_at__gt=now)


# The rater's next output. Prompts come in a per-rater random order, and within a prompt its
# outputs (every arm) in a per-rater random order: both keys hash server-side ids with a
# per-rater salt, so nothing in the order depends on the arm. The query is written out in
# SQL because it is the hot path of every claim: built through the ORM it cost more CPU
# than the rest of the request. It runs on PostgreSQL and SQLite alike, and reads what the
# task shows along with the lock (PostgreSQL returns a locked row's latest version).
_CANDIDATE_SQL = """
SELECT {columns},
  COALESCE((SELECT v.position FROM {version} v JOIN {frozen} f ON f.{frozen_version} = v.id
            WHERE f.{frozen_study} = o.study_id AND v.category_id = c.id), c.position)
FROM {output} o
JOIN {prompt} p ON p.id = o.prompt_id
JOIN {category} c ON c.id = p.category_id
WHERE o.study_id = %s AND o.screening = %s AND o.completed_count < o.quota{where}
  AND NOT EXISTS (SELECT 1 FROM {rating} r WHERE r.output_id = o.id AND r.rater_id = %s)
  AND o.completed_count + (
    SELECT COUNT(*) FROM {rating} live
    WHERE live.output_id = o.id AND live.status = %s AND live.expires_at > %s
  ) < o.quota
ORDER BY MD5(%s || CAST(o.prompt_id AS TEXT)), MD5(%s || o.public_id)
LIMIT 1{lock}
"""

# The columns it reads, per model and table alias: what the services and the task (API
# payload, rating page) use. Other fields load on access, as deferred fields do.
_TASK_FIELDS = (
    (
        StudyOutput,
        "o",
        {"id", "study", "prompt", "public_id", "text", "screening", "quota", "completed_count"},
    ),
    (Prompt, "p", {"id", "category", "text"}),
    (Category, "c", {"id", "name", "position"}),
)


# The study's frozen position versions (the Study.position_versions table), for the
# candidate query's position column.
_FROZEN_FIELD = Study._meta.get_field("position_versions")
_FROZEN_TABLES = {
    "version": PositionVersion._meta.db_table,
    "frozen": _FROZEN_FIELD.remote_field.through._meta.db_table,
    "frozen_study": _FROZEN_FIELD.m2m_column_name(),
    "frozen_version": _FROZEN_FIELD.m2m_reverse_name(),
}


def _task_columns() -> tuple[str, list[tuple[type, list[str]]]]:
    """The SELECT list for :data:`_TASK_FIELDS`, and per model the attribute names in the
    order ``Model.from_db`` wants them (its concrete fields' order)."""
    columns, layout = [], []
    for model, alias, names in _TASK_FIELDS:
        fields = [f for f in model._meta.concrete_fields if f.name in names]
        columns += [f"{alias}.{connection.ops.quote_name(f.column)}" for f in fields]
        layout.append((model, [f.attname for f in fields]))
    return ", ".join(columns), layout


def order_salt(study: Study, rater) -> str:
    return f"{study.order_salt}:{rater.pk}:"


def prompt_order(study: Study, rater) -> list[int]:
    """The study's prompts in this rater's order: the key :data:`_CANDIDATE_SQL` sorts by,
    computed here (hex digests compare alike in Python and in SQL)."""
    salt = order_salt(study, rater)
    return sorted(
        study.prompt_ids,
        key=lambda pk: hashlib.md5(f"{salt}{pk}".encode(), usedforsecurity=False).hexdigest(),
    )


def prompt_windows(order: list[int], start: int) -> Iterator[tuple[list[int], bool]]:
    """Where to look for the rater's next output, nearest first, so that a claim reads a
    prompt's outputs rather than the whole study's: the rater's prompt order from
    ``start`` (the prompt of their latest claim) to the end, then from the beginning, in
    windows of 1, 2, 4, … prompts. Yields ``(prompt ids, inside)``; the last window is
    "every prompt not looked at yet" (``inside`` false), which also finds an output whose
    prompt is missing from ``order``."""
    windows: list[list[int]] = []
    size = 1
    for segment in (order[start:], order[:start]):  # a window never spans the wrap
        while segment:
            windows.append(segment[:size])
            segment = segment[size:]
            size *= 2
    for window in windows[:-1]:
        yield window, True
    yield [pk for window in windows[:-1] for pk in window], False


def _first_candidate(
    study: Study,
    rater,
    now: datetime,
    prompts: list[int],
    *,
    inside: bool,
    skip: list[int],
    wait: bool,
) -> StudyOutput | None:
    """The rater's first output in ``prompts`` (or outside them) that still has room and
    that they have not had, locked, with its prompt and category; None if there is none."""
    where, where_params = "", []
    if prompts:
        marks = ", ".join(["%s"] * len(prompts))
        where += f"\n  AND o.prompt_id {'IN' if inside else 'NOT IN'} ({marks})"
        where_params += prompts
    if skip:
        where += f"\n  AND o.id NOT IN ({', '.join(['%s'] * len(skip))})"
        where_params += skip
    lock = ""
    if connection.features.has_select_for_update_skip_locked:
        lock = " FOR UPDATE OF o" if wait else " FOR UPDATE OF o SKIP LOCKED"
    # SQLite: BEGIN IMMEDIATE already made this transaction the only writer.
    columns, layout = _task_columns()
    sql = _CANDIDATE_SQL.format(
        columns=columns,
        output=StudyOutput._meta.db_table,
        prompt=Prompt._meta.db_table,
        category=Category._meta.db_table,
        rating=Rating._meta.db_table,
        where=where,
        lock=lock,
        **_FROZEN_TABLES,
    )
    salt = order_salt(study, rater)
    params = [
        study.pk,
        StudyOutput.Screening.ACTIVE.value,
        *where_params,
        rater.pk,
        Rating.Status.CLAIMED.value,
        connection.ops.adapt_datetimefield_value(now),
        salt,
        salt,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    values = iter(row)
    output, prompt, category = (
        model.from_db(connection.alias, attnames, [next(values) for _ in attnames])
        for model, attnames in layout
    )
    prompt.category = category
    output.prompt = prompt
    # The position frozen when the study opened (the live one if it froze none), read here
    # so that the task needs no query of its own (evaluation.studies.positions).
    output.task_position = next(values)
    return output


def _lock_next(
    study: Study,
    rater,
    now: datetime,
    skip: list[int],
    *,
    wait: bool = False,
    resume: int | None = None,
) -> StudyOutput | None:
    """Lock the rater's next candidate, walking :func:`prompt_windows` from prompt
    ``resume`` (the prompt of their latest claim; None: from the start). First pass
    (``wait=False``) skips rows other transactions hold; the second waits for them (they
    are short), so a rater is told "nothing left" only when nothing is."""
    order = prompt_order(study, rater)
    start = order.index(resume) if resume in order else 0
    for prompts, inside in prompt_windows(order, start):
        output = _first_candidate(study, rater, now, prompts, inside=inside, skip=skip, wait=wait)
        if output is not None:
            return output
    return None


def _open_slots(output: StudyOutput, now: datetime, *, besides: int | None = None) -> int:
    """Room left on an output this transaction has locked: quota − completed − live claims
    (other than ``besides``). ``completed_count`` comes from the locked row, which
    PostgreSQL hands back in its latest committed version; the claims are counted in a
    fresh statement, so both are current."""
    live = Rating.objects.filter(live_claims(now), output=output)
    if besides is not None:
        live = live.exclude(pk=besides)
    return output.quota - output.completed_count - live.count()


def current_claim(study: Study, rater, now: datetime | None = None) -> Rating | None:
    """The rater's live claim in this study, with what the rating page shows."""
    now = now or timezone.now()
    return (
        Rating.objects.filter(live_claims(now), study=study, rater=rater)
        .select_related("output__prompt__category", "study")
        .first()
    )


class Contended(Exception):
    """The candidate locked on the fast path filled up under us: retry the careful way."""


def claim_with_retries(
    claim: Callable[[bool], Claim | None], current: Callable[[], Claim | None]
) -> Claim | None:
    """Run ``claim(careful)`` in a transaction: first the fast way, then (after
    :class:`Contended`) the careful way; a unique-constraint refusal means the same rater
    claimed in another request a moment ago (double click, two tabs), so hand back
    ``current()``. Shared by the 1–5 queue and the pairwise queue."""
    careful = False
    for _ in range(3):
        try:
            with transaction.atomic():
                return claim(careful)
        except Contended:
            careful = True  # the rollback released the full candidate's lock
        except IntegrityError:
            held = current()
            if held is not None:
                return held
    return None


def rating_claim_next(*, study: Study, rater, now: datetime | None = None) -> Rating | None:
    """Give the rater their next output, leased for ``study.lease_minutes``; None when
    nothing is left for them. A rater with a live claim gets that claim back, so reloading
    the page never hands out a second output. Raters walk their own order: the next output
    is the first with room from the prompt of their latest claim on, wrapping round, so an
    output freed behind them (a lapsed lease, a skip) reaches them after the rest."""
    now = now or timezone.now()
    check_can_rate(study, rater)
    return claim_with_retries(
        lambda careful: _claim(study, rater, now, careful=careful),
        lambda: current_claim(study, rater, now),
    )


def _claim(study: Study, rater, now: datetime, *, careful: bool) -> Rating | None:
    # The rater's open claim if they hold one, else their latest rating in the study: its
    # prompt is where the search for their next output starts.
    mine = (
        Rating.objects.filter(study=study, rater=rater)
        .order_by(Case(When(status=Rating.Status.CLAIMED, then=0), default=1), "-pk")
        .values_list("pk", "status", "expires_at", "output__prompt_id", "output__screening")
        .first()
    )
    held, resume = None, None
    if mine is not None:
        pk, status, expires_at, resume, screening = mine
        if status == Rating.Status.CLAIMED:
            held = pk
        if held is not None and screening == StudyOutput.Screening.EXCLUDED:
            # An admin took the held output out of the study: drop the claim, move on.
            Rating.objects.filter(pk=held).update(status=Rating.Status.EXPIRED)
            held = None
        if held is not None and expires_at > now:
            rating = Rating.objects.select_related("output__prompt__category").get(pk=held)
            rating.study = study
            return rating
    output = _lock_free_output(study, rater, now, careful=careful, resume=resume)
    if output is None:
        return None
    if held is not None:
        # The lapsed claim stops counting as open before the new one (one open claim per
        # rater and study). After the output lock, so that every transaction takes its
        # locks in one order — output row, then rating rows — as submit and skip do.
        Rating.objects.filter(pk=held, status=Rating.Status.CLAIMED).update(
            status=Rating.Status.EXPIRED
        )
    rating = Rating.objects.create(
        study=study,
        output=output,
        rater=rater,
        status=Rating.Status.CLAIMED,
        claimed_at=now,
        expires_at=now + timedelta(minutes=study.lease_minutes),
    )
    rating.output = output
    return rating


def _lock_free_output(
    study: Study, rater, now: datetime, *, careful: bool, resume: int | None = None
) -> StudyOutput | None:
    """Lock the rater's next output that still has room, or return None."""
    return lock_with_room(
        lambda tried, wait: _lock_next(study, rater, now, tried, wait=wait, resume=resume),
        lambda output: _open_slots(output, now),
        careful=careful,
    )


def lock_with_room(
    lock_next: Callable[[list[int], bool], Item | None],
    open_slots: Callable[[Item], int],
    *,
    careful: bool,
) -> Item | None:
    """Lock the next item (``lock_next(tried ids, wait)``) that still has room, or None.

    SQLite: the transaction is the only writer, so the first candidate is the answer.
    PostgreSQL: first skip rows other claims hold; if that finds nothing, wait for them
    (they are short) so "nothing left" means nothing is left. A transaction must never
    wait while holding another item's lock (deadlock), so a candidate found full ends
    the fast path (:class:`Contended`, rolled back, retried); the careful path wraps each
    try in a savepoint whose rollback releases the full candidate's lock at once."""
    if not connection.features.has_select_for_update_skip_locked:
        return lock_next([], False)
    tried: list[int] = []
    for wait in (False, True):
        for _ in range(CLAIM_ATTEMPTS):
            savepoint = transaction.savepoint() if careful else None
            item = lock_next(tried, wait)
            if item is not None and open_slots(item) > 0:
                if savepoint:
                    transaction.savepoint_commit(savepoint)
                return item
            if item is not None and not careful:
                raise Contended()
            if savepoint:
                transaction.savepoint_rollback(savepoint)
            if item is None:
                break
            tried.append(item.pk)  # filled between our snapshot and our lock
    return None


# What submit, skip and flag read from the output they lock (see _check_rating_open).
_ANSWER_FIELDS = (
    "public_id",
    "screening",
    "flag_reasons",
    "quota",
    "completed_count",
    "study__status",
)


def _locked_rating(public_id: str, rater) -> tuple[StudyOutput, Rating]:
    """Lock the output (first, always: see the module docstring), then the rater's row.
    The output comes with the columns the answer needs, not the text."""
    try:
        output = (
            StudyOutput.objects.select_for_update(of=("self",))
            .select_related("study")
            .only(*_ANSWER_FIELDS)
            .get(public_id=public_id)
        )
    except StudyOutput.DoesNotExist:
        raise OutputNotFound("No such output.") from None
    try:
        rating = Rating.objects.select_for_update().get(output=output, rater=rater)
    except Rating.DoesNotExist:
        check_profile_rater(output.study_id, rater, "output")
        raise RatingError("You have not claimed this output.") from None
    rating.output = output
    return output, rating


def check_profile_rater(study_id: int, rater, noun: str) -> None:
    """An output or pair of another profile's study does not exist for this rater: 404, as
    for an unknown id, rather than "not claimed" (409), which would confirm that it exists."""
    profile_id = Study.objects.filter(pk=study_id).values_list("prompt_set__profile", flat=True)
    if not has_rater_role(rater, profile_id.first()):
        raise OutputNotFound(f"No such {noun}.")


def check_claim_finishable(claim, now, noun: str, slots_left: Callable[[], int]) -> None:
    """Whether a held claim (a 1–5 rating or a pairwise judgment) may still be answered: not
    once given up (skipped, flagged), and after its lease lapsed only while the item still
    has room (``slots_left``, counted only then)."""
    if claim.status in {claim.Status.SKIPPED, claim.Status.FLAGGED}:
        raise RatingError(f"You skipped or flagged this {noun}; it has gone to other raters.")
    if not claim.is_live(now) and slots_left() <= 0:
        raise RatingError(f"Your claim on this {noun} expired and other raters took it.")


def _check_rating_open(output: StudyOutput, rater) -> None:
    """The study (read with the locked output, so current) must still be rating. A claim
    the rater already holds may be answered even if an admin has since changed the pool."""
    if not has_rater_role(rater):
        raise NotARater("Only raters rate.")
    if output.study.status != Study.Status.RATING:
        raise StudyStateError("This study is not open for rating.")
    if output.screening == StudyOutput.Screening.EXCLUDED:
        raise RatingError("An admin took this output out of the study.")


@transaction.atomic
def rating_submit(
    *, public_id: str, rater, score: int, comment: str = "", now: datetime | None = None
) -> Rating:
    """Record the rater's score. A lapsed lease is still honoured while the output has room
    (nobody took the slot); otherwise the score is refused. Submitting the same score again
    returns the stored rating (a retried request is harmless)."""
    now = now or timezone.now()
    if score not in SCORES:
        raise RatingError("The score must be 1, 2, 3, 4 or 5.")
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT_CHARS:
        raise RatingError(f"Comments have at most {MAX_COMMENT_CHARS} characters.")
    output, rating = _locked_rating(public_id, rater)
    if rating.status == Rating.Status.COMPLETED:
        if rating.score == score:
            return rating
        raise RatingError("You already rated this output.")
    _check_rating_open(output, rater)
    check_claim_finishable(
        rating, now, "output", lambda: _open_slots(output, now, besides=rating.pk)
    )
    rating.status = Rating.Status.COMPLETED
    rating.score = score
    rating.comment = comment
    rating.completed_at = now
    rating.save(update_fields=["status", "score", "comment", "completed_at"])
    StudyOutput.objects.filter(pk=output.pk).update(completed_count=F("completed_count") + 1)
    return rating


def check_releasable(claim, noun: str) -> None:
    """A claim (a 1–5 rating or a pairwise judgment) may be skipped or flagged while it is
    held or lapsed, not once answered, skipped or flagged."""
    if claim.status not in {claim.Status.CLAIMED, claim.Status.EXPIRED}:
        raise RatingError(f"This {noun} is already {claim.get_status_display().lower()}.")


def hold_for_admin(output: StudyOutput, note: str) -> None:
    """Log a rater's flag on the output and hold it back from every rater until an admin
    clears or excludes it (the caller holds the output's row lock)."""
    output.flag_reasons = "\n".join(filter(None, [output.flag_reasons, note]))
    if output.screening == StudyOutput.Screening.ACTIVE:
        output.screening = StudyOutput.Screening.HELD
    output.save(update_fields=["flag_reasons", "screening"])


def _release(
    public_id: str, rater, now: datetime, *, status: str, reason: str = ""
) -> tuple[StudyOutput, Rating]:
    output, rating = _locked_rating(public_id, rater)
    check_releasable(rating, "output")
    _check_rating_open(output, rater)
    rating.status = status
    rating.flag_reason = reason
    rating.completed_at = now
    rating.save(update_fields=["status", "flag_reason", "completed_at"])
    return output, rating


@transaction.atomic
def rating_skip(*, public_id: str, rater, now: datetime | None = None) -> Rating:
    """Give the output back to the pool for other raters; this rater never gets it again."""
    _, rating = _release(public_id, rater, now or timezone.now(), status=Rating.Status.SKIPPED)
    return rating


@transaction.atomic
def rating_flag(*, public_id: str, rater, reason: str = "", now: datetime | None = None) -> Rating:
    """Report an output (it names a model, is broken, …): it leaves this rater's queue like
    a skip, and is held back from other raters until an admin clears or excludes it."""
    reason = (reason or "").strip()[:MAX_COMMENT_CHARS]
    output, rating = _release(
        public_id, rater, now or timezone.now(), status=Rating.Status.FLAGGED, reason=reason
    )
    hold_for_admin(output, f"Rater flag: {reason or '(no reason given)'}")
    return rating
