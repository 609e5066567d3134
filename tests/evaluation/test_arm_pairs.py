"""A pairwise study compares a chosen subset of its arm pairs: chosen in the form or the
API (arm numbers from 1), stored, checked, and only those pairs reach the queue; the
estimate counts judgments per pair."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from evaluation.errors import EvaluationError
from evaluation.models import ComparedArmPair, Study, StudyPair
from evaluation.studies import lifecycle
from evaluation.studies.arm_pairs import clean_arm_pairs, compared_numbers, parse_arm_pairs
from evaluation.studies.selectors import draft_study_estimate, study_progress
from tests.conftest import api_token, client_for
from tests.evaluation.conftest import build_study, fake_sampling_run
from tests.evaluation.test_views import study_form_data

pytestmark = pytest.mark.django_db


def test_parsing_and_checking():
    assert parse_arm_pairs(" 1-2, 1–3;2/3\n") == [(1, 2), (1, 3), (2, 3)]
    assert parse_arm_pairs("") == []
    with pytest.raises(EvaluationError, match="not an arm pair"):
        parse_arm_pairs("1-2, base-control")
    pairwise = Study.Mode.PAIRWISE
    assert clean_arm_pairs([(3, 1), (1, 2)], n_arms=3, mode=pairwise) == [(0, 1), (0, 2)]
    assert clean_arm_pairs([(1, 2), (1, 3), (2, 3)], n_arms=3, mode=pairwise) == []  # all
    for bad, message in (([(1, 1)], "two different arms"), ([(1, 4)], "arms 1 to 3"),
                         ([(0, 1)], "arms 1 to 3"), ([(1, 2, 3)], "two arm numbers")):  # fmt: skip
        with pytest.raises(EvaluationError, match=message):
            clean_arm_pairs(bad, n_arms=3, mode=pairwise)
    with pytest.raises(EvaluationError, match="Only a pairwise study"):
        clean_arm_pairs([(1, 2)], n_arms=3, mode=Study.Mode.SCALE)


def test_only_the_chosen_pairs_are_made_and_counted(no_queue):
    setup = build_study(open_rating=False, mode="pairwise")  # arms: base, control, vt
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(setup.admin)}")
    url = f"/api/studies/{setup.study.pk}/"
    changed = api.patch(url, {"arm_pairs": [[1, 3], [2, 3]]}, format="json")
    assert changed.status_code == 200 and changed.json()["arm_pairs"] == [[1, 3], [2, 3]]
    assert api.patch(url, {"arm_pairs": [[1, 5]]}, format="json").status_code == 400
    assert api.patch(url, {"arm_pairs": [[1]]}, format="json").status_code == 400
    assert compared_numbers(setup.study) == [(1, 3), (2, 3)]
    # The estimate counts judgments per pair: 4 prompts × 1 sample × 2 arm pairs × 3 raters.
    estimate = draft_study_estimate(Study.objects.get(pk=setup.study.pk))
    assert (estimate.n_arm_pairs, estimate.tasks, estimate.ratings) == (2, 8, 24)
    assert estimate.judgments_per_arm_pair == 12
    page = client_for(setup.admin).get(setup.study.get_absolute_url()).content.decode()
    assert "24 judgments" in page and "2 arm pairs per prompt" in page
    assert "1–3, 2–3" in page
    study = lifecycle.study_open(study=setup.study, user=setup.admin)
    fake_sampling_run(study)
    study = lifecycle.study_sync_sampling(study_id=study.pk)
    pairs = StudyPair.objects.filter(study=study).select_related("left__arm", "right__arm")
    arms = {frozenset((p.left.arm.arm, p.right.arm.arm)) for p in pairs}
    assert pairs.count() == 8
    assert arms == {frozenset({"base", "values_targeted"}),
                    frozenset({"control", "values_targeted"})}  # fmt: skip
    assert study_progress(study).needed == 24


def test_the_form_chooses_pairs_and_refuses_a_bad_one(no_queue):
    setup = build_study(open_rating=False)
    client = client_for(setup.admin)
    prompt_set = setup.study.prompt_set
    create = reverse("evaluation:study-create")
    bad = client.post(create, study_form_data(setup, prompt_set, mode="pairwise",
                                              arm_pairs="1-3"))  # fmt: skip
    assert bad.status_code == 400 and "arms 1 to 2" in bad.content.decode()
    scale = client.post(create, study_form_data(setup, prompt_set, arm_pairs="1-2"))
    assert scale.status_code == 400 and "Only a pairwise study" in scale.content.decode()
    assert not Study.objects.filter(name="Form study").exists()
    ok = client.post(create, study_form_data(setup, prompt_set, mode="pairwise", arm_pairs="2-1"))
    study = Study.objects.get(name="Form study")
    assert ok.status_code == 302 and not ComparedArmPair.objects.filter(study=study).exists()
    edit = reverse("evaluation:study-edit", args=[study.pk])
    assert 'name="arm_pairs"' in client.get(edit).content.decode()
    estimate = client.get(reverse("evaluation:study-estimate"),
                          study_form_data(setup, prompt_set, mode="pairwise"))  # fmt: skip
    body = estimate.content.decode()
    assert "judgments" in body and 'id="estimate-pairwise"' in body and "Power" not in body
