"""Many raters at once, on real threads with their own connections and transactions.

On PostgreSQL this exercises ``SELECT … FOR UPDATE SKIP LOCKED``; on SQLite the fallback
(``BEGIN IMMEDIATE`` serialising writers). The invariants are the same on both: no output
over its quota, no (output, rater) pair twice, every accepted submit stored, leases that
lapse go back to the pool, skips go to others.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.db.models import Count
from django.utils import timezone

from evaluation.models import Rating, StudyOutput
from evaluation.studies import queue
from tests.evaluation.conftest import build_study

on_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks exist only on PostgreSQL"
)
pytestmark = pytest.mark.django_db(transaction=True)


def run_threads(target, items, *, timeout: float = 120) -> list:
    """Run ``target(item)`` on one thread per item, released together; results or errors."""
    barrier = threading.Barrier(len(items))
    results: list = [None] * len(items)

    def run(index: int, item) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = target(item)
        except Exception as exc:  # noqa: BLE001 - the test inspects whatever happened
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, item)) for i, item in enumerate(items)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads)
    return results


def check_invariants(study) -> None:
    quota = study.raters_per_output
    outputs = list(StudyOutput.objects.filter(study=study))
    completed = dict(
        Rating.objects.filter(study=study, status="completed")
        .values("output")
        .annotate(n=Count("pk"))
        .values_list("output", "n")
    )
    for output in outputs:
        assert output.completed_count == completed.get(output.pk, 0) <= quota
    pairs = (
        Rating.objects.filter(study=study)
        .values("output", "rater")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
    )
    assert not pairs.exists()


def others_in_flight(study, rater) -> bool:
    return (
        Rating.objects.filter(study=study, status="claimed", expires_at__gt=timezone.now())
        .exclude(rater=rater)
        .exists()
    )


def rater_loop(study, rater, *, skip_every: int = 0, seed: int = 0) -> dict:
    """Claim and answer until nothing is left. "Nothing for you right now" while other
    raters hold or take claims means "check again" (they may skip), as on the rating page."""
    rng = random.Random(seed)
    done = {"submitted": [], "skipped": [], "seen": []}
    while True:
        # "Nothing left" holds only if nobody held a claim when the search began and nobody
        # claimed anything while it ran: a claim taken and skipped inside the search window
        # would otherwise free an output this rater never saw after they had stopped.
        quiet_before = not others_in_flight(study, rater)
        ratings_before = Rating.objects.filter(study=study).count()
        claim = queue.rating_claim_next(study=study, rater=rater)
        if claim is None:
            if quiet_before and Rating.objects.filter(study=study).count() == ratings_before:
                return done
            time.sleep(0.01)
            continue
        public_id = claim.output.public_id
        assert public_id not in done["seen"], "a rater was given the same output twice"
        done["seen"].append(public_id)
        if skip_every and rng.randrange(skip_every) == 0:
            queue.rating_skip(public_id=public_id, rater=rater)
            done["skipped"].append(public_id)
        else:
            queue.rating_submit(public_id=public_id, rater=rater, score=rng.randint(1, 5))
            done["submitted"].append(public_id)


@pytest.mark.parametrize("skip_every", [0, 4])
def test_many_raters_at_once_fill_every_quota_exactly(no_queue, skip_every):
    setup = build_study(raters=10, raters_per_output=3, n_categories=2, per_category=3)
    study = setup.study
    results = run_threads(
        lambda pair: rater_loop(study, pair[1], skip_every=skip_every, seed=pair[0]),
        list(enumerate(setup.raters)),
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    check_invariants(study)
    # No lost rating: every submit that returned is in the database.
    submitted = {
        (r.username, pid)
        for r, done in zip(setup.raters, results, strict=True)
        for pid in done["submitted"]
    }
    stored = set(
        Rating.objects.filter(study=study, status="completed").values_list(
            "rater__username", "output__public_id"
        )
    )
    assert submitted == stored
    # Everyone stopped because nothing was left: every output either has its quota or was
    # seen by the whole pool.
    pool = len(setup.raters)
    for output in StudyOutput.objects.filter(study=study):
        seen_by = Rating.objects.filter(output=output).count()
        assert output.completed_count == 3 or seen_by == pool
    if not skip_every:
        assert all(o.completed_count == 3 for o in StudyOutput.objects.filter(study=study))


def test_raters_crowding_one_prompt_pass_each_other_and_fill_it_exactly(no_queue):
    """Every rater's search starts at the same (only) prompt, so their claims compete for
    the same few rows: they must pass each other's locks, not wait or double up."""
    setup = build_study(raters=8, raters_per_output=3, samples=4, n_categories=1, per_category=1)
    study = setup.study
    results = run_threads(
        lambda pair: rater_loop(study, pair[1], seed=pair[0]), list(enumerate(setup.raters))
    )
    assert not [r for r in results if isinstance(r, BaseException)], results
    check_invariants(study)
    assert all(o.completed_count == 3 for o in StudyOutput.objects.filter(study=study))
    assert sum(len(done["submitted"]) for done in results) == 12 * 3


def test_raters_racing_for_the_last_slot_get_it_once(no_queue):
    setup = build_study(
        raters=12, raters_per_output=1, n_categories=1, per_category=1, arms=("base",)
    )
    study = setup.study

    def claim_and_submit(rater):
        claim = queue.rating_claim_next(study=study, rater=rater)
        if claim is None:
            return None
        return queue.rating_submit(public_id=claim.output.public_id, rater=rater, score=3)

    results = run_threads(claim_and_submit, setup.raters)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert len([r for r in results if r is not None]) == 1
    check_invariants(study)
    assert StudyOutput.objects.get(study=study).completed_count == 1


def test_a_lapsed_lease_goes_to_exactly_one_of_many_racing_raters(no_queue):
    setup = build_study(
        raters=9, raters_per_output=1, n_categories=1, per_category=1, arms=("base",)
    )
    study, first, rest = setup.study, setup.raters[0], setup.raters[1:]
    t0 = timezone.now()
    original = queue.rating_claim_next(study=study, rater=first, now=t0)
    later = t0 + timedelta(minutes=study.lease_minutes + 1)
    results = run_threads(
        lambda r: queue.rating_claim_next(study=study, rater=r, now=later), rest
    )
    assert not [r for r in results if isinstance(r, BaseException)], results
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0].output_id == original.output_id
    live = Rating.objects.filter(study=study, status="claimed", expires_at__gt=later)
    assert live.count() == 1


def test_skips_under_load_go_to_other_raters_and_never_back(no_queue):
    setup = build_study(raters=6, raters_per_output=2, n_categories=1, per_category=2)
    study = setup.study
    skipper, others = setup.raters[0], setup.raters[1:]

    def skip_all(rater):
        skipped = []
        while (claim := queue.rating_claim_next(study=study, rater=rater)) is not None:
            queue.rating_skip(public_id=claim.output.public_id, rater=rater)
            skipped.append(claim.output_id)
        return skipped

    results = run_threads(
        lambda r: skip_all(r) if r == skipper else rater_loop(study, r),
        [skipper, *others],
    )
    assert not [r for r in results if isinstance(r, BaseException)], results
    check_invariants(study)
    assert all(o.completed_count == 2 for o in StudyOutput.objects.filter(study=study))
    assert not Rating.objects.filter(rater=skipper, status="completed").exists()


@on_postgres
def test_skip_locked_lets_a_second_rater_past_an_open_claim_transaction(no_queue):
    """While one claim transaction still holds its output's row lock, another rater's claim
    neither waits for it nor takes the same output."""
    setup = build_study(raters=3, raters_per_output=1, n_categories=1, per_category=2)
    study, (ann, bob, _) = setup.study, setup.raters
    holding, release = threading.Event(), threading.Event()
    outcome: dict = {}

    def slow_claim(_):
        with transaction.atomic():
            outcome["ann"] = queue.rating_claim_next(study=study, rater=ann)
            holding.set()
            release.wait(timeout=30)

    def quick_claim(_):
        holding.wait(timeout=30)
        started = time.monotonic()
        outcome["bob"] = queue.rating_claim_next(study=study, rater=bob)
        outcome["bob_seconds"] = time.monotonic() - started
        release.set()

    results = run_threads(lambda f: f(None), [slow_claim, quick_claim])
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert outcome["bob"].output_id != outcome["ann"].output_id
    assert outcome["bob_seconds"] < 2
    check_invariants(study)


@on_postgres
def test_a_candidate_that_fills_up_under_the_claim_is_passed_over(no_queue, monkeypatch):
    """The fast path hits a full candidate, rolls back and retries carefully, where the
    full candidate's lock is released at once and the next one is taken."""
    setup = build_study(raters=3, raters_per_output=1, n_categories=1, per_category=2)
    study, ann = setup.study, setup.raters[0]
    real_open_slots = queue._open_slots
    calls = []

    def open_slots(output, now, **kwargs):
        calls.append(output.pk)
        return 0 if len(calls) <= 2 else real_open_slots(output, now, **kwargs)

    monkeypatch.setattr(queue, "_open_slots", open_slots)
    claim = queue.rating_claim_next(study=study, rater=ann)
    assert calls[0] == calls[1] != calls[2]  # fast path, careful retry, next candidate
    assert claim.output_id == calls[2]
    check_invariants(study)
