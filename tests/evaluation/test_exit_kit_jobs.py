"""The exit kit is written by a background job on the default queue, as exports are: the
request records it and returns; the worker writes the zip once (a task delivered twice
does nothing more); the page and the API show its phase and download it when it is ready.
What it covers: hosted fine-tunes, and hosted models sampled as is (a base arm on plain
gpt-4o-mini) with their studies; what a blinded or open study's bundle leaves out it says."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from evaluation import tasks
from evaluation.models import ExitKitRun
from evaluation.report import exit_kit_jobs
from tests.conftest import queue_of
from tests.evaluation.conftest import build_study, no_queue  # noqa: F401  (the fixture)
from tests.evaluation.test_report import closed_study
from tests.training.test_hosted_exit_kit import hosted_job, read
from training import services
from training.models import BaseModel, FineTuneJob, Generation, ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def artifacts(tmp_path, settings, no_queue):  # noqa: F811  (the fixture)
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"


def queue_kit(client, django_capture_on_commit_callbacks, monkeypatch, data=None):
    """POST the page's form; the task the commit sends is recorded with its queue."""
    sent = []
    monkeypatch.setattr(
        tasks.run_exit_kit,
        "apply_async",
        lambda args=None, kwargs=None, **options: sent.append(
            (args, queue_of(tasks.run_exit_kit, options))
        ),
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("evaluation:exit-kits"), data or {})
    return response, sent


def test_the_page_queues_the_kit_and_the_worker_writes_it_once(
    admin_client_, django_capture_on_commit_callbacks, monkeypatch
):
    setup = closed_study(unblind=True)
    job = hosted_job(setup.versions["values_targeted"])
    response, sent = queue_kit(admin_client_, django_capture_on_commit_callbacks, monkeypatch)
    run = ExitKitRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("evaluation:exit-kits")
    assert sent == [((run.pk,), "default")] and run.status == "queued" and not run.path
    listing = admin_client_.get(reverse("evaluation:exit-kits"), HTTP_HX_REQUEST="true")
    assert b'id="kits"' in listing.content and b"<html" not in listing.content
    assert b'hx-trigger="every 2s"' in listing.content
    assert b"waiting for a worker" in listing.content
    tasks.run_exit_kit.apply(args=(run.pk,))
    run.refresh_from_db()
    assert run.status == "succeeded" and run.finetunes == 1 and run.studies == 1
    assert run.outputs == Generation.objects.filter(model_version=job.result).count()
    assert Path(run.path).is_relative_to(exit_kit_jobs.kit_dir())
    tasks.run_exit_kit.apply(args=(run.pk,))  # delivered twice: written once
    assert ExitKitRun.objects.get(pk=run.pk).finished_at == run.finished_at
    page = admin_client_.get(reverse("evaluation:exit-kits")).content.decode()
    download_url = reverse("evaluation:exit-kit-download", args=[run.pk])
    assert download_url in page and "hx-trigger" not in page
    download = admin_client_.get(download_url)
    body = b"".join(download.streaming_content)
    assert hashlib.sha256(body).hexdigest() == run.sha256 == download["X-Checksum-SHA256"]
    assert f"finetune-{job.pk}/job.json" in zipfile.ZipFile(io.BytesIO(body)).namelist()


def test_the_api_queues_polls_and_downloads_the_kit(admin_client_):
    setup = closed_study(unblind=True)
    hosted_job(setup.versions["values_targeted"])
    created = admin_client_.post("/api/exit-kits/", {}, content_type="application/json")
    assert created.status_code == 202
    kit = created.json()
    assert (kit["status"], kit["download"], kit["finetunes_requested"]) == ("queued", None, [])
    early = admin_client_.get(f"/api/exit-kits/{kit['id']}/download/")
    assert early.status_code == 409 and "queued" in early.json()["detail"]
    exit_kit_jobs.exit_kit_execute(kit["id"])
    done = admin_client_.get(f"/api/exit-kits/{kit['id']}/").json()
    assert done["status"] == "succeeded" and done["download"].endswith("/download/")
    assert admin_client_.get("/api/exit-kits/").json()["results"][0]["id"] == kit["id"]
    body = b"".join(admin_client_.get(done["download"]).streaming_content)
    assert hashlib.sha256(body).hexdigest() == done["sha256"]


def test_a_kit_that_cannot_be_written_fails_with_a_reason(admin_client_):
    setup = closed_study(unblind=True)
    job = hosted_job(setup.versions["values_targeted"])
    run = exit_kit_jobs.exit_kit_create(job_ids=[job.pk])
    FineTuneJob.objects.filter(pk=job.pk).delete()  # gone before a worker got to it
    run = exit_kit_jobs.exit_kit_execute(run.pk)
    assert run.status == "failed" and "no hosted fine-tune" in run.error
    assert admin_client_.get(f"/api/exit-kits/{run.pk}/download/").status_code == 409
    page = reverse("evaluation:exit-kit-download", args=[run.pk])
    assert admin_client_.get(page).status_code == 404


def test_a_kit_whose_worker_died_is_swept(settings):
    stale = timezone.now() - timedelta(seconds=exit_kit_jobs.STALE_SECONDS + 60)
    dead = ExitKitRun.objects.create(status="running", progress_at=stale)
    alive = ExitKitRun.objects.create(status="running", progress_at=timezone.now())
    assert tasks.sweep_stale_exports() == 1
    dead.refresh_from_db(), alive.refresh_from_db()
    assert dead.status == "failed" and "worker stopped" in dead.error
    assert alive.status == "running"


# --- what the kit covers ----------------------------------------------------------------------


def hosted_base_arm(setup) -> ModelVersion:
    """Make the study's base arm plain gpt-4o-mini at OpenAI (no fine-tune made it)."""
    openai = services.base_model_create(name="GPT-4o mini", kind="openai", model_id="gpt-4o-mini")
    ModelVersion.objects.filter(base_model=openai).delete()  # its own, unused: one per base
    version = setup.versions["base"]
    ModelVersion.objects.filter(pk=version.pk).update(base_model=openai)
    return ModelVersion.objects.get(pk=version.pk)


def test_a_study_whose_hosted_arm_is_a_base_model_gets_its_bundle(tmp_path):
    setup = closed_study(unblind=True)
    version = hosted_base_arm(setup)
    kit = tmp_path / "kit.zip"
    call_command("hosted_exit_kit", "--output", str(kit), stdout=io.StringIO())
    files = read(kit)
    manifest = json.loads(files["exit-kit.json"])
    assert manifest["finetunes"] == []
    assert manifest["model_versions"][0]["model_version"] == version.pk
    assert manifest["model_versions"][0]["remote_model_id"] == "gpt-4o-mini"
    assert [s["study"] for s in manifest["studies"]] == [setup.study.pk]
    folder = f"model-version-{version.pk}/"
    spec = json.loads(files[folder + "version.json"])
    assert spec["shutdown_date"] == "2027-01-14" and spec["base_model"]["kind"] == "openai"
    rows = [json.loads(x) for x in files[folder + "outputs.jsonl"].decode().splitlines()]
    assert len(rows) == Generation.objects.filter(model_version=version).count() > 0
    assert all(use["ratings"] for row in rows for use in row["studies"])
    assert f"studies/study-{setup.study.pk}.zip" in files
    out = io.StringIO()
    call_command("replay_report", str(kit), stdout=out)
    assert "none differ" in out.getvalue()


def test_a_filter_on_fine_tunes_leaves_base_arms_out_and_a_base_model_keeps_its_own(tmp_path):
    setup = closed_study(unblind=True)
    version = hosted_base_arm(setup)
    job = hosted_job(setup.versions["values_targeted"])
    one = tmp_path / "one.zip"
    call_command("hosted_exit_kit", "--finetune", str(job.pk), "--output", str(one),
                 stdout=io.StringIO())  # fmt: skip
    assert json.loads(read(one)["exit-kit.json"])["model_versions"] == []
    own = tmp_path / "own.zip"
    call_command("hosted_exit_kit", "--base-model", str(version.base_model_id), "--output",
                 str(own), stdout=io.StringIO())  # fmt: skip
    manifest = json.loads(read(own)["exit-kit.json"])
    assert manifest["finetunes"] == []  # the fine-tune is Together's, not this base model's
    assert [v["model_version"] for v in manifest["model_versions"]] == [version.pk]


def test_a_closed_blinded_study_is_bundled_without_arms_and_the_kit_says_so(tmp_path):
    setup = closed_study(unblind=False)
    hosted_job(setup.versions["values_targeted"])
    kit = tmp_path / "kit.zip"
    call_command("hosted_exit_kit", "--output", str(kit), stdout=io.StringIO())
    files = read(kit)
    (study,) = json.loads(files["exit-kit.json"])["studies"]
    assert study["includes_arms"] is False and "not unblinded" in study["note"]
    readme = files["README.txt"].decode()
    assert f"study {setup.study.pk} ({setup.study.name}): Closed but not unblinded" in readme
    assert "Unblind it and write the kit again" in readme and "replay_report" in readme
    bundle = zipfile.ZipFile(io.BytesIO(files[f"studies/study-{setup.study.pk}.zip"]))
    ratings = next(n for n in bundle.namelist() if n.endswith("ratings.csv"))
    assert b"model_version" not in bundle.read(ratings).splitlines()[0]


# --- the buttons ------------------------------------------------------------------------------


def test_the_fine_tune_and_base_model_pages_write_the_kit_of_every_hosted_model(
    admin_client_, researcher_client, monkeypatch
):
    setup = closed_study(unblind=True)
    hosted_job(setup.versions["values_targeted"])
    action = f'action="{reverse("evaluation:exit-kits")}"'
    for name in ("training:finetune-list", "training:basemodel-list"):
        page = admin_client_.get(reverse(name)).content.decode()
        assert 'id="exit-kit-all"' in page and action in page, name
        assert 'id="exit-kit-all"' not in researcher_client.get(reverse(name)).content.decode()
    admin_client_.post(reverse("evaluation:exit-kits"), {})
    run = ExitKitRun.objects.get()
    assert (run.finetune_ids, run.base_model_id, run.scope) == ([], None, "every hosted model")
    exit_kit_jobs.exit_kit_execute(run.pk)
    assert ExitKitRun.objects.get(pk=run.pk).finetunes == 1
    # One button per hosted base model, as the provider list (PROVIDERS) says which are.
    bases = reverse("training:basemodel-list")
    assert admin_client_.get(bases).content.decode().count('class="small exit-kit-base"') == 1
    monkeypatch.setattr(services, "HOSTED_KINDS", services.HOSTED_KINDS | {"local_dir"})
    local_rows = BaseModel.objects.filter(kind="local_dir").count()
    page = admin_client_.get(bases).content.decode()
    assert page.count('class="small exit-kit-base"') == 1 + local_rows
