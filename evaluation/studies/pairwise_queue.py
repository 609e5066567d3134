"""The pairwise rating queue: make a study's pairs, claim the next pair, judge, skip, flag.

The same guarantees as the 1–5 queue (:mod:`evaluation.studies.queue`), from the same
parts: ``claim_with_retries`` (fast path, then careful path, then the rater's own claim
after a double click), ``lock_with_room`` (``SKIP LOCKED`` on PostgreSQL, savepoints so a
full candidate's lock is let go before waiting), and the rater's salted prompt order walked
in ``prompt_windows``. Lock order: the pair row, then judgment rows (then, for a flag, the
pair's output rows). The database backs the rules up with a unique (pair, rater), one open
claim per rater and study, and ``completed_count <= quota``.

A pair is in the pool while both its outputs are: an output held for review (it named a
model) or excluded by an admin takes its pairs with it.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from itertools import combinations

from django.db import connection, transaction
from django.db.models import Case, F, When
from django.utils import timezone

from evaluation.access import has_rater_role
from evaluation.errors import NotARater, OutputNotFound, RatingError, StudyStateError
from evaluation.models import (
    MAX_COMMENT_CHARS,
    PairJudgment,
    Study,
    StudyOutput,
    StudyPair,
)
from evaluation.studies.arm_pairs import compared_orders
from evaluation.studies.queue import (
    check_can_rate,
    check_claim_finishable,
    check_profile_rater,
    check_releasable,
    claim_with_retries,
    hold_for_admin,
    live_claims,
    lock_with_room,
    order_salt,
    prompt_order,
    prompt_windows,
)

PAIRWISE = Study.Mode.PAIRWISE


def pairs_create(*, study: Study, rng: random.Random | None = None) -> int:
    """Make every compared arm pair (all, or the study's chosen subset) of each prompt ×
    sample index from the study's outputs, with A and B drawn at random and stored.
    Idempotent (unique outputs per pair)."""
    rng = rng or random.SystemRandom()  # the order must not be guessable from anything
    chosen = compared_orders(study)
    slots: dict[tuple[int, int], list[StudyOutput]] = {}
    outputs = StudyOutput.objects.filter(study=study).select_related("arm")
    for output in outputs.order_by("arm__order", "arm_id", "pk"):
        slots.setdefault((output.prompt_id, output.sample_index), []).append(output)
    rows = []
    for (prompt_id, sample_index), outputs in sorted(slots.items()):
        for first, second in combinations(outputs, 2):
            if chosen is not None and (first.arm.order, second.arm.order) not in chosen:
                continue
            left, right = (first, second) if rng.random() < 0.5 else (second, first)
            rows.append(
                StudyPair(
                    study=study,
                    prompt_id=prompt_id,
                    sample_index=sample_index,
                    left=left,
                    right=right,
                    quota=study.raters_per_output,
                )
            )
    StudyPair.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


# The rater's next pair: the first with room, in their salted prompt order and then a salted
# order of the prompt's pairs, both keyed on server-side ids, so nothing depends on the arm.
_CANDIDATE_SQL = """
SELECT pr.id FROM {pair} pr
JOIN {output} l ON l.id = pr.left_id
JOIN {output} r ON r.id = pr.right_id
WHERE pr.study_id = %s AND l.screening = %s AND r.screening = %s
  AND pr.completed_count < pr.quota{where}
  AND NOT EXISTS (SELECT 1 FROM {judgment} j WHERE j.pair_id = pr.id AND j.rater_id = %s)
  AND pr.completed_count + (
    SELECT COUNT(*) FROM {judgment} live
    WHERE live.pair_id = pr.id AND live.status = %s AND live.expires_at > %s
  ) < pr.quota
ORDER BY MD5(%s || CAST(pr.prompt_id AS TEXT)), MD5(%s || pr.public_id)
LIMIT 1{lock}
"""


def _first_pair(
    study: Study, rater, now: datetime, prompts: list[int], *, inside: bool, skip, wait: bool
) -> StudyPair | None:
    where, where_params = "", []
    if prompts:
        marks = ", ".join(["%s"] * len(prompts))
        where += f"\n  AND pr.prompt_id {'IN' if inside else 'NOT IN'} ({marks})"
        where_params += prompts
    if skip:
        where += f"\n  AND pr.id NOT IN ({', '.join(['%s'] * len(skip))})"
        where_params += skip
    lock = ""
    if connection.features.has_select_for_update_skip_locked:
        lock = " FOR UPDATE OF pr" if wait else " FOR UPDATE OF pr SKIP LOCKED"
    sql = _CANDIDATE_SQL.format(
        pair=StudyPair._meta.db_table,
        output=StudyOutput._meta.db_table,
        judgment=PairJudgment._meta.db_table,
        where=where,
        lock=lock,
    )
    active = StudyOutput.Screening.ACTIVE.value
    salt = order_salt(study, rater)
    params = [study.pk, active, active, *where_params, rater.pk]
    params += [PairJudgment.Status.CLAIMED.value, connection.ops.adapt_datetimefield_value(now)]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, salt, salt])
        row = cursor.fetchone()
    return None if row is None else StudyPair.objects.get(pk=row[0])


def _lock_next_pair(study, rater, now, tried, wait, resume) -> StudyPair | None:
    order = prompt_order(study, rater)
    start = order.index(resume) if resume in order else 0
    for prompts, inside in prompt_windows(order, start):
        pair = _first_pair(study, rater, now, prompts, inside=inside, skip=tried, wait=wait)
        if pair is not None:
            return pair
    return None


def _open_slots(pair: StudyPair, now: datetime, *, besides: int | None = None) -> int:
    live = PairJudgment.objects.filter(live_claims(now), pair=pair)
    if besides is not None:
        live = live.exclude(pk=besides)
    return pair.quota - pair.completed_count - live.count()


def _with_task(judgment: PairJudgment) -> PairJudgment:
    """The judgment with what the task shows (prompt, category, both texts)."""
    return PairJudgment.objects.select_related(
        "study", "pair__prompt__category", "pair__left", "pair__right"
    ).get(pk=judgment.pk)


def current_judgment(study: Study, rater, now: datetime | None = None) -> PairJudgment | None:
    """The rater's live claim on a pair in this study, with what the task shows."""
    now = now or timezone.now()
    held = PairJudgment.objects.filter(live_claims(now), study=study, rater=rater).first()
    return _with_task(held) if held else None


def pair_claim_next(*, study: Study, rater, now: datetime | None = None) -> PairJudgment | None:
    """Give the rater their next pair, leased for ``study.lease_minutes``; None when nothing
    is left for them. A live claim comes back instead of a second one."""
    now = now or timezone.now()
    check_can_rate(study, rater, mode=PAIRWISE)
    return claim_with_retries(
        lambda careful: _claim(study, rater, now, careful=careful),
        lambda: current_judgment(study, rater, now),
    )


def _claim(study: Study, rater, now: datetime, *, careful: bool) -> PairJudgment | None:
    mine = (
        PairJudgment.objects.filter(study=study, rater=rater)
        .order_by(Case(When(status=PairJudgment.Status.CLAIMED, then=0), default=1), "-pk")
        .values_list(
            "pk", "status", "expires_at", "pair__prompt_id",
            "pair__left__screening", "pair__right__screening",
        )
        .first()
    )  # fmt: skip
    held, resume = None, None
    if mine is not None:
        pk, status, expires_at, resume, *screenings = mine
        held = pk if status == PairJudgment.Status.CLAIMED else None
        if held is not None and StudyOutput.Screening.EXCLUDED in screenings:
            # An admin took an output of the held pair out of the study: drop the claim.
            PairJudgment.objects.filter(pk=held).update(status=PairJudgment.Status.EXPIRED)
            held = None
        if held is not None and expires_at > now:
            return _with_task(PairJudgment(pk=held))
    pair = lock_with_room(
        lambda tried, wait: _lock_next_pair(study, rater, now, tried, wait, resume),
        lambda candidate: _open_slots(candidate, now),
        careful=careful,
    )
    if pair is None:
        return None
    if held is not None:  # after the pair lock: pair row, then judgment rows
        PairJudgment.objects.filter(pk=held, status=PairJudgment.Status.CLAIMED).update(
            status=PairJudgment.Status.EXPIRED
        )
    judgment = PairJudgment.objects.create(
        study=study,
        pair=pair,
        rater=rater,
        claimed_at=now,
        expires_at=now + timedelta(minutes=study.lease_minutes),
    )
    return _with_task(judgment)


def _locked_judgment(public_id: str, rater) -> tuple[StudyPair, PairJudgment]:
    """Lock the pair (first, always), then the rater's row."""
    try:
        pair = (
            StudyPair.objects.select_for_update(of=("self",))
            .select_related("study", "left", "right")
            .get(public_id=public_id)
        )
    except StudyPair.DoesNotExist:
        raise OutputNotFound("No such pair.") from None
    try:
        judgment = PairJudgment.objects.select_for_update().get(pair=pair, rater=rater)
    except PairJudgment.DoesNotExist:
        check_profile_rater(pair.study_id, rater, "pair")
        raise RatingError("You have not claimed this pair.") from None
    judgment.pair = pair
    return pair, judgment


def _check_open(pair: StudyPair, rater) -> None:
    if not has_rater_role(rater):
        raise NotARater("Only raters rate.")
    if pair.study.status != Study.Status.RATING:
        raise StudyStateError("This study is not open for rating.")
    if StudyOutput.Screening.EXCLUDED in {pair.left.screening, pair.right.screening}:
        raise RatingError("An admin took an output of this pair out of the study.")


@transaction.atomic
def pair_judge(
    *, public_id: str, rater, verdict: str, reason: str = "", now: datetime | None = None
) -> PairJudgment:
    """Record the rater's verdict (``a``, ``b``, ``tie`` or ``both_bad``). A lapsed lease is
    honoured while the pair has room; the same verdict again returns the stored row."""
    now = now or timezone.now()
    if verdict not in PairJudgment.Verdict.values:
        raise RatingError("The verdict must be a, b, tie or both_bad.")
    reason = (reason or "").strip()
    if len(reason) > MAX_COMMENT_CHARS:
        raise RatingError(f"Reasons have at most {MAX_COMMENT_CHARS} characters.")
    pair, judgment = _locked_judgment(public_id, rater)
    if judgment.status == PairJudgment.Status.COMPLETED:
        if judgment.verdict == verdict:
            return judgment
        raise RatingError("You already judged this pair.")
    _check_open(pair, rater)
    check_claim_finishable(
        judgment, now, "pair", lambda: _open_slots(pair, now, besides=judgment.pk)
    )
    judgment.status = PairJudgment.Status.COMPLETED
    judgment.verdict = verdict
    judgment.reason = reason
    judgment.completed_at = now
    judgment.save(update_fields=["status", "verdict", "reason", "completed_at"])
    StudyPair.objects.filter(pk=pair.pk).update(completed_count=F("completed_count") + 1)
    return judgment


def _release(public_id: str, rater, now: datetime, *, status: str, reason: str = ""):
    pair, judgment = _locked_judgment(public_id, rater)
    check_releasable(judgment, "pair")
    _check_open(pair, rater)
    judgment.status = status
    judgment.reason = reason
    judgment.completed_at = now
    judgment.save(update_fields=["status", "reason", "completed_at"])
    return pair, judgment


@transaction.atomic
def pair_skip(*, public_id: str, rater, now: datetime | None = None) -> PairJudgment:
    """Give the pair back to the pool; this rater never gets it again."""
    skipped = PairJudgment.Status.SKIPPED
    return _release(public_id, rater, now or timezone.now(), status=skipped)[1]


@transaction.atomic
def pair_flag(
    *, public_id: str, rater, reason: str = "", now: datetime | None = None
) -> PairJudgment:
    """Report the pair (an output names a model, is broken, …): both its outputs are held
    for an admin, which takes every pair they are in out of the pool until cleared."""
    reason = (reason or "").strip()[:MAX_COMMENT_CHARS]
    flagged = PairJudgment.Status.FLAGGED
    pair, judgment = _release(
        public_id, rater, now or timezone.now(), status=flagged, reason=reason
    )
    note = f"Rater flag (pairwise): {reason or '(no reason given)'}"
    outputs = StudyOutput.objects.select_for_update().filter(pk__in=[pair.left_id, pair.right_id])
    for output in outputs.order_by("pk"):
        hold_for_admin(output, note)
    return judgment
