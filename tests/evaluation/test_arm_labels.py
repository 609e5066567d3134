"""A study arm's label follows the data its model version was trained on; another label
needs an explicit confirmation, recorded on the study arm (service, form and API)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from evaluation.errors import EvaluationError
from evaluation.models import StudyArm
from evaluation.studies import lifecycle
from evaluation.studies.lifecycle import ArmSpec
from tests.conftest import client_for
from tests.evaluation.conftest import build_study, make_prompt_set, make_versions
from tests.evaluation.test_api import api_for
from tests.evaluation.test_views import study_form_data
from training.models import ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def versions():
    versions = make_versions()
    # A fine-tune on a control dataset that was labelled values-targeted at launch, with
    # the override recorded (as training.services writes it into the version's metadata).
    versions["relabelled"] = ModelVersion.objects.create(
        base_model=versions["base"].base_model, name="Relabelled control", arm="values_targeted",
        metadata={"dataset_kind": "control", "arm_override": True},
    )
    versions["held_out"] = ModelVersion.objects.create(
        base_model=versions["base"].base_model, name="Held-out tune", arm="control",
        metadata={"dataset_kind": "validation", "arm_override": True},
    )
    return versions


def create(arms):
    return lifecycle.study_create(name="Arms", prompt_set=make_prompt_set(), arms=arms)


def test_trained_arm_follows_the_recorded_dataset_kind(versions):
    assert versions["base"].trained_arm == "base"
    assert versions["control"].trained_arm == "control"  # no record: its own label
    assert versions["relabelled"].trained_arm == "control"
    assert versions["held_out"].trained_arm is None


def test_a_label_against_the_models_data_is_refused(versions):
    with pytest.raises(EvaluationError, match="is a Control model"):
        create([ArmSpec(arm="values_targeted", model_version=versions["control"])])
    with pytest.raises(EvaluationError, match="is a Base model"):
        create([ArmSpec(arm="control", model_version=versions["base"])])
    # The job's override does not carry into a study unseen.
    with pytest.raises(EvaluationError, match="Relabelled control is a Control model"):
        create([ArmSpec(arm="values_targeted", model_version=versions["relabelled"])])
    assert not StudyArm.objects.exists()


def test_a_blank_label_takes_the_models_arm(versions):
    study = create([ArmSpec(arm="", model_version=versions["relabelled"]),
                    ArmSpec(arm="", model_version=versions["base"])])
    assert [(a.arm, a.arm_override) for a in study.arms.all()] == [
        ("control", False), ("base", False)
    ]


def test_a_confirmed_label_is_recorded_on_the_study_arm(versions):
    study = create([
        ArmSpec(arm="values_targeted", model_version=versions["relabelled"],
                allow_arm_mismatch=True),
        ArmSpec(arm="control", model_version=versions["control"]),
    ])
    assert [(a.arm, a.arm_override) for a in study.arms.all()] == [
        ("values_targeted", True), ("control", False)
    ]


def test_a_validation_trained_model_needs_a_confirmed_label(versions):
    with pytest.raises(EvaluationError, match="gives it no arm"):
        create([ArmSpec(arm="", model_version=versions["held_out"])])
    with pytest.raises(EvaluationError, match="gives it no arm"):
        create([ArmSpec(arm="control", model_version=versions["held_out"])])
    study = create([ArmSpec(arm="control", model_version=versions["held_out"],
                            allow_arm_mismatch=True)])
    assert study.arms.get().arm_override


def test_the_study_form_refuses_then_records_a_confirmed_label(no_queue, versions):
    setup = build_study(open_rating=False)
    prompt_set = make_prompt_set()
    client = client_for(setup.admin)
    data = study_form_data(setup, prompt_set) | {
        "arms-1-model_version": versions["relabelled"].pk,
    }
    response = client.post(reverse("evaluation:study-create"), data)
    assert response.status_code == 400
    assert "Relabelled control is a Control model" in response.content.decode()
    response = client.post(
        reverse("evaluation:study-create"), data | {"arms-1-allow_arm_mismatch": "on"}
    )
    assert response.status_code == 302
    arm = StudyArm.objects.get(model_version=versions["relabelled"])
    assert (arm.arm, arm.arm_override) == ("values_targeted", True)


def test_the_api_refuses_then_records_a_confirmed_label(no_queue, versions):
    setup = build_study(open_rating=False)
    api = api_for(setup.admin)
    body = {
        "name": "API arms",
        "prompt_set": setup.study.prompt_set_id,
        "arms": [{"arm": "values_targeted", "model_version": versions["control"].pk},
                 {"model_version": versions["base"].pk}],
    }
    refused = api.post("/api/studies/", body, format="json")
    assert refused.status_code == 400
    assert "is a Control model" in str(refused.json())
    body["arms"][0]["allow_arm_mismatch"] = True
    created = api.post("/api/studies/", body, format="json")
    assert created.status_code == 201, created.json()
    arms = [(a["arm"], a["arm_override"]) for a in created.json()["arms"]]
    assert arms == [("values_targeted", True), ("base", False)]
