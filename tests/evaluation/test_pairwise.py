"""Pairwise rating: which pairs a study makes, the queue's guarantees (exactly N distinct
raters per pair, one open claim, leases), the page and the rater API."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from evaluation.errors import EvaluationError, RatingError, StudyStateError
from evaluation.models import PairJudgment, Study, StudyOutput, StudyPair
from evaluation.studies import lifecycle, pairwise_queue, queue
from evaluation.studies.selectors import rater_progress, study_progress
from palmsweb.roles import Role
from tests.conftest import api_token, client_for, make_user
from tests.evaluation.conftest import build_study

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


def judge_all(study, rater, verdict="a") -> int:
    done = 0
    while (claim := pairwise_queue.pair_claim_next(study=study, rater=rater)) is not None:
        pairwise_queue.pair_judge(public_id=claim.pair.public_id, rater=rater, verdict=verdict)
        done += 1
    return done


def test_every_arm_pair_of_each_prompt_and_sample_becomes_one_pair(no_queue):
    setup = build_study(samples=2, mode=Study.Mode.PAIRWISE)
    pairs = list(StudyPair.objects.filter(study=setup.study).select_related("left", "right"))
    # 4 prompts × 2 samples × C(3, 2) arm pairs
    assert len(pairs) == 4 * 2 * 3
    for pair in pairs:
        assert pair.left.prompt_id == pair.right.prompt_id == pair.prompt_id
        assert pair.left.sample_index == pair.right.sample_index == pair.sample_index
        assert pair.left.arm_id != pair.right.arm_id
        assert pair.quota == setup.study.raters_per_output
    slots = {
        (p.prompt_id, p.sample_index, frozenset({p.left.arm_id, p.right.arm_id})) for p in pairs
    }
    assert len(slots) == len(pairs)


def test_left_and_right_are_drawn_at_random_and_stored(pairwise_study):
    study = pairwise_study.study
    StudyPair.objects.filter(study=study).delete()
    made = pairwise_queue.pairs_create(study=study, rng=random.Random(7))
    assert pairwise_queue.pairs_create(study=study) == made  # idempotent: same rows kept
    first_arm = StudyOutput.objects.filter(study=study).order_by("arm_id").first().arm_id
    on_left = [p.left.arm_id == first_arm for p in StudyPair.objects.filter(study=study)
               if first_arm in (p.left.arm_id, p.right.arm_id)]  # fmt: skip
    assert True in on_left and False in on_left
    stored = dict(StudyPair.objects.filter(study=study).values_list("pk", "left_id"))
    judge_all(study, pairwise_study.raters[0])
    assert dict(StudyPair.objects.filter(study=study).values_list("pk", "left_id")) == stored


def test_each_pair_gets_exactly_n_distinct_raters(no_queue):
    setup = build_study(raters=4, raters_per_output=3, mode=Study.Mode.PAIRWISE)
    study = setup.study
    done = [judge_all(study, rater) for rater in setup.raters]
    assert sum(done) == 12 * 3
    for pair in StudyPair.objects.filter(study=study):
        raters = list(pair.judgments.filter(status="completed").values_list("rater", flat=True))
        assert pair.completed_count == 3 and len(set(raters)) == 3
    assert study_progress(study).completed == study_progress(study).needed == 36
    assert all(rater_progress(study, r).open_to_me == 0 for r in setup.raters)


def test_the_database_refuses_a_second_judgment_and_an_overfull_pair(pairwise_study):
    study, rater = pairwise_study.study, pairwise_study.raters[0]
    claim = pairwise_queue.pair_claim_next(study=study, rater=rater)
    pairwise_queue.pair_judge(public_id=claim.pair.public_id, rater=rater, verdict="b")
    with pytest.raises(IntegrityError), transaction.atomic():
        PairJudgment.objects.create(
            study=study, pair=claim.pair, rater=rater, expires_at=timezone.now()
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        StudyPair.objects.filter(pk=claim.pair.pk).update(completed_count=99)
    with pytest.raises(IntegrityError), transaction.atomic():
        PairJudgment.objects.filter(pk=claim.pk).update(verdict="")


def test_a_reload_returns_the_held_pair_and_a_lapsed_lease_frees_it(pairwise_study):
    study, (ann, bob, _) = pairwise_study.study, pairwise_study.raters
    now = timezone.now()
    held = pairwise_queue.pair_claim_next(study=study, rater=ann, now=now)
    assert pairwise_queue.pair_claim_next(study=study, rater=ann, now=now).pk == held.pk
    later = now + timedelta(minutes=study.lease_minutes + 1)
    nxt = pairwise_queue.pair_claim_next(study=study, rater=ann, now=later)
    assert nxt.pk != held.pk
    assert PairJudgment.objects.get(pk=held.pk).status == PairJudgment.Status.EXPIRED
    # The lapsed lease is still honoured while the pair has room.
    judged = pairwise_queue.pair_judge(
        public_id=held.pair.public_id, rater=ann, verdict="tie", now=later
    )
    assert judged.status == PairJudgment.Status.COMPLETED
    assert bob  # another rater is unaffected


def test_bad_verdicts_are_refused_and_change_nothing(pairwise_study):
    study, rater = pairwise_study.study, pairwise_study.raters[0]
    claim = pairwise_queue.pair_claim_next(study=study, rater=rater)
    for verdict in ("", "A", "c", "both bad"):
        with pytest.raises(RatingError):
            pairwise_queue.pair_judge(public_id=claim.pair.public_id, rater=rater, verdict=verdict)
    claim.refresh_from_db()
    assert claim.status == PairJudgment.Status.CLAIMED and claim.verdict == ""
    assert StudyPair.objects.get(pk=claim.pair_id).completed_count == 0


def test_a_held_output_takes_its_pairs_out_of_the_pool_and_a_flag_holds_both(pairwise_study):
    study, rater = pairwise_study.study, pairwise_study.raters[0]
    claim = pairwise_queue.pair_claim_next(study=study, rater=rater)
    pairwise_queue.pair_flag(public_id=claim.pair.public_id, rater=rater, reason="names a model")
    held = StudyOutput.objects.filter(pk__in=[claim.pair.left_id, claim.pair.right_id])
    assert set(held.values_list("screening", flat=True)) == {StudyOutput.Screening.HELD}
    gone = StudyPair.objects.filter(study=study, left__in=held) | StudyPair.objects.filter(
        study=study, right__in=held
    )
    seen = set()
    while (nxt := pairwise_queue.pair_claim_next(study=study, rater=rater)) is not None:
        seen.add(nxt.pair_id)
        pairwise_queue.pair_skip(public_id=nxt.pair.public_id, rater=rater)
    assert seen and not seen & set(gone.values_list("pk", flat=True))


def test_modes_do_not_mix(no_queue, pairwise_study):
    scale = build_study(rater_prefix="scale")
    with pytest.raises(StudyStateError):
        queue.rating_claim_next(study=pairwise_study.study, rater=pairwise_study.raters[0])
    with pytest.raises(StudyStateError):
        pairwise_queue.pair_claim_next(study=scale.study, rater=scale.raters[0])


def test_a_pairwise_study_needs_two_arms(no_queue):
    with pytest.raises(EvaluationError, match="two"):
        build_study(arms=("base",), mode=Study.Mode.PAIRWISE, open_rating=False)
    with pytest.raises(EvaluationError, match="mode"):
        build_study(mode="ranking", open_rating=False, rater_prefix="ranking")


def test_the_page_shows_a_and_b_and_takes_a_judgment(pairwise_study):
    study, rater = pairwise_study.study, pairwise_study.raters[0]
    client = client_for(rater)
    assert client.get(reverse("evaluation:rate", args=[study.pk])).url == reverse(
        "evaluation:pair-rate", args=[study.pk]
    )
    response = client.post(reverse("evaluation:pair-claim", args=[study.pk]), **HX)
    claim = PairJudgment.objects.get(rater=rater, status="claimed")
    body = response.content.decode()
    assert "Response A" in body and "Response B" in body
    assert claim.pair.left.text in body and claim.pair.right.text in body
    assert body.index(claim.pair.left.text) < body.index(claim.pair.right.text)
    judge = reverse("evaluation:pair-judge", args=[study.pk, claim.pair.public_id])
    refused = client.post(judge, {"verdict": "maybe"})
    assert refused.status_code == 400
    claim.refresh_from_db()
    assert claim.status == "claimed"
    saved = client.post(judge, {"verdict": "both_bad", "reason": "neither follows it"}, **HX)
    assert saved.status_code == 200 and "Saved: Both bad." in saved.content.decode()
    claim.refresh_from_db()
    assert (claim.status, claim.verdict, claim.reason) == ("completed", "both_bad",
                                                          "neither follows it")  # fmt: skip


def test_raters_outside_the_pool_or_profile_are_refused(pairwise_study):
    study = pairwise_study.study
    stranger = make_user("pair-stranger", Role.RATER)
    response = client_for(stranger).get(reverse("evaluation:pair-rate", args=[study.pk]))
    assert response.status_code == 403
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(stranger)}")
    assert api.post(f"/api/rating/pair-studies/{study.pk}/claim/").status_code == 403


def test_the_api_claims_judges_and_answers_204_when_done(pairwise_study):
    study, rater = pairwise_study.study, pairwise_study.raters[0]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(rater)}")
    claim = api.post(f"/api/rating/pair-studies/{study.pk}/claim/")
    assert claim.status_code == 200
    task = claim.json()
    assert set(task) == {"pair", "study", "category", "position", "prompt", "a", "b",
                         "expires_at"}  # fmt: skip
    judge = f"/api/rating/pairs/{task['pair']}/judge/"
    assert api.post(judge, {"verdict": "x"}, format="json").status_code == 400
    assert api.post(judge, {"verdict": "a", "extra": 1}, format="json").status_code == 400
    ok = api.post(judge, {"verdict": "a"}, format="json")
    assert ok.json() == {"pair": task["pair"], "status": "completed", "verdict": "a"}
    assert api.post(judge, {"verdict": "a"}, format="json").status_code == 200  # a retry
    assert api.post(judge, {"verdict": "b"}, format="json").status_code == 409
    assert api.post(f"/api/rating/studies/{study.pk}/claim/").status_code == 409  # not 1–5
    judge_all(study, rater)
    assert api.post(f"/api/rating/pair-studies/{study.pk}/claim/").status_code == 204
    lifecycle.study_close(study=study, user=pairwise_study.admin)
    assert api.post(f"/api/rating/pair-studies/{study.pk}/claim/").status_code == 409


def test_the_study_api_and_form_choose_the_mode(no_queue):
    setup = build_study(open_rating=False)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(setup.admin)}")
    url = f"/api/studies/{setup.study.pk}/"
    assert api.get(url).json()["mode"] == "scale"
    assert api.patch(url, {"mode": "pairwise"}, format="json").status_code == 200
    assert Study.objects.get(pk=setup.study.pk).mode == "pairwise"
    assert api.patch(url, {"mode": "ranking"}, format="json").status_code == 400
    assert Study.objects.get(pk=setup.study.pk).mode == "pairwise"


def test_a_held_pair_whose_output_is_excluded_gives_way_to_the_next(pairwise_study):
    study, rater = pairwise_study.study, pairwise_study.raters[0]
    held = pairwise_queue.pair_claim_next(study=study, rater=rater)
    lifecycle.output_exclude(output=held.pair.left, user=pairwise_study.admin, reason="leak")
    with pytest.raises(RatingError):
        pairwise_queue.pair_judge(public_id=held.pair.public_id, rater=rater, verdict="a")
    nxt = pairwise_queue.pair_claim_next(study=study, rater=rater)
    assert nxt is not None and nxt.pk != held.pk
    assert held.pair.left_id not in {nxt.pair.left_id, nxt.pair.right_id}
    assert PairJudgment.objects.get(pk=held.pk).status == PairJudgment.Status.EXPIRED
