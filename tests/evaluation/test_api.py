"""The evaluation API: raters' queue, study management, unblinding and results."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from evaluation.models import PromptSet, Rating, Study, StudyOutput
from palmsweb.roles import Role
from tests.conftest import api_token, client_for, make_user
from tests.evaluation.conftest import build_study, fake_sampling_run
from tests.factories import CategoryFactory

pytestmark = pytest.mark.django_db
TASK_FIELDS = {"output", "study", "category", "position", "prompt", "text", "rubric", "expires_at"}


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


# --- raters ----------------------------------------------------------------------------------


def test_a_rater_claims_and_answers_through_the_api(rating_study):
    study, rater = rating_study.study, rating_study.raters[0]
    api = api_for(rater)
    listing = api.get("/api/rating/studies/")
    assert listing.status_code == 200 and [s["id"] for s in listing.json()] == [study.pk]
    assert listing.json()[0]["study_progress"] == {"completed": 0, "needed": 36, "percent": 0}
    task = api.post(f"/api/rating/studies/{study.pk}/claim/")
    assert task.status_code == 200 and set(task.json()) == TASK_FIELDS
    body = task.json()
    assert [item["score"] for item in body["rubric"]] == [1, 2, 3, 4, 5]
    assert api.post(f"/api/rating/studies/{study.pk}/claim/").json()["output"] == body["output"]
    assert api.get(f"/api/rating/studies/{study.pk}/current/").json()["output"] == body["output"]
    result = api.post(
        f"/api/rating/outputs/{body['output']}/submit/",
        {"score": 5, "comment": "Kind."},
        format="json",
    )
    assert result.status_code == 200
    assert result.json() == {"output": body["output"], "status": "completed", "score": 5}
    assert api.get(f"/api/rating/studies/{study.pk}/current/").status_code == 204
    second = api.post(f"/api/rating/studies/{study.pk}/claim/").json()["output"]
    assert api.post(f"/api/rating/outputs/{second}/skip/").json()["status"] == "skipped"
    third = api.post(f"/api/rating/studies/{study.pk}/claim/").json()["output"]
    flagged = api.post(f"/api/rating/outputs/{third}/flag/", {"reason": "names GPT"}, format="json")
    assert flagged.json()["status"] == "flagged"
    summary = api.get(f"/api/rating/studies/{study.pk}/").json()
    assert summary["my_progress"]["completed"] == 1 and summary["my_progress"]["skipped"] == 2


def test_claim_and_submit_stay_within_their_query_budgets(
    rating_study, django_assert_max_num_queries
):
    """The raters' hot path: a claim is token, roles, study, pool check, the rater's latest
    rating, one candidate query that locks and reads the task, the recount of open claims
    (PostgreSQL) and the insert; a submit locks the output and the rating and updates both.
    Savepoints (or BEGIN/COMMIT) count too."""
    study, rater = rating_study.study, rating_study.raters[0]
    api = api_for(rater)
    for _ in range(3):
        with django_assert_max_num_queries(10):
            output = api.post(f"/api/rating/studies/{study.pk}/claim/").json()["output"]
        with django_assert_max_num_queries(8):
            api.post(f"/api/rating/outputs/{output}/submit/", {"score": 3}, format="json")


def test_the_queue_answers_204_when_nothing_is_left(no_queue):
    setup = build_study(
        raters=1, raters_per_output=1, n_categories=1, per_category=1, arms=("base",)
    )
    api = api_for(setup.raters[0])
    output = api.post(f"/api/rating/studies/{setup.study.pk}/claim/").json()["output"]
    api.post(f"/api/rating/outputs/{output}/submit/", {"score": 3}, format="json")
    assert api.post(f"/api/rating/studies/{setup.study.pk}/claim/").status_code == 204


@pytest.mark.parametrize(
    ("body", "status"),
    [({"score": 0}, 400), ({"score": 6}, 400), ({}, 400), ({"score": 3, "arm": "x"}, 400)],
)
def test_bad_submissions_are_refused_and_change_nothing(rating_study, body, status):
    api = api_for(rating_study.raters[0])
    output = api.post(f"/api/rating/studies/{rating_study.study.pk}/claim/").json()["output"]
    response = api.post(f"/api/rating/outputs/{output}/submit/", body, format="json")
    assert response.status_code == status
    assert not Rating.objects.filter(status="completed").exists()


def test_rating_errors_have_clear_status_codes(rating_study, rater):
    study, (ann, bob, _) = rating_study.study, rating_study.raters
    output = api_for(ann).post(f"/api/rating/studies/{study.pk}/claim/").json()["output"]
    # Bob cannot answer Ann's claim, nor an id that does not exist.
    response = api_for(bob).post(
        f"/api/rating/outputs/{output}/submit/", {"score": 3}, format="json"
    )
    assert response.status_code == 409 and "not claimed" in response.json()["detail"]
    assert api_for(bob).post("/api/rating/outputs/doesnotexist/skip/").status_code == 404
    # A rater outside the pool is refused; so is an admin who is not a rater.
    assert api_for(rater).post(f"/api/rating/studies/{study.pk}/claim/").status_code == 403
    admin_api = api_for(rating_study.admin)
    assert admin_api.post(f"/api/rating/studies/{study.pk}/claim/").status_code == 403
    assert APIClient().post(f"/api/rating/studies/{study.pk}/claim/").status_code == 401
    admin_api.post(f"/api/studies/{study.pk}/close/")
    response = api_for(ann).post(
        f"/api/rating/outputs/{output}/submit/", {"score": 3}, format="json"
    )
    assert response.status_code == 409
    assert api_for(ann).post(f"/api/rating/studies/{study.pk}/claim/").status_code == 409


# --- admins ------------------------------------------------------------------------------------


def test_an_admin_runs_a_study_through_the_api(no_queue):
    setup = build_study(open_rating=False)
    api = api_for(setup.admin)
    body = {
        "name": "API study",
        "prompt_set": setup.study.prompt_set_id,
        "arms": [
            {"arm": "base", "model_version": setup.versions["base"].pk},
            {"arm": "control", "model_version": setup.versions["control"].pk, "size_tag": "Small"},
        ],
        "raters": [r.username for r in setup.raters],
        "samples_per_prompt": 1,
    }
    created = api.post("/api/studies/", body, format="json")
    assert created.status_code == 201, created.json()
    data = created.json()
    assert data["status"] == "draft" and data["raters_per_output"] == 3
    assert [a["size_tag"] for a in data["arms"]] == ["77M", "Small"]
    study_id = data["id"]
    patched = api.patch(f"/api/studies/{study_id}/", {"samples_per_prompt": 2}, format="json")
    assert patched.status_code == 200 and patched.json()["samples_per_prompt"] == 2
    opened = api.post(f"/api/studies/{study_id}/open/")
    assert opened.status_code == 200 and opened.json()["status"] == "sampling"
    assert api.post(f"/api/studies/{study_id}/open/").status_code == 409
    study = Study.objects.get(pk=study_id)
    fake_sampling_run(study)
    synced = api.post(f"/api/studies/{study_id}/sync/")
    assert synced.json()["status"] == "rating"
    assert synced.json()["progress"]["outputs"] == 2 * 4 * 2
    outputs = api.get(f"/api/study-outputs/?study={study_id}")
    assert outputs.status_code == 200 and outputs.json()["count"] == 16
    first = outputs.json()["results"][0]
    assert first["arm"] in {"base", "control"} and first["model_version"]
    excluded = api.post(
        f"/api/study-outputs/{first['id']}/exclude/", {"reason": "test"}, format="json"
    )
    assert excluded.json()["screening"] == "excluded"
    assert api.post(f"/api/study-outputs/{first['id']}/clear/").status_code == 400
    live = api.patch(
        f"/api/studies/{study_id}/", {"rubric": ["a", "b", "c", "d", "e"]}, format="json"
    )
    assert live.status_code == 200 and live.json()["rubric"][0] == "a"
    refused = api.patch(f"/api/studies/{study_id}/", {"samples_per_prompt": 5}, format="json")
    assert refused.status_code == 400
    assert api.delete(f"/api/studies/{study_id}/").status_code == 409
    closed = api.post(f"/api/studies/{study_id}/close/")
    assert closed.json()["status"] == "closed"
    events = api.get(f"/api/studies/{study_id}/events/").json()
    assert [e["kind"] for e in events][:3] == ["created", "updated", "opened"]


def test_a_draft_can_be_deleted_and_bad_designs_are_refused(no_queue):
    setup = build_study(open_rating=False)
    api = api_for(setup.admin)
    bad = api.post(
        "/api/studies/",
        {"name": "x", "prompt_set": setup.study.prompt_set_id, "arms": []},
        format="json",
    )
    assert bad.status_code == 400
    unknown = api.post(
        "/api/studies/",
        {"name": "x", "prompt_set": setup.study.prompt_set_id, "arms": [], "colour": "red"},
        format="json",
    )
    assert unknown.status_code == 400 and "colour" in unknown.json()
    assert api.delete(f"/api/studies/{setup.study.pk}/").status_code == 204
    assert not Study.objects.exists()


# --- researchers -----------------------------------------------------------------------------


def test_researchers_unblind_closed_studies_and_then_read_results(rating_study, researcher):
    study = rating_study.study
    ann = rating_study.raters[0]
    api = api_for(ann)
    output = api.post(f"/api/rating/studies/{study.pk}/claim/").json()["output"]
    api.post(f"/api/rating/outputs/{output}/submit/", {"score": 2}, format="json")
    research = api_for(researcher)
    assert research.get(f"/api/studies/{study.pk}/").status_code == 200
    assert research.get(f"/api/studies/{study.pk}/results/").status_code == 403
    assert research.post(f"/api/studies/{study.pk}/unblind/").status_code == 409
    assert research.post(f"/api/studies/{study.pk}/close/").status_code == 403
    admin = api_for(rating_study.admin)
    assert admin.get(f"/api/studies/{study.pk}/results/").status_code == 200
    admin.post(f"/api/studies/{study.pk}/close/")
    assert research.get(f"/api/studies/{study.pk}/results/").status_code == 403
    unblinded = research.post(f"/api/studies/{study.pk}/unblind/")
    assert unblinded.status_code == 200 and unblinded.json()["unblinded_at"]
    results = research.get(f"/api/studies/{study.pk}/results/").json()
    assert len(results["categories"]) == 2
    rated_arm = StudyOutput.objects.get(public_id=output).arm.arm
    by_arm = {row["arm"]: row for row in results["arms"]}
    assert by_arm[rated_arm]["overall"] == 2
    assert sum(c["ratings"] for c in by_arm[rated_arm]["categories"]) == 1


# --- prompt sets -------------------------------------------------------------------------------


def test_prompt_sets_through_the_api(curator, researcher, rater):
    category = CategoryFactory(name="Relationships")
    created = api_for(curator).post(
        "/api/prompt-sets/",
        {
            "name": "API prompts",
            "prompts": [{"category": "Relationships", "text": "How do I apologise?"}],
        },
        format="json",
    )
    assert created.status_code == 201
    assert created.json()["prompts"][0]["category"] == category.name
    assert api_for(researcher).get("/api/prompt-sets/").json()["count"] == 1
    assert (
        api_for(researcher).post("/api/prompt-sets/", {"name": "x"}, format="json").status_code
        == 403
    )
    assert api_for(rater).get("/api/prompt-sets/").status_code == 403
    bad = api_for(curator).post(
        "/api/prompt-sets/",
        {
            "name": "Bad",
            "prompts": [{"category": "Nope", "text": "x"}],
        },
        format="json",
    )
    assert bad.status_code == 400 and not PromptSet.objects.filter(name="Bad").exists()


def test_the_openapi_schema_builds(admin_client_):
    response = admin_client_.get("/api/schema/")
    assert response.status_code == 200
    assert b"/api/rating/outputs/{public_id}/submit/" in response.content


def test_admins_never_rate_even_in_the_rater_group(rating_study):
    """Admins can see which model wrote each output, so a pool refuses them, and one who
    got in before becoming an admin (or by hand) cannot claim."""
    both = make_user("dual", Role.ADMIN, Role.RATER, staff=True)
    study = rating_study.study
    body = {"raters": [*study.raters.values_list("username", flat=True), "dual"]}
    refused = api_for(rating_study.admin).patch(f"/api/studies/{study.pk}/", body, format="json")
    assert refused.status_code == 400 and "Admins can see which model" in refused.json()["detail"]
    assert not study.raters.filter(pk=both.pk).exists()
    study.raters.add(both)  # as if it predated the rule
    response = api_for(both).post(f"/api/rating/studies/{study.pk}/claim/")
    assert response.status_code == 403 and "cannot rate" in response.json()["detail"]
    assert not Rating.objects.filter(rater=both).exists()
    assert api_for(both).get("/api/rating/studies/").json() == []
    page = client_for(both).get(reverse("evaluation:rate", args=[study.pk]))
    assert page.status_code == 403
