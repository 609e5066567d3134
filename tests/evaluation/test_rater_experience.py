"""Issue 12, items 11–14 on the server side: a rater changes their last rating (logged,
counts and quotas unchanged), reads instructions before their first output, sees the
category's position in full only on their first output of it, and reads progress that
says whose it is."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils.html import escape
from rest_framework.test import APIClient

from evaluation.errors import NotARater, RatingError, StudyStateError
from evaluation.models import Rating, RatingRevision, StudyOutput
from evaluation.studies import lifecycle, queue, revisions
from tests.conftest import api_token, client_for
from tests.evaluation.conftest import build_study

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


def rate_next(study, rater, score: int) -> Rating:
    claim = queue.rating_claim_next(study=study, rater=rater)
    return queue.rating_submit(public_id=claim.output.public_id, rater=rater, score=score)


# --- item 12: change the last rating ---------------------------------------------------------


def test_a_rater_changes_their_last_rating_and_the_old_one_is_logged(rating_study):
    study, rater = rating_study.study, rating_study.raters[0]
    rate_next(study, rater, 2)
    last = rate_next(study, rater, 4)
    counts = dict(StudyOutput.objects.filter(study=study).values_list("pk", "completed_count"))

    changed = revisions.rating_revise(
        study=study, rater=rater, public_id=last.output.public_id, score=1, comment="Harsh"
    )
    assert (changed.status, changed.score, changed.comment) == ("completed", 1, "Harsh")
    [log] = RatingRevision.objects.filter(rating=last)
    assert (log.previous_score, log.previous_comment, log.score, log.comment) == (4, "", 1, "Harsh")
    # Counts and quotas are untouched: a change is not another rating.
    assert dict(StudyOutput.objects.filter(study=study).values_list("pk", "completed_count")) == (
        counts
    )
    assert Rating.objects.filter(study=study, rater=rater, status="completed").count() == 2
    # The same values again change nothing and log nothing.
    revisions.rating_revise(study=study, rater=rater, public_id=last.output.public_id,
                            score=1, comment="Harsh")  # fmt: skip
    assert RatingRevision.objects.count() == 1


def test_only_the_last_rating_of_an_open_study_can_change(rating_study):
    study, (ann, bob, _) = rating_study.study, rating_study.raters
    first = rate_next(study, ann, 2)
    rate_next(study, ann, 3)
    with pytest.raises(RatingError, match="Only your last submitted rating"):
        revisions.rating_revise(study=study, rater=ann, public_id=first.output.public_id, score=5)
    with pytest.raises(RatingError, match="Pick a score 1–5 first"):
        revisions.rating_revise(study=study, rater=ann, public_id=first.output.public_id, score=9)
    with pytest.raises(RatingError, match="Only your last submitted rating"):
        revisions.rating_revise(study=study, rater=bob, public_id=first.output.public_id, score=5)
    lifecycle.study_close(study=study, user=rating_study.admin)
    last = revisions.rating_last(study, ann)
    with pytest.raises(StudyStateError):
        revisions.rating_revise(study=study, rater=ann, public_id=last.output.public_id, score=5)
    outsider = rating_study.admin
    with pytest.raises(NotARater):
        revisions.rating_revise(study=study, rater=outsider, public_id="x", score=5)
    assert not RatingRevision.objects.exists()
    assert Rating.objects.get(pk=first.pk).score == 2


def test_the_rating_page_offers_to_change_the_last_rating_and_keeps_the_current_claim(
    rating_study,
):
    study, rater = rating_study.study, rating_study.raters[0]
    client = client_for(rater)
    client.post(reverse("evaluation:rate-claim", args=[study.pk]), **HX)
    claim = Rating.objects.get(rater=rater, status="claimed")
    response = client.post(
        reverse("evaluation:rate-submit", args=[study.pk, claim.output.public_id]),
        {"score": "4", "comment": "Fine"}, **HX,
    )  # fmt: skip
    body = response.content.decode()
    assert "Change your last rating (4)" in body
    holding = Rating.objects.get(rater=rater, status="claimed")

    revise = reverse("evaluation:rate-revise", args=[study.pk])
    page = client.get(revise, **HX).content.decode()
    assert claim.output.text in page and 'data-state="revise"' in page
    assert 'value="4" id="score-4" required checked' in page and ">Fine</textarea>" in page
    done = client.post(revise, {"output": claim.output.public_id, "score": "2",
                                "comment": "Too kind"}, **HX).content.decode()  # fmt: skip
    assert "Changed your last rating from 4 to 2." in done
    assert holding.output.text in done  # back at the output held before
    assert Rating.objects.get(pk=claim.pk).score == 2
    assert Rating.objects.get(rater=rater, status="claimed").pk == holding.pk

    no_score = client.post(revise, {"output": claim.output.public_id}, **HX).content.decode()
    assert "Pick a score 1–5 first." in no_score and 'data-state="revise"' in no_score
    plain = client.post(revise, {"output": claim.output.public_id, "score": "3"})
    assert plain.status_code == 302 and Rating.objects.get(pk=claim.pk).score == 3


def test_the_api_reads_and_changes_the_last_rating(rating_study):
    study, rater = rating_study.study, rating_study.raters[0]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(rater)}")
    assert api.get(f"/api/rating/studies/{study.pk}/last/").status_code == 204
    rated = rate_next(study, rater, 5)
    last = api.get(f"/api/rating/studies/{study.pk}/last/").json()
    assert (last["output"], last["score"], last["comment"], last["revisions"]) == (
        rated.output.public_id, 5, "", 0,
    )  # fmt: skip
    assert last["text"] == rated.output.text and "expires_at" not in last
    url = f"/api/rating/outputs/{rated.output.public_id}/revise/"
    result = api.post(url, {"score": 3, "comment": "On reflection"}, format="json")
    assert result.status_code == 200 and result.json()["score"] == 3
    assert api.get(f"/api/rating/studies/{study.pk}/last/").json()["revisions"] == 1
    assert api.post(url, {"score": 7}, format="json").status_code == 400
    assert api.post(url, {"score": 3, "extra": 1}, format="json").status_code == 400
    assert api.post("/api/rating/outputs/nosuchoutput/revise/", {"score": 3},
                    format="json").status_code == 404  # fmt: skip


# --- item 14: instructions first -------------------------------------------------------------


def test_instructions_come_before_the_first_output_and_on_request(rating_study):
    study, rater = rating_study.study, rating_study.raters[0]
    client = client_for(rater)
    page = client.get(reverse("evaluation:rate", args=[study.pk]))
    body = page.content.decode()
    assert page.context["state"] == "intro" and "Before you start" in body
    assert escape(study.rubric[0]) in body and "Flag instead of rating" in body
    assert "<kbd>F</kbd> flag" in body
    assert "Start rating" in body and 'hx-trigger="load' not in body  # no claim behind it
    assert not Rating.objects.filter(rater=rater).exists()
    rate_next(study, rater, 3)
    assert client.get(reverse("evaluation:rate", args=[study.pk])).context["state"] == "start"
    again = client.get(reverse("evaluation:rate-instructions", args=[study.pk]))
    assert again.context["state"] == "intro" and "Back to rating" in again.content.decode()


# --- item 11: the position folds after the first output of its category --------------------


def test_the_position_is_open_only_on_the_first_output_of_a_category(no_queue):
    setup = build_study(raters=1, raters_per_output=1, n_categories=1, per_category=2,
                        arms=("base",))  # fmt: skip
    study, rater = setup.study, setup.raters[0]
    client = client_for(rater)
    first = client.post(reverse("evaluation:rate-claim", args=[study.pk]), **HX)
    assert first.context["position_open"] is True
    assert '<details class="position" open>' in first.content.decode()
    claim = Rating.objects.get(rater=rater, status="claimed")
    second = client.post(
        reverse("evaluation:rate-submit", args=[study.pk, claim.output.public_id]),
        {"score": "3"}, **HX,
    )  # fmt: skip
    assert second.context["position_open"] is False
    assert '<details class="position">' in second.content.decode()


# --- item 13: progress that says whose it is ------------------------------------------------


def test_progress_says_what_is_mine_and_what_is_the_studys(no_queue):
    # 4 outputs, one rating each, three raters: a keen rater can do all four.
    setup = build_study(raters=3, raters_per_output=1, n_categories=2, per_category=2,
                        arms=("base",))  # fmt: skip
    study, keen = setup.study, setup.raters[0]
    for _ in range(3):
        rate_next(study, keen, 4)
    client = client_for(keen)
    body = client.post(reverse("evaluation:rate-claim", args=[study.pk]), **HX).content.decode()
    assert '<span class="meter-label">You</span>' in body
    assert "<strong>3</strong> rated · up to 1 to go" in body  # not "3 rated of about 2"
    assert '<span class="meter-label">All raters</span>' in body
    assert "3 of 4 ratings (75%)" in body
    home = client.get(reverse("evaluation:rate-home")).content.decode()
    assert "You have rated <strong>3</strong>; up to 1 more is open to you." in home
