"""Assignment rules on one thread: quotas, distinct raters, leases, skips, balance, order."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from evaluation import errors
from evaluation.models import Rating, StudyOutput
from evaluation.studies import lifecycle, queue
from tests.evaluation.conftest import build_study

pytestmark = pytest.mark.django_db


def rate_all(study, rater, score: int = 4, now=None) -> list[int]:
    """Claim and submit until nothing is left; the output ids in the order rated."""
    rated = []
    while (claim := queue.rating_claim_next(study=study, rater=rater, now=now)) is not None:
        rated.append(claim.output_id)
        queue.rating_submit(public_id=claim.output.public_id, rater=rater, score=score, now=now)
    return rated


def test_every_output_gets_exactly_its_quota_from_distinct_raters(no_queue):
    setup = build_study(raters=5, raters_per_output=3)
    for rater in setup.raters:
        rate_all(setup.study, rater)
    outputs = StudyOutput.objects.filter(study=setup.study)
    assert all(o.completed_count == 3 for o in outputs)
    counts = (
        Rating.objects.filter(study=setup.study, status="completed")
        .values("output")
        .annotate(n=Count("pk"), raters=Count("rater", distinct=True))
    )
    assert {(row["n"], row["raters"]) for row in counts} == {(3, 3)}
    assert len(counts) == outputs.count() == 12


def test_a_rater_never_gets_the_same_output_twice(rating_study):
    rater = rating_study.raters[0]
    rated = rate_all(rating_study.study, rater)
    assert len(rated) == len(set(rated)) == 12
    assert queue.rating_claim_next(study=rating_study.study, rater=rater) is None


def test_the_database_refuses_a_second_row_for_the_same_pair(rating_study):
    rater = rating_study.raters[0]
    claim = queue.rating_claim_next(study=rating_study.study, rater=rater)
    with pytest.raises(IntegrityError), transaction.atomic():
        Rating.objects.create(
            study=rating_study.study,
            output=claim.output,
            rater=rater,
            status="skipped",
            expires_at=timezone.now(),
        )


def test_the_database_refuses_more_completed_ratings_than_the_quota(rating_study):
    output = rating_study.study.outputs.first()
    with pytest.raises(IntegrityError), transaction.atomic():
        StudyOutput.objects.filter(pk=output.pk).update(completed_count=output.quota + 1)


def test_a_rater_holds_one_claim_at_a_time_and_gets_it_back(rating_study):
    study, rater = rating_study.study, rating_study.raters[0]
    first = queue.rating_claim_next(study=study, rater=rater)
    again = queue.rating_claim_next(study=study, rater=rater)
    assert first.pk == again.pk
    assert Rating.objects.filter(rater=rater, status="claimed").count() == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        other = study.outputs.exclude(pk=first.output_id).first()
        Rating.objects.create(
            study=study,
            output=other,
            rater=rater,
            status="claimed",
            expires_at=timezone.now() + timedelta(minutes=5),
        )


def test_an_expired_lease_returns_the_output_to_the_pool(no_queue):
    setup = build_study(
        raters=2, raters_per_output=1, n_categories=1, per_category=1, arms=("base",)
    )
    study, (ann, bob) = setup.study, setup.raters
    t0 = timezone.now()
    claim = queue.rating_claim_next(study=study, rater=ann, now=t0)
    assert queue.rating_claim_next(study=study, rater=bob, now=t0) is None
    later = t0 + timedelta(minutes=study.lease_minutes, seconds=1)
    taken = queue.rating_claim_next(study=study, rater=bob, now=later)
    assert taken.output_id == claim.output_id
    # Ann comes back late: her slot went to Bob, so her score is refused, and she is not
    # handed the output again either.
    with pytest.raises(errors.RatingError, match="expired"):
        queue.rating_submit(public_id=claim.output.public_id, rater=ann, score=5, now=later)
    assert queue.rating_claim_next(study=study, rater=ann, now=later) is None
    queue.rating_submit(public_id=taken.output.public_id, rater=bob, score=2, now=later)
    assert StudyOutput.objects.get(pk=claim.output_id).completed_count == 1


def test_a_late_submit_is_kept_while_nobody_took_the_slot(no_queue):
    setup = build_study(
        raters=2, raters_per_output=1, n_categories=1, per_category=1, arms=("base",)
    )
    study, ann = setup.study, setup.raters[0]
    t0 = timezone.now()
    claim = queue.rating_claim_next(study=study, rater=ann, now=t0)
    late = t0 + timedelta(minutes=study.lease_minutes * 3)
    rating = queue.rating_submit(public_id=claim.output.public_id, rater=ann, score=4, now=late)
    assert rating.status == "completed" and rating.score == 4


def test_leases_can_be_expired_by_moving_expires_at(rating_study):
    """Time travel the other way round: the lease in the database runs out."""
    study, (ann, bob, _) = rating_study.study, rating_study.raters
    claim = queue.rating_claim_next(study=study, rater=ann)
    Rating.objects.filter(pk=claim.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    bob_claim = queue.rating_claim_next(study=study, rater=bob)
    assert bob_claim is not None
    fresh = queue.rating_claim_next(study=study, rater=ann)
    assert fresh.output_id != claim.output_id
    claim.refresh_from_db()
    assert claim.status == Rating.Status.EXPIRED


def test_skipping_returns_the_output_to_others_but_not_to_the_skipper(no_queue):
    setup = build_study(
        raters=2, raters_per_output=1, n_categories=1, per_category=1, arms=("base",)
    )
    study, (ann, bob) = setup.study, setup.raters
    claim = queue.rating_claim_next(study=study, rater=ann)
    queue.rating_skip(public_id=claim.output.public_id, rater=ann)
    assert queue.rating_claim_next(study=study, rater=ann) is None
    assert queue.rating_claim_next(study=study, rater=bob).output_id == claim.output_id
    with pytest.raises(errors.RatingError, match="skipped"):
        queue.rating_submit(public_id=claim.output.public_id, rater=ann, score=3)


def test_flagging_holds_the_output_for_an_admin(rating_study):
    study, (ann, bob, _) = rating_study.study, rating_study.raters
    claim = queue.rating_claim_next(study=study, rater=ann)
    queue.rating_flag(public_id=claim.output.public_id, rater=ann, reason="says GPT")
    output = StudyOutput.objects.get(pk=claim.output_id)
    assert output.screening == StudyOutput.Screening.HELD
    assert "Rater flag: says GPT" in output.flag_reasons
    assert claim.output_id not in rate_all(study, bob)


def test_an_output_excluded_while_claimed_gives_way_to_the_next(rating_study):
    study, ann = rating_study.study, rating_study.raters[0]
    claim = queue.rating_claim_next(study=study, rater=ann)
    lifecycle.output_exclude(output=claim.output, user=rating_study.admin, reason="leak")
    with pytest.raises(errors.RatingError, match="took this output out"):
        queue.rating_submit(public_id=claim.output.public_id, rater=ann, score=3)
    following = queue.rating_claim_next(study=study, rater=ann)
    assert following.output_id != claim.output_id
    assert Rating.objects.get(pk=claim.pk).status == Rating.Status.EXPIRED


def test_submitting_twice_is_harmless_but_changing_the_score_is_refused(rating_study):
    study, ann = rating_study.study, rating_study.raters[0]
    claim = queue.rating_claim_next(study=study, rater=ann)
    public_id = claim.output.public_id
    queue.rating_submit(public_id=public_id, rater=ann, score=4)
    queue.rating_submit(public_id=public_id, rater=ann, score=4)
    with pytest.raises(errors.RatingError, match="already rated"):
        queue.rating_submit(public_id=public_id, rater=ann, score=2)
    assert StudyOutput.objects.get(pk=claim.output_id).completed_count == 1


def test_bad_scores_and_unclaimed_outputs_are_refused(rating_study):
    study, (ann, bob, _) = rating_study.study, rating_study.raters
    claim = queue.rating_claim_next(study=study, rater=ann)
    for score in (0, 6, None):
        with pytest.raises(errors.RatingError, match="1, 2, 3, 4 or 5"):
            queue.rating_submit(public_id=claim.output.public_id, rater=ann, score=score)
    with pytest.raises(errors.RatingError, match="not claimed"):
        queue.rating_submit(public_id=claim.output.public_id, rater=bob, score=3)
    with pytest.raises(errors.OutputNotFound):
        queue.rating_submit(public_id="nope", rater=ann, score=3)
    assert not Rating.objects.filter(status="completed").exists()


def test_a_rater_sees_all_arms_of_a_prompt_together_in_a_personal_order(no_queue):
    setup = build_study(raters=2, raters_per_output=2, n_categories=3, per_category=2)
    study = setup.study
    orders = []
    for rater in setup.raters:
        rated = rate_all(study, rater)
        outputs = StudyOutput.objects.in_bulk(rated)
        prompts = [outputs[pk].prompt_id for pk in rated]
        # Six prompts × three arms: each run of three consecutive outputs is one prompt
        # and covers every arm.
        for start in range(0, len(rated), 3):
            block = [outputs[pk] for pk in rated[start : start + 3]]
            assert len({o.prompt_id for o in block}) == 1
            assert {o.arm.arm for o in block} == {"base", "control", "values_targeted"}
        orders.append((prompts, [outputs[pk].arm.arm for pk in rated]))
    assert orders[0] != orders[1]  # 6! × 6^6 orders: equal only by a freak of chance


def test_the_order_does_not_follow_the_arm(no_queue):
    """Across raters, each arm comes first in a prompt's block about equally often."""
    setup = build_study(
        raters=30, raters_per_output=30, n_categories=1, per_category=1, rater_prefix="r"
    )
    firsts = {}
    for rater in setup.raters:
        claim = queue.rating_claim_next(study=setup.study, rater=rater)
        firsts[claim.output.arm.arm] = firsts.get(claim.output.arm.arm, 0) + 1
    assert set(firsts) == {"base", "control", "values_targeted"}
    assert max(firsts.values()) < 25


def test_the_claim_order_follows_the_raters_prompt_order(no_queue):
    """The order computed in Python (where a claim starts looking) is the order the
    candidate query sorts by."""
    setup = build_study(raters=2, raters_per_output=1, n_categories=3, per_category=2)
    study, rater = setup.study, setup.raters[0]
    rated = rate_all(study, rater)
    prompts = [StudyOutput.objects.get(pk=pk).prompt_id for pk in rated]
    assert list(dict.fromkeys(prompts)) == queue.prompt_order(study, rater)


def windows(order, start):
    return list(queue.prompt_windows(order, start))


@pytest.mark.parametrize(
    ("start", "sizes"),
    # Windows double, but stop at the end of the order (a window never spans the wrap).
    [(0, [1, 2, 4]), (1, [1, 2, 4, 2]), (4, [1, 2, 3]), (9, [1, 2, 4])],
)
def test_a_claim_looks_from_the_resume_prompt_in_doubling_windows(start, sizes):
    order = list(range(100, 110))
    found = windows(order, start)
    *inside, (last, last_inside) = found
    assert all(flag for _, flag in inside) and not last_inside
    looked = [pk for window, _ in inside for pk in window]
    assert looked == last  # the last window is "everything not looked at yet"
    rotated = order[start:] + order[:start]
    assert looked == rotated[: len(looked)]
    assert [len(window) for window, _ in inside] == sizes
    # No window holds prompts from both sides of the wrap (the SQL sorts inside a window
    # by the rater's global order).
    for window, _ in inside:
        assert window == sorted(window, key=order.index)


def test_a_claim_without_prompt_order_looks_everywhere():
    assert windows([], 0) == [([], False)]
    assert windows([7], 0) == [([], False)]


def test_a_rater_resumes_at_their_latest_prompt_and_wraps_round_for_freed_outputs(no_queue):
    """A claim starts at the prompt of the rater's latest claim. An output that frees up
    behind them (a lapsed lease) is theirs once they have gone round; "nothing left" comes
    only when nothing is."""
    setup = build_study(
        raters=2, raters_per_output=1, n_categories=1, per_category=3, arms=("base",)
    )
    study, (ann, bob) = setup.study, setup.raters
    by_prompt = {o.prompt_id: o for o in study.outputs.all()}
    first, second, third = (by_prompt[pk] for pk in queue.prompt_order(study, ann))
    t0 = timezone.now()
    Rating.objects.create(
        study=study,
        output=first,
        rater=bob,
        status=Rating.Status.CLAIMED,
        claimed_at=t0,
        expires_at=t0 + timedelta(minutes=1),
    )
    assert queue.rating_claim_next(study=study, rater=ann, now=t0).output_id == second.pk
    queue.rating_submit(public_id=second.public_id, rater=ann, score=3, now=t0)
    later = t0 + timedelta(minutes=2)  # Bob's lease on the first output has lapsed
    assert queue.rating_claim_next(study=study, rater=ann, now=later).output_id == third.pk
    queue.rating_submit(public_id=third.public_id, rater=ann, score=3, now=later)
    assert queue.rating_claim_next(study=study, rater=ann, now=later).output_id == first.pk
    queue.rating_submit(public_id=first.public_id, rater=ann, score=3, now=later)
    assert queue.rating_claim_next(study=study, rater=ann, now=later) is None


def test_a_claim_reads_the_prompt_it_resumes_from_first(rating_study, monkeypatch):
    study, ann = rating_study.study, rating_study.raters[0]
    first = queue.rating_claim_next(study=study, rater=ann)
    queue.rating_submit(public_id=first.output.public_id, rater=ann, score=3)
    looked = []
    real = queue._first_candidate

    def spy(study, rater, now, prompts, **kwargs):
        looked.append((list(prompts), kwargs["inside"]))
        return real(study, rater, now, prompts, **kwargs)

    monkeypatch.setattr(queue, "_first_candidate", spy)
    claim = queue.rating_claim_next(study=study, rater=ann)
    assert looked == [([first.output.prompt_id], True)]
    assert claim.output.prompt_id == first.output.prompt_id  # the rest of that prompt


def test_a_claim_hands_over_the_task_without_further_queries(rating_study):
    """The claim reads the output's text, prompt and category along with its lock; the
    rest of the output loads on access like a deferred field."""
    claim = queue.rating_claim_next(study=rating_study.study, rater=rating_study.raters[0])
    output = StudyOutput.objects.select_related("prompt__category").get(pk=claim.output_id)
    with CaptureQueriesContext(connection) as queries:
        task = (
            claim.output.public_id,
            claim.output.text,
            claim.output.prompt.text,
            claim.output.prompt.category.name,
            claim.output.prompt.category.position,
        )
    assert not queries.captured_queries
    assert task == (
        output.public_id,
        output.text,
        output.prompt.text,
        output.prompt.category.name,
        output.prompt.category.position,
    )
    assert claim.output.arm_id == output.arm_id  # deferred, loaded on access


def test_claims_outside_the_pool_or_after_closing_are_refused(rating_study, rater):
    with pytest.raises(errors.NotARater):
        queue.rating_claim_next(study=rating_study.study, rater=rater)
    with pytest.raises(errors.NotARater):
        queue.rating_claim_next(study=rating_study.study, rater=rating_study.admin)
