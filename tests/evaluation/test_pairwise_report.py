"""The pairwise report: numbers from the judgments, the unit of analysis stated, and the
same blinding as the 1–5 results (letters before unblinding, names after, agreement only
for a researcher on a closed, blinded study)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from evaluation.models import StudyArm, StudyPair
from evaluation.studies import lifecycle, pairwise_queue
from palmsweb.roles import Role
from tests.conftest import api_token, client_for, make_user
from tests.evaluation.conftest import VERSION_NAMES, build_study

pytestmark = pytest.mark.django_db


def judge_favouring(study, raters, favourite: str) -> None:
    """Every rater prefers the ``favourite`` arm whenever it is in the pair; otherwise tie."""
    arm_of = dict(StudyArm.objects.filter(study=study).values_list("pk", "arm"))
    for rater in raters:
        while (claim := pairwise_queue.pair_claim_next(study=study, rater=rater)) is not None:
            pair = StudyPair.objects.select_related("left", "right").get(pk=claim.pair_id)
            left, right = arm_of[pair.left.arm_id], arm_of[pair.right.arm_id]
            verdict = "a" if left == favourite else "b" if right == favourite else "tie"
            pairwise_queue.pair_judge(public_id=pair.public_id, rater=rater, verdict=verdict)


@pytest.fixture
def judged(no_queue):
    setup = build_study(n_categories=2, per_category=3, mode="pairwise")
    judge_favouring(setup.study, setup.raters, "values_targeted")
    return setup


def test_admins_see_letters_before_unblinding(judged):
    page = client_for(judged.admin).get(
        reverse("evaluation:study-pairwise-results", args=[judged.study.pk])
    )
    body = page.content.decode()
    assert page.status_code == 200
    assert "The unit of analysis is the prompt" in body
    assert "Arm A" in body and "Bradley–Terry" in body
    for name in VERSION_NAMES.values():
        assert name not in body
    assert "Values-targeted" not in body


def test_after_unblinding_the_favoured_arm_is_strongest_and_wins_every_pair(judged):
    study = judged.study
    lifecycle.study_close(study=study, user=judged.admin)
    researcher = make_user("pw-researcher", Role.RESEARCHER)
    lifecycle.study_unblind(study=study, user=researcher)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(researcher)}")
    report = api.get(f"/api/pairwise-results/{study.pk}/").json()
    assert report["mode"] == "arms" and report["n_prompts"] == 6
    assert report["n_judgments"] == 6 * 3 * 3  # prompts × arm pairs × raters
    vt_rows = [o for o in report["outcomes"] if "Values-targeted" in o["second"]]
    assert vt_rows and all(o["loss"]["value"] == 1.0 for o in vt_rows)
    others = [o for o in report["outcomes"] if "Values-targeted" not in o["first"] + o["second"]]
    assert all(o["tie"]["value"] == 1.0 for o in others)
    fit = report["bradley_terry"]
    # One arm won every decisive judgment: the fit says so instead of inventing numbers.
    assert fit["note"] and fit["n_decisive"] == 6 * 2 * 3
    assert report["agreement"]["percent_agreement"] == 1.0
    page = client_for(researcher).get(reverse("evaluation:study-pairwise-results", args=[study.pk]))
    assert "Values-targeted" in page.content.decode()


def test_a_researcher_on_a_closed_blinded_study_gets_agreement_only(judged):
    lifecycle.study_close(study=judged.study, user=judged.admin)
    researcher = make_user("pw-researcher2", Role.RESEARCHER)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(researcher)}")
    report = api.get(f"/api/pairwise-results/{judged.study.pk}/").json()
    assert report["mode"] == "arm-free"
    assert report["outcomes"] == [] and report["bradley_terry"] is None
    assert report["agreement"]["n_pairs"] == 18


def test_a_1_to_5_study_has_no_pairwise_report(no_queue):
    setup = build_study()
    client = client_for(setup.admin)
    url = reverse("evaluation:study-pairwise-results", args=[setup.study.pk])
    assert client.get(url).status_code == 404
