"""Local fine-tunes that continue from a version, stop after max_steps, save checkpoints
and track the misaligned-persona projection per epoch: service, job page and API."""

from __future__ import annotations

import pytest

from training import services
from training.models import BaseModel, FineTuneCheckpoint, FineTuneJob, JobStatus, ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def snapshot(benign_snapshot):
    return benign_snapshot


def launch_and_run(snapshot, base, **kwargs) -> FineTuneJob:
    hyperparameters = {"batch_size": 2, "max_seq_len": 128, "learning_rate": 1e-3}
    job = services.finetune_launch(
        base_model=base,
        snapshot=snapshot,
        arm=ModelVersion.Arm.VALUES_TARGETED,
        hyperparameters=hyperparameters | kwargs.pop("hyperparameters", {}),
        **kwargs,
    )
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    return job


def test_persona_is_tracked_from_the_start_and_after_every_epoch(artifacts, snapshot, tiny_base):
    job = launch_and_run(snapshot, tiny_base, hyperparameters={"epochs": 2}, track_persona=True)

    track = job.persona_track
    assert [(p["step"], p["epoch"]) for p in track] == [(0, 0.0), (2, 1.0), (4, 2.0)]
    assert all(isinstance(p["value"], float) for p in track)
    assert track[-1]["value"] != track[0]["value"], "training moved the activations"
    assert "persona projection at epoch 2" in job.log


def test_a_run_without_tracking_measures_nothing(artifacts, snapshot, tiny_base):
    job = launch_and_run(snapshot, tiny_base, hyperparameters={"epochs": 1})
    assert job.persona_track == []


def test_the_low_memory_setting_reaches_the_engine(artifacts, snapshot, tiny_base, settings):
    import json
    from pathlib import Path

    settings.FINETUNE_ACTIVATION_CHECKPOINTING = True
    job = launch_and_run(snapshot, tiny_base, hyperparameters={"epochs": 1})
    meta = json.loads((Path(job.result.path) / "palms_metadata.json").read_text())
    assert meta["hyperparameters"]["activation_checkpointing"] is True


def test_continuing_from_a_version_with_max_steps_and_checkpoints(artifacts, snapshot, tiny_base):
    first = launch_and_run(snapshot, tiny_base, hyperparameters={"epochs": 1})
    job = launch_and_run(
        snapshot,
        tiny_base,
        hyperparameters={"max_steps": 5},
        start_version=first.result,
        checkpoint_steps=[1, 3],
    )

    assert job.progress_done == job.progress_total == 5
    assert len(job.loss_history) == 5
    checkpoints = list(job.checkpoints.select_related("model_version"))
    assert [c.step for c in checkpoints] == [1, 3]
    from training.engine.loading import load_for_inference

    for checkpoint in checkpoints:
        version = checkpoint.model_version
        assert version.name.endswith(f"step {checkpoint.step}")
        assert version.metadata["checkpoint_step"] == checkpoint.step
        assert version.metadata["start_version_id"] == first.result_id
        load_for_inference(version.path)  # a complete model directory
    assert job.result.metadata["start_version_id"] == first.result_id
    assert "starting from" in job.log


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"checkpoint_steps": [0]}, "whole numbers from 1"),
        ({"checkpoint_steps": [9], "hyperparameters": {"max_steps": 5}}, "must not pass max_steps"),
        ({"checkpoint_steps": list(range(1, 30))}, "At most 20"),
        ({"hyperparameters": {"max_steps": 0}}, "max_steps must be between"),
    ],
)
def test_bad_checkpoint_settings_are_refused(snapshot, tiny_base, kwargs, message):
    with pytest.raises(services.TrainingError, match=message):
        services.finetune_launch(
            base_model=tiny_base, snapshot=snapshot, arm=ModelVersion.Arm.VALUES_TARGETED,
            **kwargs,
        )  # fmt: skip
    assert not FineTuneJob.objects.exists()


def test_a_start_version_of_another_model_is_refused(snapshot, tiny_base, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    other = services.base_model_create(
        name="Other", kind=BaseModel.Kind.LOCAL_DIR, path=str(tmp_path), parameter_count=10
    )
    with pytest.raises(services.TrainingError, match="is not a version of"):
        services.finetune_launch(
            base_model=tiny_base, snapshot=snapshot, arm=ModelVersion.Arm.VALUES_TARGETED,
            start_version=services.base_version(other),
        )  # fmt: skip


def test_remote_backends_refuse_local_only_extras(snapshot):
    remote = services.base_model_create(
        name="gpt", kind=BaseModel.Kind.OPENAI, model_id="gpt-4o-mini-2024-07-18"
    )
    with pytest.raises(services.TrainingError, match="need the local backend"):
        services.finetune_launch(
            base_model=remote, snapshot=snapshot, arm=ModelVersion.Arm.VALUES_TARGETED,
            track_persona=True,
        )  # fmt: skip


def test_job_page_plots_the_track_and_lists_checkpoints(
    artifacts, snapshot, tiny_base, admin_client_
):
    job = launch_and_run(
        snapshot, tiny_base, hyperparameters={"max_steps": 4}, track_persona=True,
        checkpoint_steps=[2],
    )  # fmt: skip
    page = admin_client_.get(job.get_absolute_url()).content.decode()
    assert "Misaligned-persona projection" in page
    assert 'id="persona-chart-title"' in page and page.count('<circle class="last"') >= 3
    assert FineTuneCheckpoint.objects.get(job=job).model_version.name in page
    assert f"/evaluation/realignment/new/?source_version={job.result_id}" in page


def test_the_api_launches_a_tracked_run_and_reports_its_track(
    artifacts, snapshot, tiny_base, admin_client_, django_capture_on_commit_callbacks
):
    response = admin_client_.post(
        "/api/finetunes/",
        {
            "base_model": tiny_base.pk, "snapshot": snapshot.pk, "arm": "values_targeted",
            "hyperparameters": {"max_steps": 2, "batch_size": 2, "max_seq_len": 128},
            "track_persona": True,
        },
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    job = FineTuneJob.objects.get()
    assert job.track_persona and job.hyperparameters["max_steps"] == 2
    services.finetune_execute(job.pk)
    detail = admin_client_.get(f"/api/finetunes/{job.pk}/").json()
    assert [p["step"] for p in detail["persona_track"]] == [0, 2]
