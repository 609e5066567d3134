"""A study may plan the day its rating closes; the hosted-shutdown warning then compares each
arm's model with that day instead of the next HOSTED_SHUTDOWN_WARNING_DAYS. A date in the
past is refused (form and API, nothing changed); non-admins still learn no arm."""

from __future__ import annotations

import datetime

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from evaluation.models import Study
from palmsweb.roles import Role
from tests.conftest import client_for, make_user
from tests.evaluation.conftest import build_study, make_prompt_set
from tests.evaluation.test_shutdown_warnings import (
    hosted,  # noqa: F401  (the fixture)
    page,
    study_api,
)
from tests.evaluation.test_views import study_form_data

pytestmark = pytest.mark.django_db

# gpt-4o-mini and its fine-tunes shut down on 2027-01-14 (HOSTED_PROVIDER_DATES).


def plan_close(study: Study, day: str) -> None:
    Study.objects.filter(pk=study.pk).update(rating_closes_on=datetime.date.fromisoformat(day))


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_shutdown_before_the_planned_close_warns_beyond_the_default_window(no_queue, hosted):  # noqa: F811  (the fixture)
    setup = hosted(build_study(), today="2026-12-01")  # 44 days left: outside the 30 days
    assert study_api(setup.admin, setup.study)["shutdown_warnings"] == []
    plan_close(setup.study, "2027-02-01")
    (warning,) = study_api(setup.admin, setup.study)["shutdown_warnings"]
    assert warning["arm"] == "values_targeted" and warning["days_left"] == 44
    assert "before rating closes on 2027-02-01" in warning["message"]
    text = page(client_for(setup.admin), setup.study)
    assert 'id="shutdown-warnings"' in text and "planned for 2027-02-01" in text


def test_a_shutdown_after_the_planned_close_does_not_warn(no_queue, hosted):  # noqa: F811  (the fixture)
    setup = hosted(build_study(), today="2027-01-01")  # 13 days left: inside the 30 days
    assert len(study_api(setup.admin, setup.study)["shutdown_warnings"]) == 1
    plan_close(setup.study, "2027-01-10")  # rating is over before the model goes
    assert study_api(setup.admin, setup.study)["shutdown_warnings"] == []
    plan_close(setup.study, "2027-01-14")  # the day it shuts down still counts
    assert len(study_api(setup.admin, setup.study)["shutdown_warnings"]) == 1


def test_a_study_past_its_planned_close_falls_back_to_the_window(no_queue, hosted):  # noqa: F811  (the fixture)
    setup = hosted(build_study(), today="2027-01-01")
    plan_close(setup.study, "2026-12-20")  # running late
    (warning,) = study_api(setup.admin, setup.study)["shutdown_warnings"]
    assert "before rating closes" not in warning["message"]


def test_non_admins_still_learn_no_arm_with_a_planned_close(no_queue, hosted):  # noqa: F811  (the fixture)
    setup = hosted(build_study(), today="2026-12-01")
    plan_close(setup.study, "2027-02-01")
    researcher = make_user("close-researcher", Role.RESEARCHER)
    (warning,) = study_api(researcher, setup.study)["shutdown_warnings"]
    assert warning["message"].startswith("A model in this study shuts down on 2027-01-14")
    assert (warning["arm"], warning["size_tag"], warning["model_version"]) == (None, None, None)
    assert setup.versions["values_targeted"].name not in page(client_for(researcher), setup.study)


def api_body(setup, **fields) -> dict:
    return {
        "name": "Planned study",
        "prompt_set": setup.study.prompt_set_id,
        "arms": [{"arm": "base", "model_version": setup.versions["base"].pk}],
        **fields,
    }


def test_the_api_takes_a_planned_close_and_refuses_one_in_the_past(no_queue, settings):
    settings.HOSTED_DATES_TODAY = "2026-12-01"
    setup = build_study(open_rating=False)
    api = api_for(setup.admin)
    before = Study.objects.count()
    refused = api.post("/api/studies/", api_body(setup, rating_closes_on="2026-11-30"), "json")
    assert refused.status_code == 400 and "in the past" in refused.json()["detail"]
    assert Study.objects.count() == before
    garbled = api.post("/api/studies/", api_body(setup, rating_closes_on="soon"), "json")
    assert garbled.status_code == 400 and Study.objects.count() == before
    created = api.post("/api/studies/", api_body(setup, rating_closes_on="2026-12-01"), "json")
    assert created.status_code == 201 and created.json()["rating_closes_on"] == "2026-12-01"
    url = f"/api/studies/{created.json()['id']}/"
    kept = api.patch(url, {"samples_per_prompt": 2}, format="json")
    assert kept.status_code == 200 and kept.json()["rating_closes_on"] == "2026-12-01"
    settings.HOSTED_DATES_TODAY = "2026-12-05"  # the date has passed: kept, not re-refused
    assert api.patch(url, {"samples_per_prompt": 1}, format="json").status_code == 200
    moved = api.patch(url, {"rating_closes_on": "2026-12-04"}, format="json")
    assert moved.status_code == 400
    assert Study.objects.get(pk=created.json()["id"]).rating_closes_on == datetime.date(2026, 12, 1)
    cleared = api.patch(url, {"rating_closes_on": None}, format="json")
    assert cleared.status_code == 200 and cleared.json()["rating_closes_on"] is None


def test_the_form_takes_a_planned_close_and_refuses_one_in_the_past(no_queue, settings):
    settings.HOSTED_DATES_TODAY = "2026-12-01"
    setup = build_study(open_rating=False)
    client = client_for(setup.admin)
    create = reverse("evaluation:study-create")
    assert 'name="rating_closes_on"' in client.get(create).content.decode()
    data = study_form_data(setup, make_prompt_set())
    before = Study.objects.count()
    refused = client.post(create, data | {"rating_closes_on": "2026-11-01"})
    assert refused.status_code == 400 and "in the past" in refused.content.decode()
    assert Study.objects.count() == before
    response = client.post(create, data | {"rating_closes_on": "2027-03-01"})
    study = Study.objects.latest("pk")
    assert response.status_code == 302 and study.rating_closes_on == datetime.date(2027, 3, 1)
    edit = client.get(reverse("evaluation:study-edit", args=[study.pk])).content.decode()
    assert 'value="2027-03-01"' in edit


def test_a_running_study_moves_its_planned_close_and_keeps_it_on_other_edits(no_queue, settings):
    settings.HOSTED_DATES_TODAY = "2026-12-01"
    setup = build_study()  # rating
    api, url = api_for(setup.admin), f"/api/studies/{setup.study.pk}/"
    assert api.patch(url, {"rating_closes_on": "2026-11-01"}, format="json").status_code == 400
    moved = api.patch(url, {"rating_closes_on": "2027-02-01"}, format="json")
    assert moved.status_code == 200 and moved.json()["rating_closes_on"] == "2027-02-01"
    kept = api.patch(url, {"rubric": ["a", "b", "c", "d", "e"]}, format="json")
    assert kept.json()["rating_closes_on"] == "2027-02-01"
    client = client_for(setup.admin)
    edit = reverse("evaluation:study-edit", args=[setup.study.pk])
    assert 'value="2027-02-01"' in client.get(edit).content.decode()
    data = {f"rubric_{n}": f"anchor {n}" for n in range(1, 6)}
    data |= {"raters": [r.pk for r in setup.raters], "rating_closes_on": "2027-03-01"}
    assert client.post(edit, data).status_code == 302
    assert Study.objects.get(pk=setup.study.pk).rating_closes_on == datetime.date(2027, 3, 1)
