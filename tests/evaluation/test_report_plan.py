"""The study planner (issue 15, item 3): power before rating, on the study page, the
study form and the API; achieved power on the report."""

from __future__ import annotations

import pytest
from django.urls import reverse

from evaluation.report.build import build_report
from evaluation.studies.planning import prompt_set_shape, study_plan
from palmsweb.lib.design import DEFAULT_COMPONENTS, StudyDesign
from palmsweb.lib.power import plan_study
from palmsweb.roles import Role
from tests.conftest import client_for, make_user
from tests.evaluation.conftest import build_study
from tests.evaluation.test_api import api_for
from tests.evaluation.test_report import closed_study

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


def test_without_a_closed_study_the_plan_uses_the_prior(no_queue):
    setup = build_study(open_rating=False)
    assert prompt_set_shape(setup.study.prompt_set) == (2, 2)
    found = study_plan(categories=8, prompts_per_category=5, samples_per_prompt=3,
                       raters_per_output=3)  # fmt: skip
    direct = plan_study(effect=0.5, components=DEFAULT_COMPONENTS, design=StudyDesign())
    assert found.source == "prior" and found.plan == direct
    # the PALMS design with the prior: docs/statistics.md's table
    assert found.plan.per_category_power == pytest.approx(0.04, abs=0.01)
    assert found.plan.overall_power == pytest.approx(0.98, abs=0.01)
    assert found.plan.prompts_per_category_for_target == 34


def test_the_api_plans_a_study_from_its_prompt_set(no_queue):
    setup = build_study(open_rating=False)
    body = {"prompt_set": setup.study.prompt_set_id, "samples_per_prompt": 3}
    response = api_for(setup.admin).post("/api/studies/plan/", body, format="json")
    assert response.status_code == 200, response.content
    plan = response.json()
    assert plan["effect"] == 0.5 and plan["components_source"] == "prior"
    assert plan["design"]["categories"] == 2 and plan["design"]["prompts_per_category"] == 2
    assert 0 < plan["per_category_power"] < plan["overall_power"] < 1
    assert plan["prompts_per_category_for_target"] > 2
    bigger = dict(body, expected_difference=2.0)
    stronger = api_for(setup.admin).post("/api/studies/plan/", bigger, format="json").json()
    assert stronger["overall_power"] > plan["overall_power"]
    bad = api_for(setup.admin).post("/api/studies/plan/", dict(body, expected_difference=-1))
    assert bad.status_code == 400
    unknown = api_for(setup.admin).post("/api/studies/plan/", dict(body, surprise=1))
    assert unknown.status_code == 400
    researcher = make_user("planning-researcher", Role.RESEARCHER)
    assert api_for(researcher).post("/api/studies/plan/", body).status_code == 403


def test_the_plan_is_in_the_openapi_schema(admin_client_):
    schema = admin_client_.get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/studies/plan/"]["post"]
    assert "expected difference" in operation["description"]
    assert "200" in operation["responses"]


def test_a_closed_study_gives_the_variance_components(no_queue):
    closed_study(unblind=True, rater_prefix="old")
    setup = build_study(open_rating=False, rater_prefix="new")
    body = {"prompt_set": setup.study.prompt_set_id}
    plan = api_for(setup.admin).post("/api/studies/plan/", body, format="json").json()
    assert plan["components_source"] == "study" and plan["components_study"] is not None
    assert plan["components"] != {k: getattr(DEFAULT_COMPONENTS, k) for k in plan["components"]}


def test_the_study_form_and_a_draft_page_show_the_power(no_queue):
    setup = build_study(open_rating=False)
    client = client_for(setup.admin)
    page = client.get(setup.study.get_absolute_url()).content.decode()
    assert 'id="study-plan"' in page and "per category" in page and "from a prior" in page
    query = {
        "prompt_set": setup.study.prompt_set_id,
        "samples_per_prompt": 3,
        "raters_per_output": 3,
        "max_new_tokens": 100,
        "expected_difference": "1.5",
    }
    body = client.get(reverse("evaluation:study-estimate"), query, **HX).content.decode()
    assert 'name="expected_difference" value="1.5"' in body
    power = study_plan(categories=2, prompts_per_category=2, samples_per_prompt=3,
                       raters_per_output=3, effect=1.5).plan  # fmt: skip
    assert f'id="plan-overall-power">{power.overall_power:.2f}<' in body


def test_the_report_shows_achieved_power_per_category(no_queue):
    setup = closed_study(unblind=True)
    report = build_report(setup.study, blinded=False)
    fam = report.family("vt-base")
    assert fam.achieved.effect == 0.5
    assert all(row.power is not None and row.power.n_prompts == 2 for row in fam.rows)
    page = client_for(setup.admin).get(reverse("evaluation:study-results", args=[setup.study.pk]))
    html = page.content.decode()
    assert "Detectable (80%)" in html and "Power to detect a 0.50-point difference" in html


def test_a_pairwise_study_is_planned_by_win_rate_precision(no_queue):
    """The pairwise report has win rates with prompt-level intervals, not a paired t: its
    plan is the worst-case half-width over prompts (1.96·√(0.25/n)) and the prompts a
    target needs, in the API and in the study form."""
    setup = build_study(open_rating=False)  # 2 categories × 2 prompts
    body = {"prompt_set": setup.study.prompt_set_id, "mode": "pairwise", "samples_per_prompt": 2}
    response = api_for(setup.admin).post("/api/studies/plan/", body, format="json")
    assert response.status_code == 200, response.content
    plan = response.json()
    assert plan["mode"] == "pairwise" and "overall_power" not in plan
    assert plan["design"]["prompts"] == 4 and plan["design"]["prompts_per_category"] == 2
    assert plan["judgments_per_arm_pair"] == 4 * 2 * 3
    assert plan["win_rate_half_width"] == pytest.approx(1.959964 * 0.5 / 2, abs=1e-6)
    assert plan["per_category_win_rate_half_width"] == pytest.approx(1.959964 * 0.5 / 2**0.5)
    assert plan["prompts_for_target"] == 43  # ⌈(1.96 · 0.5 / 0.15)²⌉
    narrower = dict(body, target_half_width=0.05)
    assert (
        api_for(setup.admin).post("/api/studies/plan/", narrower).json()["prompts_for_target"]
        == 385
    )
    for bad in ({"target_half_width": 0}, {"mode": "ranking"}):
        refused = api_for(setup.admin).post("/api/studies/plan/", dict(body, **bad), format="json")
        assert refused.status_code == 400, bad
    scale = api_for(setup.admin).post("/api/studies/plan/", dict(body, mode="scale")).json()
    assert scale["mode"] == "scale" and "overall_power" in scale

    query = {"prompt_set": setup.study.prompt_set_id, "samples_per_prompt": 2,
             "raters_per_output": 3, "max_new_tokens": 100, "mode": "pairwise",
             "target_half_width": "0.1"}  # fmt: skip
    client = client_for(setup.admin)
    html = client.get(reverse("evaluation:study-estimate"), query, **HX).content.decode()
    assert 'id="plan-overall-half-width">±0.49<' in html
    assert 'id="plan-category-half-width">±0.69<' in html
    assert 'id="plan-prompts-for-target">97 prompts<' in html
    assert "plan-overall-power" not in html
