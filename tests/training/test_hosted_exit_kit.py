"""The hosted exit kit (a zip that keeps a study reportable after the provider retires the
model, and that replay_report replays) and "retrain elsewhere" (the same snapshot and
hyperparameters on another provider or locally, linked to the original job)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from curation.services import sample_create, snapshot_create
from evaluation.models import ExitKitRun
from tests.conftest import client_for
from tests.evaluation.conftest import build_study, no_queue  # noqa: F401  (the fixture)
from tests.evaluation.test_report import closed_study
from tests.factories import CategoryFactory, DatasetFactory, words
from training import services
from training.models import BaseModel, FineTuneJob, Generation, JobStatus, ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def artifacts(tmp_path, settings, no_queue):  # noqa: F811  (the fixture)
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"


def snapshot():
    dataset, category = DatasetFactory(kind="values_targeted"), CategoryFactory()
    for n in range(3):
        sample_create(
            dataset=dataset,
            category=category,
            question=f"Question {n}?",
            answer=words(30, f"a{n}"),
            status="approved",
        )
    return snapshot_create(dataset=dataset)


def hosted_job(version: ModelVersion, **fields) -> FineTuneJob:
    """A succeeded Together fine-tune whose result is ``version``."""
    base = BaseModel.objects.create(
        name=f"together {version.pk}",
        kind="together",
        model_id="meta-llama/Llama-3-8b",
        base_url="https://api.together.xyz/v1",
        api_key_env="TOGETHER_API_KEY",
    )
    ModelVersion.objects.filter(pk=version.pk).update(remote_model_id="fakeuser/llama-palms")
    return FineTuneJob.objects.create(
        base_model=base, snapshot=snapshot(), arm=version.arm or "values_targeted",
        backend="together", method="lora", status=JobStatus.SUCCEEDED, result=version,
        hyperparameters={"epochs": 2, "learning_rate": 1e-4, "batch_size": 8, "seed": 5,
                         "lora_r": 8, "lora_alpha": 16},
        remote_job_id="ft-0001", remote_file_id="file-1", log="together info: job_complete",
        loss_history=[[1, 2.0], [2, 1.5]], **fields,
    )  # fmt: skip


def read(kit: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(kit) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_the_kit_holds_the_job_its_data_and_every_rated_output(tmp_path):
    setup = closed_study(unblind=True)
    version = setup.versions["values_targeted"]
    job = hosted_job(version)
    kit = tmp_path / "kit.zip"
    call_command("hosted_exit_kit", "--output", str(kit), stdout=io.StringIO())
    files = read(kit)
    folder = f"finetune-{job.pk}/"
    spec = json.loads(files[folder + "job.json"])
    assert spec["provider"] == "together" and spec["remote_job_id"] == "ft-0001"
    assert spec["hyperparameters"]["lora_r"] == 8
    assert spec["base_model"]["api_key_env"] == "TOGETHER_API_KEY"
    assert json.loads(files[folder + "metrics.json"])["loss_history"] == [[1, 2.0], [2, 1.5]]
    assert files[folder + "events.log"] == b"together info: job_complete"
    assert len(files[folder + "snapshot.jsonl"].decode().splitlines()) == 3
    assert json.loads(files[folder + "result.json"])["remote_model_id"] == "fakeuser/llama-palms"
    rows = [json.loads(line) for line in files[folder + "outputs.jsonl"].decode().splitlines()]
    assert len(rows) == Generation.objects.filter(model_version=version).count() > 0
    ratings = [r for row in rows for use in row["studies"] for r in use["ratings"]]
    assert ratings and all(r["rater"].startswith("R") for r in ratings)
    usernames = {rater.username for rater in setup.raters}
    assert not any(name.encode() in files[folder + "outputs.jsonl"] for name in usernames)
    manifest = json.loads(files["exit-kit.json"])
    assert manifest["studies"][0]["bundle"] == f"studies/study-{setup.study.pk}.zip"
    assert {f["name"] for f in manifest["files"]} | {"exit-kit.json"} == set(files)


def test_the_kit_replays_the_study_report(tmp_path):
    setup = closed_study(unblind=True)
    hosted_job(setup.versions["values_targeted"])
    kit = tmp_path / "kit.zip"
    call_command("hosted_exit_kit", "--output", str(kit), stdout=io.StringIO())
    out = io.StringIO()
    call_command("replay_report", str(kit), stdout=out)
    assert f"studies/study-{setup.study.pk}.zip:" in out.getvalue()
    assert "none differ" in out.getvalue()


def test_an_open_studys_outputs_come_without_ratings(tmp_path):
    setup = build_study()
    job = hosted_job(setup.versions["values_targeted"])
    kit = tmp_path / "kit.zip"
    call_command("hosted_exit_kit", "--output", str(kit), stdout=io.StringIO())
    files = read(kit)
    rows = [json.loads(x) for x in files[f"finetune-{job.pk}/outputs.jsonl"].splitlines()]
    assert rows and all(use["ratings"] is None for row in rows for use in row["studies"])
    manifest = json.loads(files["exit-kit.json"])
    assert manifest["studies"] == [] and manifest["open_studies"][0]["study"] == setup.study.pk
    out = io.StringIO()
    call_command("replay_report", str(kit), stdout=out)
    assert "nothing to replay" in out.getvalue()


def test_without_a_hosted_fine_tune_there_is_no_kit_and_a_reason(tmp_path, admin_client_):
    with pytest.raises(CommandError, match="no hosted fine-tune"):
        call_command("hosted_exit_kit", "--output", str(tmp_path / "k.zip"))
    response = admin_client_.post("/api/exit-kits/", {}, content_type="application/json")
    assert response.status_code == 400 and "no hosted fine-tune" in response.json()["detail"]
    page = admin_client_.post(reverse("evaluation:exit-kits"), {}, follow=True)
    assert "no hosted fine-tune" in page.content.decode()
    assert not (tmp_path / "k.zip").exists() and not ExitKitRun.objects.exists()


def test_admins_queue_the_kit_from_the_api_and_the_job_page(
    admin_client_, django_capture_on_commit_callbacks
):
    setup = closed_study(unblind=True)
    job = hosted_job(setup.versions["values_targeted"])
    with django_capture_on_commit_callbacks() as queued:
        response = admin_client_.post(
            "/api/exit-kits/", {"finetunes": [job.pk]}, content_type="application/json"
        )
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert len(queued) == 1  # the task goes to a worker once the request commits
    run = ExitKitRun.objects.get(pk=response.json()["id"])
    assert run.finetune_ids == [job.pk] and not run.path  # nothing written in the request
    page = admin_client_.get(job.get_absolute_url()).content.decode()
    assert page.count('id="exit-kit"') == 1 and page.count("Retrain elsewhere") == 1
    queued_page = admin_client_.post(reverse("evaluation:exit-kits"), {"finetune": job.pk})
    assert queued_page.status_code == 302
    assert queued_page["Location"] == reverse("evaluation:exit-kits")
    assert ExitKitRun.objects.filter(finetune_ids=[job.pk]).count() == 2
    refused = admin_client_.post(
        "/api/exit-kits/", {"finetunes": [job.pk], "extra": 1}, content_type="application/json"
    )
    assert refused.status_code == 400 and ExitKitRun.objects.count() == 2


# --- retrain elsewhere ------------------------------------------------------------------------


@pytest.fixture
def together_job():
    version = ModelVersion.objects.create(
        base_model=BaseModel.objects.create(name="seed", kind="local_dir", path="/x"),
        name="ft",
        arm="values_targeted",
    )
    return hosted_job(version)


def test_retraining_elsewhere_relaunches_the_same_snapshot_and_hyperparameters(together_job):
    local = services.base_model_register_default()
    new = services.finetune_retrain_elsewhere(job=together_job, base_model=local)
    assert new.retrained_from == together_job and new.backend == "local"
    assert new.snapshot == together_job.snapshot and new.arm == together_job.arm
    for name in ("epochs", "learning_rate", "batch_size", "seed", "lora_r", "lora_alpha"):
        assert new.hyperparameters[name] == together_job.hyperparameters[name]
    assert new.method == "lora"


def test_retraining_on_openai_takes_the_method_openai_runs(together_job):
    openai = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4.1-mini")
    snapshot_ten = together_job.snapshot
    for n in range(7):
        sample_create(
            dataset=snapshot_ten.dataset,
            category=CategoryFactory(),
            question=f"More {n}?",
            answer=words(30, f"m{n}"),
            status="approved",
        )
    FineTuneJob.objects.filter(pk=together_job.pk).update(
        snapshot=snapshot_create(dataset=snapshot_ten.dataset)
    )
    together_job.refresh_from_db()
    new = services.finetune_retrain_elsewhere(job=together_job, base_model=openai)
    assert (new.backend, new.method) == ("openai", "full")


def test_the_same_provider_is_not_elsewhere(together_job):
    again = services.base_model_create(name="other together", kind="together", model_id="m")
    with pytest.raises(services.TrainingError, match="not somewhere else"):
        services.finetune_retrain_elsewhere(job=together_job, base_model=again)
    assert not FineTuneJob.objects.filter(retrained_from=together_job).exists()


def test_retrain_from_the_page_and_the_api_links_the_jobs(together_job, admin_user):
    local = services.base_model_register_default()
    client = client_for(admin_user)
    response = client.post(
        reverse("training:finetune-retrain", args=[together_job.pk]), {"base_model": local.pk}
    )
    new = FineTuneJob.objects.get(retrained_from=together_job)
    assert response.status_code == 302 and response["Location"] == new.get_absolute_url()
    assert f"Fine-tune #{together_job.pk}" in client.get(new.get_absolute_url()).content.decode()
    assert 'id="retrained-as"' in client.get(together_job.get_absolute_url()).content.decode()
    api = client.post(
        f"/api/finetunes/{together_job.pk}/retrain/",
        {"base_model": together_job.base_model_id},
        content_type="application/json",
    )
    assert api.status_code == 400 and "not somewhere else" in api.json()["detail"]
    api = client.post(
        f"/api/finetunes/{together_job.pk}/retrain/",
        {"base_model": local.pk},
        content_type="application/json",
    )
    assert api.status_code == 201 and api.json()["retrained_from"] == together_job.pk
    assert FineTuneJob.objects.filter(retrained_from=together_job).count() == 2


def test_ids_no_column_holds_are_refused_or_name_nothing(admin_client_):
    too_big = 2**70
    response = admin_client_.post(
        "/api/exit-kits/", {"finetunes": [too_big]}, content_type="application/json"
    )
    assert response.status_code == 400
    page = admin_client_.post(reverse("evaluation:exit-kits"), {"finetune": str(too_big)})
    assert page.status_code == 302 and page["Location"] == reverse("evaluation:exit-kits")
    assert not ExitKitRun.objects.exists()


def test_retrain_refuses_a_base_model_id_no_column_holds(together_job, admin_user):
    response = client_for(admin_user).post(
        f"/api/finetunes/{together_job.pk}/retrain/",
        {"base_model": 2**70},
        content_type="application/json",
    )
    assert response.status_code == 400
