"""Assignment rules on one thread: quotas, distinct raters, leases, skips, balance, order."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from evaluation import services
from evaluation.models import Rating, StudyOutput
from tests.evaluation.conftest import build_study

pytestmark = pytest.mark.django_db


def rate_all(study, rater, score: int = 4, now=None) -> list[int]:
    """Claim and submit until nothing is left; the output ids in the order rated."""
    rated = []
    while (claim := services.rating_claim_next(study=study, rater=rater, now=now)) is not None:
        rated.append(claim.output_id)
        services.rating_submit(public_id=claim.output.public_id, rater=rater, score=score, now=now)
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
    assert services.rating_claim_next(study=rating_study.study, rater=rater) is None


def test_the_database_refuses_a_second_row_for_the_same_pair(rating_study):
    rater = rating_study.raters[0]
    claim = services.rating_claim_next(study=rating_study.study, rater=rater)
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
    first = services.rating_claim_next(study=study, rater=rater)
    again = services.rating_claim_next(study=study, rater=rater)
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
    claim = services.rating_claim_next(study=study, rater=ann, now=t0)
    assert services.rating_claim_next(study=study, rater=bob, now=t0) is None
    later = t0 + timedelta(minutes=study.lease_minutes, seconds=1)
    taken = services.rating_claim_next(study=study, rater=bob, now=later)
    assert taken.output_id == claim.output_id
    # Ann comes back late: her slot went to Bob, so her score is refused, and she is not
    # handed the output again either.
    with pytest.raises(services.RatingError, match="expired"):
        services.rating_submit(public_id=claim.output.public_id, rater=ann, score=5, now=later)
    assert services.rating_claim_next(study=study, rater=ann, now=later) is None
    services.rating_submit(public_id=taken.output.public_id, rater=bob, score=2, now=later)
    assert StudyOutput.objects.get(pk=claim.output_id).completed_count == 1


def test_a_late_submit_is_kept_while_nobody_took_the_slot(no_queue):
    setup = build_study(
        raters=2, raters_per_output=1, n_categories=1, per_category=1, arms=("base",)
    )
    study, ann = setup.study, setup.raters[0]
    t0 = timezone.now()
    claim = services.rating_claim_next(study=study, rater=ann, now=t0)
    late = t0 + timedelta(minutes=study.lease_minutes * 3)
    rating = services.rating_submit(public_id=claim.output.public_id, rater=ann, score=4, now=late)
    assert rating.status == "completed" and rating.score == 4


def test_leases_can_be_expired_by_moving_expires_at(rating_study):
    """Time travel the other way round: the lease in the database runs out."""
    study, (ann, bob, _) = rating_study.study, rating_study.raters
    claim = services.rating_claim_next(study=study, rater=ann)
    Rating.objects.filter(pk=claim.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    bob_claim = services.rating_claim_next(study=study, rater=bob)
    assert bob_claim is not None
    fresh = services.rating_claim_next(study=study, rater=ann)
    assert fresh.output_id != claim.output_id
    claim.refresh_from_db()
    assert claim.status == Rating.Status.EXPIRED


def test_skipping_returns_the_output_to_others_but_not_to_the_skipper(no_queue):
    setup = build_study(
        raters=2, raters_per_output=1, n_categories=1, per_category=1, arms=("base",)
    )
    study, (ann, bob) = setup.study, setup.raters
    claim = services.rating_claim_next(study=study, rater=ann)
    services.rating_skip(public_id=claim.output.public_id, rater=ann)
    assert services.rating_claim_next(study=study, rater=ann) is None
    assert services.rating_claim_next(study=study, rater=bob).output_id == claim.output_id
    with pytest.raises(services.RatingError, match="skipped"):
        services.rating_submit(public_id=claim.output.public_id, rater=ann, score=3)


def test_flagging_holds_the_output_for_an_admin(rating_study):
    study, (ann, bob, _) = rating_study.study, rating_study.raters
    claim = services.rating_claim_next(study=study, rater=ann)
    services.rating_flag(public_id=claim.output.public_id, rater=ann, reason="says GPT")
    output = StudyOutput.objects.get(pk=claim.output_id)
    assert output.screening == StudyOutput.Screening.HELD
    assert "Rater flag: says GPT" in output.flag_reasons
    assert claim.output_id not in rate_all(study, bob)


def test_an_output_excluded_while_claimed_gives_way_to_the_next(rating_study):
    study, ann = rating_study.study, rating_study.raters[0]
    claim = services.rating_claim_next(study=study, rater=ann)
    services.output_exclude(output=claim.output, user=rating_study.admin, reason="leak")
    with pytest.raises(services.RatingError, match="took this output out"):
        services.rating_submit(public_id=claim.output.public_id, rater=ann, score=3)
    following = services.rating_claim_next(study=study, rater=ann)
    assert following.output_id != claim.output_id
    assert Rating.objects.get(pk=claim.pk).status == Rating.Status.EXPIRED


def test_submitting_twice_is_harmless_but_changing_the_score_is_refused(rating_study):
    study, ann = rating_study.study, rating_study.raters[0]
    claim = services.rating_claim_next(study=study, rater=ann)
    public_id = claim.output.public_id
    services.rating_submit(public_id=public_id, rater=ann, score=4)
    services.rating_submit(public_id=public_id, rater=ann, score=4)
    with pytest.raises(services.RatingError, match="already rated"):
        services.rating_submit(public_id=public_id, rater=ann, score=2)
    assert StudyOutput.objects.get(pk=claim.output_id).completed_count == 1


def test_bad_scores_and_unclaimed_outputs_are_refused(rating_study):
    study, (ann, bob, _) = rating_study.study, rating_study.raters
    claim = services.rating_claim_next(study=study, rater=ann)
    for score in (0, 6, None):
        with pytest.raises(services.RatingError, match="1, 2, 3, 4 or 5"):
            services.rating_submit(public_id=claim.output.public_id, rater=ann, score=score)
    with pytest.raises(services.RatingError, match="not claimed"):
        services.rating_submit(public_id=claim.output.public_id, rater=bob, score=3)
    with pytest.raises(services.OutputNotFound):
        services.rating_submit(public_id="nope", rater=ann, score=3)
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
        claim = services.rating_claim_next(study=setup.study, rater=rater)
        firsts[claim.output.arm.arm] = firsts.get(claim.output.arm.arm, 0) + 1
    assert set(firsts) == {"base", "control", "values_targeted"}
    assert max(firsts.values()) < 25


def test_claims_outside_the_pool_or_after_closing_are_refused(rating_study, rater):
    with pytest.raises(services.NotARater):
        services.rating_claim_next(study=rating_study.study, rater=rater)
    with pytest.raises(services.NotARater):
        services.rating_claim_next(study=rating_study.study, rater=rating_study.admin)
