"""The exit kit keeps a hosted fine-tune's data exactly as the provider got it: the training
file as ``snapshot.jsonl`` and, for a job with validation, the validation file as
``validation.jsonl``, with the validation set-up in ``job.json``. A hosted DPO fine-tune's
page offers the kit too. Against the local fakes that speak each provider's protocol."""

from __future__ import annotations

import json
import zipfile

import pytest
from django.urls import reverse

from curation.models import Dataset
from evaluation.models import ExitKitRun
from evaluation.report.exit_kit import kit_scope, write_exit_kit
from tests.evaluation.conftest import no_queue  # noqa: F401  (the fixture)
from tests.fake_openai import fake_openai  # noqa: F401  (the fixture)
from tests.fake_together import fake_together  # noqa: F401  (the fixture)
from tests.training.test_hosted_validation import LLAMA, launch, snapshot_of
from training import services
from training.models import BaseModel, FineTuneJob, JobStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def together_base(fake_together, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-secret")
    return services.base_model_create(name="llama at together", kind="together",
                                      model_id=LLAMA, base_url=fake_together.base_url)  # fmt: skip


def kit_files(job: FineTuneJob, tmp_path) -> dict[str, bytes]:
    path = tmp_path / "kit.zip"
    write_exit_kit(kit_scope(job_ids=[job.pk]), path)
    with zipfile.ZipFile(path) as zf:
        prefix = f"finetune-{job.pk}/"
        return {n[len(prefix) :]: zf.read(n) for n in zf.namelist() if n.startswith(prefix)} | {
            "README.txt": zf.read("README.txt")
        }


def test_the_kit_holds_the_training_and_validation_files_as_uploaded(
    fake_together, together_base, django_capture_on_commit_callbacks, tmp_path  # noqa: F811
):
    job = launch(together_base, snapshot_of(8), django_capture_on_commit_callbacks,
                 method=FineTuneJob.Method.LORA,
                 hyperparameters={"validation_share": 0.25})  # fmt: skip
    assert job.status == JobStatus.RUNNING, job.error
    sent = fake_together.jobs[job.remote_job_id]["request"]
    files = kit_files(job, tmp_path)
    assert files["snapshot.jsonl"] == fake_together.files[sent["training_file"]]["content"]
    assert files["validation.jsonl"] == fake_together.files[sent["validation_file"]]["content"]
    assert len(files["snapshot.jsonl"].splitlines()) == 6  # 8 less the 2 held out
    spec = json.loads(files["job.json"])
    assert spec["validation_share"] == 0.25 and spec["validation_snapshot"] is None
    assert spec["held_out_items"] == job.held_out_items and len(job.held_out_items) == 2
    assert spec["validation_file"] == "validation.jsonl"
    assert "validation.jsonl (only for a job with validation" in files["README.txt"].decode()


def test_a_validation_snapshot_is_named_in_job_json(
    fake_openai, settings, django_capture_on_commit_callbacks, tmp_path  # noqa: F811
):
    settings.OPENAI_BASE_URL = fake_openai.base_url
    base = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4o-mini")
    held = snapshot_of(3, Dataset.Kind.VALIDATION, "held")
    job = launch(base, snapshot_of(10), django_capture_on_commit_callbacks,
                 validation_snapshot=held)  # fmt: skip
    body = fake_openai.jobs[job.remote_job_id]["request"]
    files = kit_files(job, tmp_path)
    assert files["snapshot.jsonl"] == fake_openai.files[body["training_file"]]["content"]
    assert files["validation.jsonl"] == fake_openai.files[body["validation_file"]]["content"]
    spec = json.loads(files["job.json"])
    assert spec["validation_snapshot"] == {
        "id": held.pk, "content_hash": held.content_hash, "samples": 3
    }  # fmt: skip
    assert spec["held_out_items"] == [] and spec["validation_share"] is None


def test_without_validation_there_is_no_validation_file(
    fake_together, together_base, django_capture_on_commit_callbacks, tmp_path  # noqa: F811
):
    job = launch(together_base, snapshot_of(4), django_capture_on_commit_callbacks,
                 method=FineTuneJob.Method.LORA)  # fmt: skip
    sent = fake_together.jobs[job.remote_job_id]["request"]
    files = kit_files(job, tmp_path)
    assert "validation.jsonl" not in files
    assert files["snapshot.jsonl"] == fake_together.files[sent["training_file"]]["content"]
    spec = json.loads(files["job.json"])
    assert spec["validation_file"] is None and spec["held_out_items"] == []


# --- a hosted DPO fine-tune --------------------------------------------------------------------

PAIRS = [{"prompt": f"Q{n}?", "chosen": f"kind {n}", "rejected": f"rude {n}"} for n in range(3)]


def dpo_job(base: BaseModel) -> FineTuneJob:
    return FineTuneJob.objects.create(
        base_model=base, objective=FineTuneJob.Objective.DPO, preference_pairs=PAIRS,
        preference_snapshot_hash="ab" * 32, preference_source="study 1", arm="values_targeted",
        backend=base.kind if base.kind == "together" else "local", method="lora",
        hyperparameters={"epochs": 1, "learning_rate": 1e-5, "batch_size": 8, "seed": 1,
                         "beta": 0.1, "lora_r": 8, "lora_alpha": 16},
        status=JobStatus.SUCCEEDED, remote_job_id="ft-dpo-1",
    )  # fmt: skip


def test_a_hosted_dpo_page_offers_the_exit_kit_but_not_retrain_elsewhere(
    together_base, admin_client_, no_queue, tmp_path  # noqa: F811
):
    job = dpo_job(together_base)
    page = admin_client_.get(job.get_absolute_url()).content.decode()
    assert page.count('id="exit-kit"') == 1 and 'id="dpo-retrain-note"' in page
    assert "Retrain elsewhere" not in page and 'name="base_model"' not in page
    response = admin_client_.post(reverse("evaluation:exit-kits"), {"finetune": job.pk})
    assert response.status_code == 302
    assert ExitKitRun.objects.get().finetune_ids == [job.pk]
    files = kit_files(job, tmp_path)  # the pairs as uploaded, in the provider's format
    lines = [json.loads(line) for line in files["snapshot.jsonl"].splitlines()]
    assert [line["preferred_output"][0]["content"] for line in lines] == ["kind 0", "kind 1",
                                                                         "kind 2"]  # fmt: skip
    assert "validation.jsonl" not in files


def test_a_local_dpo_page_has_neither(admin_client_):
    job = dpo_job(services.base_model_register_default())
    page = admin_client_.get(job.get_absolute_url()).content.decode()
    assert 'id="elsewhere"' not in page and 'id="exit-kit"' not in page
