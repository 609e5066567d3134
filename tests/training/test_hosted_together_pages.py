"""An admin runs the PALMS loop on a Together-hosted model from the browser's pages (the
HTTP client drives them as a browser would, without JavaScript), against the local fake
Together: register the model, launch a LoRA fine-tune, watch it mirrored, sample the
result, download the exit kit. The workers' steps are the Celery tasks, run in-process."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.urls import reverse

from curation.services import sample_create, snapshot_create
from evaluation.models import ExitKitRun
from evaluation.report.exit_kit_jobs import exit_kit_execute
from tests.conftest import client_for
from tests.factories import CategoryFactory, DatasetFactory, words
from tests.fake_together import fake_together, reply_tag  # noqa: F401  (the fixture)
from training import tasks
from training.models import BaseModel, FineTuneJob, JobStatus, SamplingJob

pytestmark = pytest.mark.django_db
LLAMA = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"


def test_an_admin_runs_the_loop_on_a_together_model_from_the_pages(
    fake_together,  # noqa: F811  (the fixture)
    monkeypatch,
    admin_user,
    no_training_queue,
):
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-secret")
    fake_together.api_key = "tg-secret"
    browser = client_for(admin_user)

    # Register the Together model: the key is a variable's name, filled in for us.
    response = browser.post(reverse("training:basemodel-create"), {
        "name": "Llama 3.1 8B at Together", "kind": "together", "model_id": LLAMA,
        "base_url": fake_together.base_url, "api_key_env": "", "parameter_count": 8_000_000_000,
    })  # fmt: skip
    assert response.status_code == 302
    base = BaseModel.objects.get(kind="together")
    assert base.api_key_env == "TOGETHER_API_KEY"
    listing = browser.get(reverse("training:basemodel-list")).content.decode()
    assert "Together AI model id" in listing and "$TOGETHER_API_KEY" in listing
    assert "tg-secret" not in listing

    dataset, category = DatasetFactory(kind="values_targeted"), CategoryFactory()
    for n in range(5):
        sample_create(
            dataset=dataset,
            category=category,
            question=f"Question {n}?",
            answer=words(40, f"a{n}"),
            status="approved",
        )
    snapshot = snapshot_create(dataset=dataset)

    # Launch a LoRA fine-tune from the form; the worker uploads and creates the job.
    response = browser.post(reverse("training:finetune-create"), {
        "base_model": base.pk, "snapshot": snapshot.pk, "arm": "values_targeted",
        "arm_snapshot": snapshot.pk, "method": "lora", "epochs": 2, "learning_rate": 1e-4,
        "batch_size": 8, "grad_accum": 1, "max_seq_len": 1024, "warmup_steps": 0, "seed": 42,
        "lora_r": 16, "lora_alpha": 32,
    })  # fmt: skip
    job = FineTuneJob.objects.get()
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    tasks.run_finetune(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.backend == "together"

    # The beat task mirrors Together's status, events and losses onto the page.
    fake_together.advance(
        job.remote_job_id,
        "running",
        seconds_remaining=300,
        events=[{"type": "training_start", "message": "Training started"}],
        metrics=[
            {"train/global_step": 1, "train/loss": 2.4},
            {"train/global_step": 2, "train/loss": 1.9},
        ],
    )
    assert tasks.poll_openai_jobs() == 1
    page = browser.get(job.get_absolute_url()).content.decode()
    assert "Together AI reports the job running" in page
    assert "training_start: Training started" in page
    assert f'<code id="remote-job-id">{job.remote_job_id}</code>' in page
    assert "Last loss 1.9000 at step 2" in page
    partial = browser.get(
        reverse("training:finetune-progress", args=[job.pk]), headers={"HX-Request": "true"}
    )
    assert partial.status_code == 200 and "hx-trigger" in partial.content.decode()

    fake_together.advance(
        job.remote_job_id,
        "completed",
        events=[{"type": "job_complete", "message": "Job finished"}],
        checkpoints=[
            {
                "checkpoint_type": "Final",
                "created_at": "2026-12-01T01:00:00Z",
                "path": "s3://ft/final",
                "step": 2,
                "object_name": "fakeuser/final",
            }
        ],
    )
    tasks.poll_openai_jobs()
    job.refresh_from_db()
    page = browser.get(job.get_absolute_url()).content.decode()
    assert job.result.name in page and "Sample from it" in page
    assert "Checkpoints at Together AI" in page and "<code>fakeuser/final</code>" in page

    # Sample the fine-tuned model through Together's OpenAI-compatible endpoint.
    response = browser.post(reverse("training:sampling-create"), {
        "prompts": "Should I tell my friend a hard truth?", "model_versions": [job.result.pk],
        "n_samples": 2, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64, "seed": 3,
    })  # fmt: skip
    sampling = SamplingJob.objects.get()
    assert response.status_code == 302
    tasks.run_sampling(sampling.pk)
    outputs = browser.get(sampling.get_absolute_url()).content.decode()
    tag = reply_tag(job.result.remote_model_id)
    assert f"A considered answer ({tag}) to: Should I tell my friend" in outputs

    # The exit kit, from the job page's button: queued, written by the worker, downloaded.
    browser.post(reverse("evaluation:exit-kits"), {"finetune": job.pk})
    run = exit_kit_execute(ExitKitRun.objects.get().pk)
    download = browser.get(reverse("evaluation:exit-kit-download", args=[run.pk]))
    kit = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content)))
    rows = kit.read(f"finetune-{job.pk}/outputs.jsonl").decode().splitlines()
    assert len(rows) == 2 and f"({tag})" in json.loads(rows[0])["text"]
    # Every request to Together carried the key read from the environment, never stored.
    assert all(
        r.headers.get("authorization") == "Bearer tg-secret"
        for r in fake_together.requests
        if r.path.startswith("/v1/")
    )
