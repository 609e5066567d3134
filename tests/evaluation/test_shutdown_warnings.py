"""A study warns, on its page and in its API, when an arm's hosted model shuts down before
its rating can close: within HOSTED_SHUTDOWN_WARNING_DAYS (a study has no planned closing
date) or already. Only admins learn which arm, until the study is unblinded."""

from __future__ import annotations

import html

import pytest
from rest_framework.test import APIClient

from evaluation.studies import lifecycle
from tests.evaluation.conftest import build_study
from training import services
from training.models import ModelVersion

pytestmark = pytest.mark.django_db

FINE_TUNE = "ft:gpt-4o-mini-2024-07-18:acme:palms:abc123"


@pytest.fixture
def hosted(settings):
    """Make the values-targeted arm's model an OpenAI fine-tune of gpt-4o-mini (configured
    to shut down on 2027-01-14), and set the clock: ``hosted(study, today="2027-01-01")``."""

    def make(setup, *, today: str):
        settings.HOSTED_DATES_TODAY = today
        openai = services.base_model_create(name="GPT-4o mini", kind="openai",
                                            model_id="gpt-4o-mini")  # fmt: skip
        ModelVersion.objects.filter(pk=setup.versions["values_targeted"].pk).update(
            base_model=openai, remote_model_id=FINE_TUNE
        )
        return setup

    return make


def study_api(user, study) -> dict:
    client = APIClient()
    client.force_authenticate(user)
    return client.get(f"/api/studies/{study.pk}/").json()


def page(client, study) -> str:
    return html.unescape(client.get(study.get_absolute_url()).content.decode())


def test_a_draft_study_warns_admins_which_arm_shuts_down(no_queue, hosted):
    setup = hosted(build_study(open_rating=False), today="2027-01-01")
    admin = APIClient()
    admin.force_login(setup.admin)
    text = page(admin, setup.study)
    assert 'id="shutdown-warnings"' in text
    assert f"The values-targeted arm's model ({setup.versions['values_targeted'].name})" in text
    assert "shuts down on 2027-01-14 (in 13 days)" in text and "Let sampling finish" in text
    (warning,) = study_api(setup.admin, setup.study)["shutdown_warnings"]
    assert warning["arm"] == "values_targeted"
    assert warning["model_version"] == setup.versions["values_targeted"].pk
    assert (warning["shutdown_date"], warning["source"], warning["days_left"]) == (
        "2027-01-14", "configured", 13)


def test_no_warning_while_the_shutdown_is_further_away_than_the_warning_window(
    no_queue, hosted, settings
):
    setup = hosted(build_study(open_rating=False), today="2026-12-01")  # 44 days before
    admin = APIClient()
    admin.force_login(setup.admin)
    assert 'id="shutdown-warnings"' not in page(admin, setup.study)
    assert study_api(setup.admin, setup.study)["shutdown_warnings"] == []
    settings.HOSTED_SHUTDOWN_WARNING_DAYS = 60
    assert study_api(setup.admin, setup.study)["shutdown_warnings"][0]["days_left"] == 44


def test_a_researcher_is_warned_without_learning_which_arm(
    no_queue, hosted, researcher, researcher_client
):
    setup = hosted(build_study(), today="2027-01-10")
    text = page(researcher_client, setup.study)
    assert "A model in this study shuts down on 2027-01-14 (in 4 days)" in text
    assert "stay ratable" in text
    assert setup.versions["values_targeted"].name not in text and FINE_TUNE not in text
    (warning,) = study_api(researcher, setup.study)["shutdown_warnings"]
    assert warning["arm"] is warning["size_tag"] is warning["model_version"] is None
    assert "values-targeted" not in warning["message"]


def test_a_model_that_has_shut_down_must_be_replaced_before_opening(no_queue, hosted):
    setup = hosted(build_study(open_rating=False), today="2027-02-01")
    (warning,) = study_api(setup.admin, setup.study)["shutdown_warnings"]
    assert warning["days_left"] == -18
    assert "shut down on 2027-01-14" in warning["message"]
    assert "give that arm another model" in warning["message"]


def test_a_closed_study_does_not_warn(no_queue, hosted):
    setup = hosted(build_study(), today="2027-01-10")
    study = lifecycle.study_close(study=setup.study, user=setup.admin)
    assert study_api(setup.admin, study)["shutdown_warnings"] == []


def test_local_models_never_warn(no_queue, settings):
    settings.HOSTED_DATES_TODAY = "2030-01-01"
    setup = build_study(open_rating=False)
    assert study_api(setup.admin, setup.study)["shutdown_warnings"] == []
