"""Who may reach what: raters only their queue; researchers read and, once closed,
unblind; admins manage; nobody else gets in. Checked in views and API, never only in
templates."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from evaluation.models import Rating, Study, StudyOutput
from tests.conftest import api_token, client_for
from tests.evaluation.conftest import build_study

pytestmark = pytest.mark.django_db


def study_pages(study) -> dict[str, tuple[str, str]]:
    """name → (method, url) for every study-management and prompt-set page."""
    output = study.outputs.first()
    prompt = study.prompt_set.prompts.first()
    urls = {
        "study-list": ("get", reverse("evaluation:study-list")),
        "study-create": ("get", reverse("evaluation:study-create")),
        "study-detail": ("get", reverse("evaluation:study-detail", args=[study.pk])),
        "study-edit": ("get", reverse("evaluation:study-edit", args=[study.pk])),
        "study-status": ("get", reverse("evaluation:study-status", args=[study.pk])),
        "study-open": ("post", reverse("evaluation:study-open", args=[study.pk])),
        "study-close": ("post", reverse("evaluation:study-close", args=[study.pk])),
        "study-unblind": ("post", reverse("evaluation:study-unblind", args=[study.pk])),
        "study-results": ("get", reverse("evaluation:study-results", args=[study.pk])),
        "study-outputs": ("get", reverse("evaluation:study-outputs", args=[study.pk])),
        "output-clear": ("post", reverse("evaluation:output-clear", args=[output.pk])),
        "output-exclude": ("post", reverse("evaluation:output-exclude", args=[output.pk])),
        "prompt-set-list": ("get", reverse("evaluation:prompt-set-list")),
        "prompt-set-detail": ("get", study.prompt_set.get_absolute_url()),
        "prompt-set-create": ("get", reverse("evaluation:prompt-set-create")),
        "prompt-edit": ("get", reverse("evaluation:prompt-edit", args=[prompt.pk])),
        "prompt-delete": ("post", reverse("evaluation:prompt-delete", args=[prompt.pk])),
    }
    return urls


def test_raters_cannot_reach_study_management_results_or_prompt_sets(rating_study):
    study = rating_study.study
    client = client_for(rating_study.raters[0])
    for name, (method, url) in study_pages(study).items():
        response = getattr(client, method)(url)
        assert response.status_code == 403, name
    study.refresh_from_db()
    assert (
        study.status == Study.Status.RATING
        and study.outputs.filter(screening="active").count() == 12
    )


def test_users_without_a_role_get_nothing(rating_study, outsider_client):
    for name, (method, url) in study_pages(rating_study.study).items():
        assert getattr(outsider_client, method)(url).status_code == 403, name
    rate = reverse("evaluation:rate", args=[rating_study.study.pk])
    assert outsider_client.get(rate).status_code == 403
    assert outsider_client.get(reverse("evaluation:rate-home")).status_code == 403


def test_anonymous_visitors_are_sent_to_log_in(rating_study, client):
    response = client.get(reverse("evaluation:rate", args=[rating_study.study.pk]))
    assert response.status_code == 302 and "/accounts/login/" in response.url


def test_researchers_read_but_do_not_manage(rating_study, researcher_client):
    study = rating_study.study
    allowed = {"study-list", "study-detail", "study-status", "prompt-set-list", "prompt-set-detail"}
    for name, (method, url) in study_pages(study).items():
        if name == "study-unblind":
            continue  # allowed, but refused by the service while the study is open
        status = getattr(researcher_client, method)(url).status_code
        if name in allowed:
            assert status in (200, 302), name
        else:
            assert status == 403, name
    response = researcher_client.post(reverse("evaluation:study-unblind", args=[study.pk]))
    assert response.status_code == 302
    study.refresh_from_db()
    assert study.unblinded_at is None


def test_a_researcher_never_sees_per_arm_scores_before_unblinding(rating_study, researcher_client):
    study = rating_study.study
    detail = researcher_client.get(study.get_absolute_url())
    assert b"Per-arm results" not in detail.content
    assert (
        researcher_client.get(reverse("evaluation:study-results", args=[study.pk])).status_code
        == 403
    )


def test_raters_outside_the_pool_and_admins_outside_the_group_cannot_rate(rating_study, rater):
    study = rating_study.study
    url = reverse("evaluation:rate", args=[study.pk])
    assert client_for(rater).get(url).status_code == 403
    assert client_for(rating_study.admin).get(url).status_code == 403
    assert (
        client_for(rater).post(reverse("evaluation:rate-claim", args=[study.pk])).status_code == 403
    )


def test_a_rater_cannot_touch_another_raters_claim(no_queue):
    # One rating per output: Ann's claim fills the output, so Bob can never claim it
    # himself along the way (each refused answer hands him his own next output).
    setup = build_study(raters=2, raters_per_output=1)
    study, (ann, bob) = setup.study, setup.raters
    client_for(ann).post(reverse("evaluation:rate-claim", args=[study.pk]))
    claim = Rating.objects.get(rater=ann, status="claimed")
    public_id = claim.output.public_id
    bob_client = client_for(bob)
    for name in ("rate-submit", "rate-skip", "rate-flag"):
        bob_client.post(reverse(f"evaluation:{name}", args=[study.pk, public_id]), {"score": "1"})
    claim.refresh_from_db()
    assert claim.status == "claimed" and claim.score is None
    assert not Rating.objects.filter(rater=bob, output=claim.output).exists()
    assert StudyOutput.objects.get(pk=claim.output_id).screening == "active"


def test_no_api_route_shows_a_rater_other_raters_ratings(rating_study):
    study, (ann, bob, _) = rating_study.study, rating_study.raters
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(bob)}")
    ann_api = APIClient()
    ann_api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(ann)}")
    output = ann_api.post(f"/api/rating/studies/{study.pk}/claim/").json()["output"]
    ann_api.post(f"/api/rating/outputs/{output}/submit/", {"score": 5}, format="json")
    mine = api.get(f"/api/rating/studies/{study.pk}/").json()
    assert mine["my_progress"] == {"completed": 0, "skipped": 0, "share": 12, "open_to_me": 12}
    # Bob can neither read nor change Ann's last rating.
    assert api.get(f"/api/rating/studies/{study.pk}/last/").status_code == 204
    revise = api.post(f"/api/rating/outputs/{output}/revise/", {"score": 1}, format="json")
    assert revise.status_code == 409
    assert Rating.objects.get(rater=ann, output__public_id=output).score == 5
    for path in (
        f"/api/studies/{study.pk}/",
        f"/api/studies/{study.pk}/results/",
        f"/api/studies/{study.pk}/events/",
        "/api/study-outputs/",
        f"/api/studies/{study.pk}/open/",
    ):
        method = api.post if path.endswith("open/") else api.get
        assert method(path).status_code == 403, path
