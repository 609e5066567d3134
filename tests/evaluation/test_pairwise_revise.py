"""A rater changes their last pairwise judgment while the study is open, as the 1–5 pages
allow for ratings: logged, counts and quotas unchanged, only the last one, page and API."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from evaluation.errors import RatingError, StudyStateError
from evaluation.models import PairJudgment, PairJudgmentRevision, StudyPair
from evaluation.studies import lifecycle, pairwise_queue, revisions
from tests.conftest import api_token, client_for
from tests.evaluation.conftest import build_study

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def pairwise(no_queue):
    return build_study(mode="pairwise")


def judge_next(study, rater, verdict: str) -> PairJudgment:
    claim = pairwise_queue.pair_claim_next(study=study, rater=rater)
    return pairwise_queue.pair_judge(public_id=claim.pair.public_id, rater=rater, verdict=verdict)


def test_the_last_judgment_changes_and_the_old_one_is_logged(pairwise):
    study, rater = pairwise.study, pairwise.raters[0]
    first = judge_next(study, rater, "a")
    last = judge_next(study, rater, "tie")
    counts = dict(StudyPair.objects.filter(study=study).values_list("pk", "completed_count"))
    changed = revisions.judgment_revise(
        study=study, rater=rater, public_id=last.pair.public_id, verdict="b", reason="B is kinder"
    )
    assert (changed.status, changed.verdict, changed.reason) == ("completed", "b", "B is kinder")
    [log] = PairJudgmentRevision.objects.filter(judgment=last)
    assert (log.previous_verdict, log.previous_reason, log.verdict) == ("tie", "", "b")
    assert dict(StudyPair.objects.filter(study=study).values_list("pk", "completed_count")) == (
        counts
    )
    revisions.judgment_revise(study=study, rater=rater, public_id=last.pair.public_id,
                              verdict="b", reason="B is kinder")  # fmt: skip
    assert PairJudgmentRevision.objects.count() == 1
    with pytest.raises(RatingError, match="Only your last submitted judgment"):
        revisions.judgment_revise(study=study, rater=rater, public_id=first.pair.public_id,
                                  verdict="b")  # fmt: skip
    with pytest.raises(RatingError, match="a, b, tie or both_bad"):
        revisions.judgment_revise(study=study, rater=rater, public_id=last.pair.public_id,
                                  verdict="c")  # fmt: skip
    # Another rater cannot change it (it is not their last), and a closed study refuses.
    other = pairwise.raters[1]
    with pytest.raises(RatingError):
        revisions.judgment_revise(study=study, rater=other, public_id=last.pair.public_id,
                                  verdict="a")  # fmt: skip
    lifecycle.study_close(study=study, user=pairwise.admin)
    with pytest.raises(StudyStateError):
        revisions.judgment_revise(study=study, rater=rater, public_id=last.pair.public_id,
                                  verdict="a")  # fmt: skip
    assert PairJudgment.objects.get(pk=last.pk).verdict == "b"


def test_the_page_offers_the_last_judgment_and_saves_the_change(pairwise):
    study, rater = pairwise.study, pairwise.raters[0]
    client = client_for(rater)
    page = reverse("evaluation:pair-rate", args=[study.pk])
    revise = reverse("evaluation:pair-revise", args=[study.pk])
    assert 'id="revise-link"' not in client.get(page).content.decode()
    assert "not submitted a judgment" in client.get(revise, **HX).content.decode()
    last = judge_next(study, rater, "a")
    pairwise_queue.pair_claim_next(study=study, rater=rater)  # now holding the next pair
    task = client.get(page).content.decode()
    assert 'id="revise-link"' in task and "Change your last judgment (A better)" in task
    shown = client.get(revise, **HX).content.decode()
    assert 'id="revise-note"' in shown and last.pair.left.text in shown
    assert 'value="a" id="verdict-a" required checked' in shown
    assert "pair-skip" not in shown and 'id="revise-back"' in shown
    refused = client.post(revise, {"pair": last.pair.public_id})
    assert refused.status_code == 400 and PairJudgment.objects.get(pk=last.pk).verdict == "a"
    saved = client.post(revise, {"pair": last.pair.public_id, "verdict": "both_bad"}, **HX)
    body = saved.content.decode()
    assert "Changed your last judgment from A better to Both bad" in body
    assert 'id="output-a"' in body  # back at the pair held
    assert PairJudgment.objects.get(pk=last.pk).verdict == "both_bad"
    stale = client.post(revise, {"pair": "notthelast", "verdict": "a"}, **HX)
    assert "Only your last submitted judgment" in stale.content.decode()


def test_the_api_shows_and_changes_the_last_judgment(pairwise):
    study, rater = pairwise.study, pairwise.raters[0]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(rater)}")
    assert api.get(f"/api/rating/pair-studies/{study.pk}/last/").status_code == 204
    judge_next(study, rater, "a")
    last = api.get(f"/api/rating/pair-studies/{study.pk}/last/").json()
    assert (last["verdict"], last["revisions"]) == ("a", 0) and {"a", "b", "pair"} <= set(last)
    url = f"/api/rating/pairs/{last['pair']}/revise/"
    changed = api.post(url, {"verdict": "b", "reason": "better"}, format="json")
    assert changed.status_code == 200 and changed.json()["verdict"] == "b"
    assert api.post(url, {"verdict": "z"}, format="json").status_code == 400
    assert api.post(url, {"verdict": "a", "extra": 1}, format="json").status_code == 400
    missing = api.post("/api/rating/pairs/nosuchpair/revise/", {"verdict": "a"}, format="json")
    assert missing.status_code == 404
    assert api.get(f"/api/rating/pair-studies/{study.pk}/last/").json()["revisions"] == 1
