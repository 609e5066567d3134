"""Many raters judging pairs at once, on real threads with their own connections. On
PostgreSQL this runs the shared claim parts of the 1–5 queue (``SKIP LOCKED`` fast path,
savepoint careful path) over pairs; on SQLite, ``BEGIN IMMEDIATE``. Invariants: no pair
over its quota, no (pair, rater) twice, every pair filled by exactly N distinct raters."""

from __future__ import annotations

import random
import time

import pytest
from django.db.models import Count
from django.utils import timezone

from evaluation.models import PairJudgment, StudyPair
from evaluation.studies import pairwise_queue
from tests.evaluation.conftest import build_study
from tests.evaluation.test_concurrency import run_threads

pytestmark = pytest.mark.django_db(transaction=True)


def others_in_flight(study, rater) -> bool:
    live = PairJudgment.objects.filter(study=study, status="claimed", expires_at__gt=timezone.now())
    return live.exclude(rater=rater).exists()


def judge_loop(study, rater, seed: int) -> int:
    rng = random.Random(seed)
    judged, seen = 0, set()
    rows = PairJudgment.objects.filter(study=study)
    while True:
        # "Nothing left" holds only if nobody else held a claim before and after the search
        # and nobody claimed meanwhile: a claim another rater still holds may be skipped.
        rows_before = rows.count()
        quiet_before = not others_in_flight(study, rater)
        claim = pairwise_queue.pair_claim_next(study=study, rater=rater)
        if claim is None:
            quiet_after = not others_in_flight(study, rater)
            if quiet_before and quiet_after and rows.count() == rows_before:
                return judged
            time.sleep(0.01)
            continue
        public_id = claim.pair.public_id
        assert public_id not in seen, "a rater was given the same pair twice"
        seen.add(public_id)
        if rng.randrange(5) == 0:
            pairwise_queue.pair_skip(public_id=public_id, rater=rater)
        else:
            verdict = rng.choice(["a", "b", "tie", "both_bad"])
            pairwise_queue.pair_judge(public_id=public_id, rater=rater, verdict=verdict)
            judged += 1


def test_many_raters_at_once_fill_every_pair_exactly(no_queue):
    setup = build_study(raters=8, raters_per_output=3, n_categories=2, per_category=2,
                        mode="pairwise")  # fmt: skip
    study = setup.study
    results = run_threads(
        lambda item: judge_loop(study, item[1], seed=item[0]), list(enumerate(setup.raters))
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    completed = dict(
        PairJudgment.objects.filter(study=study, status="completed")
        .values("pair")
        .annotate(n=Count("rater", distinct=True))
        .values_list("pair", "n")
    )
    pairs = list(StudyPair.objects.filter(study=study))
    assert len(pairs) == 12
    for pair in pairs:
        # Full, unless so many raters skipped it that fewer than 3 could still judge it.
        skipped = pair.judgments.filter(status="skipped").count()
        assert pair.completed_count == completed.get(pair.pk, 0) == min(3, 8 - skipped)
    assert sum(results) == sum(pair.completed_count for pair in pairs)
