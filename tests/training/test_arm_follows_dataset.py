"""A fine-tune's arm follows its snapshot's dataset: the launch form preselects it and
changes it with the snapshot; any other arm needs an explicit confirmation, refused
otherwise (page and API), and is recorded on the job and its model versions."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from curation.services import sample_create, snapshot_create
from tests.factories import CategoryFactory, DatasetFactory, words
from training import services
from training.models import BaseModel, FineTuneJob, ModelVersion

pytestmark = pytest.mark.django_db

VT, CONTROL = ModelVersion.Arm.VALUES_TARGETED, ModelVersion.Arm.CONTROL
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _no_eager_tasks(settings, tmp_path):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"


def snapshot_of(kind: str, curator, name: str):
    dataset, category = DatasetFactory(name=name, kind=kind), CategoryFactory()
    for n in range(3):
        sample_create(
            dataset=dataset, category=category, question=f"{name} question {n}?",
            answer=words(50, f"a{n}"), user=curator, status="approved",
        )
    return snapshot_create(dataset=dataset, user=curator, label=kind)


@pytest.fixture
def values(curator):
    return snapshot_of("values_targeted", curator, "Values")


@pytest.fixture
def control(curator, values):  # taken after values, so it is the newest snapshot
    return snapshot_of("control", curator, "Control")


@pytest.fixture
def validation(curator):
    return snapshot_of("validation", curator, "Held out")


@pytest.fixture
def local_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    return services.base_model_create(
        name="Local tiny", kind=BaseModel.Kind.LOCAL_DIR, path=str(tmp_path),
        parameter_count=1_000_000,
    )


# --- the service ---------------------------------------------------------------------------


def test_the_arm_follows_the_snapshot_when_none_is_given(local_model, values, control):
    assert services.finetune_launch(base_model=local_model, snapshot=values).arm == VT
    job = services.finetune_launch(base_model=local_model, snapshot=control)
    assert (job.arm, job.arm_override) == (CONTROL, False)


def test_a_mismatched_arm_is_refused_without_confirmation(local_model, control):
    with pytest.raises(services.ArmMismatchError, match="so its model is the Control arm"):
        services.finetune_launch(base_model=local_model, snapshot=control, arm=VT)
    assert not FineTuneJob.objects.exists()


def test_a_confirmed_mismatch_is_recorded_on_the_job(local_model, control):
    job = services.finetune_launch(
        base_model=local_model, snapshot=control, arm=VT, allow_arm_mismatch=True
    )
    assert (job.arm, job.arm_override) == (VT, True)
    metadata = services.finetunes._version_metadata(job)
    assert (metadata["arm"], metadata["dataset_kind"], metadata["arm_override"]) == (
        VT, "control", True
    )


def test_a_validation_snapshot_trains_no_arm_unless_one_is_confirmed(local_model, validation):
    with pytest.raises(services.ArmMismatchError, match="trains neither arm"):
        services.finetune_launch(base_model=local_model, snapshot=validation)
    with pytest.raises(services.ArmMismatchError, match="trains neither arm"):
        services.finetune_launch(base_model=local_model, snapshot=validation, arm=CONTROL)
    job = services.finetune_launch(
        base_model=local_model, snapshot=validation, arm=CONTROL, allow_arm_mismatch=True
    )
    assert job.arm_override


def test_confirming_without_a_mismatch_records_no_override(local_model, values):
    job = services.finetune_launch(
        base_model=local_model, snapshot=values, arm=VT, allow_arm_mismatch=True
    )
    assert not job.arm_override


# --- the launch page -----------------------------------------------------------------------


def page(client, **params) -> str:
    return client.get(reverse("training:finetune-create"), params, **HX).content.decode()


def selected_arm(html: str) -> str:
    start = html.index('name="arm"')
    return html[start:html.index("</select>", start)].split('" selected>')[0].rsplit('"', 1)[1]


def test_the_page_preselects_the_newest_snapshots_arm(admin_client_, local_model, control):
    html = page(admin_client_)
    assert selected_arm(html) == CONTROL  # a fresh install's newest snapshot is control
    assert 'id="arm-follows">' in html and "<strong>Control</strong> arm" in html
    assert 'id="arm-mismatch" role="alert" hidden>' in html
    # The warning for the other arm is there for the script to show, without a reload.
    assert '<p data-arm-warning="values_targeted" hidden>' in html
    assert f'name="arm_snapshot" value="{control.pk}"' in html


def test_choosing_another_snapshot_moves_the_arm_with_it(
    admin_client_, local_model, values, control
):
    # The form reloads with the arm last chosen for the control snapshot.
    html = page(admin_client_, base_model=local_model.pk, snapshot=values.pk, arm=CONTROL,
                arm_snapshot=control.pk)
    assert selected_arm(html) == VT
    assert 'id="arm-mismatch" role="alert" hidden>' in html


def test_choosing_another_arm_for_the_same_snapshot_warns(
    admin_client_, local_model, values, control
):
    html = page(admin_client_, base_model=local_model.pk, snapshot=control.pk, arm=VT,
                arm_snapshot=control.pk)
    assert selected_arm(html) == VT  # kept: a deliberate choice …
    assert 'id="arm-mismatch" role="alert">' in html  # … flagged, with the confirmation box
    assert '<p data-arm-warning="values_targeted">' in html
    assert "would make a control model count as values-targeted" in html
    assert 'id="arm-follows" hidden>' in html
    assert 'name="allow_arm_mismatch"' in html


def form_data(base_model, snapshot, **overrides) -> dict:
    data = {
        "base_model": base_model.pk, "snapshot": snapshot.pk, "arm": VT, "method": "full",
        "epochs": 1, "learning_rate": "0.0001", "batch_size": 4, "grad_accum": 1,
        "max_seq_len": 256, "warmup_steps": 0, "seed": 0, "arm_snapshot": snapshot.pk,
    }
    return data | overrides


def test_launching_a_mismatch_is_refused_until_confirmed(admin_client_, local_model, control):
    url = reverse("training:finetune-create")
    response = admin_client_.post(url, form_data(local_model, control))
    assert response.status_code == 200
    html = response.content.decode()
    assert "so its model is the Control arm" in html and 'name="allow_arm_mismatch"' in html
    assert not FineTuneJob.objects.exists()

    response = admin_client_.post(url, form_data(local_model, control, allow_arm_mismatch="on"))
    job = FineTuneJob.objects.get()
    assert response["Location"] == job.get_absolute_url()
    assert (job.arm, job.arm_override) == (VT, True)
    detail = admin_client_.get(job.get_absolute_url()).content.decode()
    assert 'id="arm-override"' in detail and "trained on a control dataset" in detail


# --- the API -------------------------------------------------------------------------------


def post(client, data):
    return client.post("/api/finetunes/", json.dumps(data), content_type="application/json")


def test_api_refuses_a_mismatch_without_the_override_field(admin_client_, local_model, control):
    data = {"base_model": local_model.pk, "snapshot": control.pk, "arm": VT}
    response = post(admin_client_, data)
    assert response.status_code == 400
    assert "confirm the mismatch" in response.json()["detail"]
    assert not FineTuneJob.objects.exists()

    response = post(admin_client_, data | {"allow_arm_mismatch": True})
    assert response.status_code == 201
    body = response.json()
    assert (body["arm"], body["arm_override"], body["dataset_kind"]) == (VT, True, "control")


def test_api_arm_defaults_to_the_snapshots(admin_client_, local_model, control):
    response = post(admin_client_, {"base_model": local_model.pk, "snapshot": control.pk})
    assert response.status_code == 201
    assert (response.json()["arm"], response.json()["arm_override"]) == (CONTROL, False)
