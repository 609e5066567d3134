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


def judge_loop(study, rater, seed: int) -> int:
    rng = random.Random(seed)
    judged, seen = 0, set()
    while True:
        others = PairJudgment.objects.filter(
            study=study, status="claimed", expires_at__gt=timezone.now()
        ).exclude(rater=rater)
        quiet_before = not others.exists()
        rows_before = PairJudgment.objects.filter(study=study).count()
        claim = pairwise_queue.pair_claim_next(study=study, rater=rater)
        if claim is None:
            if quiet_before and PairJudgment.objects.filter(study=study).count() == rows_before:
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
        assert pair.completed_count == completed[pair.pk] == 3
    assert sum(results) == 12 * 3
