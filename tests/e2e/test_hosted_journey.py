"""Issue 17's journey, clicked through in headless Chromium against the local fake Together
AI: an admin registers a Together model (the key as a variable's name), launches a LoRA
fine-tune, watches the job page mirror Together's status and loss without a reload, samples
the fine-tuned model through Together's OpenAI-compatible endpoint, and downloads the exit
kit. The worker is a real Celery worker (see conftest); the 30-second poller is the beat task,
called here when the fake Together has moved the job on."""

from __future__ import annotations

import json
import os
import re
import zipfile

import pytest

from curation import services as curation
from tests.e2e.conftest import download_exit_kit
from tests.fake_together import fake_together, reply_tag  # noqa: F401  (the fixture)
from training import tasks
from training.models import BaseModel, FineTuneJob, JobStatus

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # ORM calls between browser steps

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LLAMA = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
WAIT_MS = 60_000


@pytest.fixture
def snapshot(curator):
    honesty = curation.category_create(name="Honesty", position="Tell the truth kindly.")
    dataset = curation.dataset_create(name="Values, hosted", min_words=5, user=curator)
    for n, topic in enumerate(["a gift", "a haircut", "a poem", "a plan"]):
        curation.sample_create(
            dataset=dataset, category=honesty, question=f"Should I praise {topic} I dislike?",
            answer=f"Say what you honestly like about {topic}, and be kind. Case {n}.",
            user=curator, status="approved",
        )  # fmt: skip
    return curation.snapshot_create(dataset=dataset, user=curator, label="hosted")


def test_admin_runs_the_loop_on_a_together_model(
    celery_worker,
    new_page,
    login,
    admin_user,
    snapshot,
    fake_together,  # noqa: F811  (the fixture)
    monkeypatch,
    tmp_path,
):
    expect = pytest.importorskip("playwright.sync_api").expect
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-secret")
    fake_together.api_key = "tg-secret"
    page = new_page()
    login(page, admin_user)

    # --- register the Together model ---------------------------------------------------------
    page.goto("/training/base-models/new/")
    form = page.locator("#basemodel-form")
    form.locator("input[name=name]").fill("Llama 3.1 8B at Together")
    form.locator("select[name=kind]").select_option("together")
    expect(form.locator("input[name=path]")).to_be_hidden()
    form.locator("input[name=model_id]").fill(LLAMA)
    form.locator("input[name=base_url]").fill(fake_together.base_url)
    form.locator("button.primary", has_text="Register").click()
    page.wait_for_url(re.compile(r"/training/base-models/$"))
    expect(page.locator("table")).to_contain_text("$TOGETHER_API_KEY")
    base = BaseModel.objects.get(kind="together")

    # --- launch a LoRA fine-tune ---------------------------------------------------------------
    page.goto(f"/training/finetunes/new/?base_model={base.pk}&method=lora")
    form = page.locator("#finetune-form")
    expect(form.locator("select[name=base_model] option:checked")).to_contain_text("Together")
    expect(form.locator("select[name=method] option:checked")).to_contain_text("LoRA")
    form.locator("select[name=arm]").select_option("values_targeted")
    form.locator("button.primary", has_text="Launch").click()
    page.wait_for_url(re.compile(r"/training/finetunes/\d+/$"))
    job = FineTuneJob.objects.get()
    progress = page.locator("#job-progress")
    expect(progress).to_contain_text("created Together AI job", timeout=WAIT_MS)
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.remote_job_id in fake_together.jobs

    # --- the page mirrors Together without a reload ----------------------------------------
    page.evaluate("window.__stayedOnPage = true")
    fake_together.advance(job.remote_job_id, "running", seconds_remaining=240,
                          events=[{"type": "training_start", "message": "Training started"}],
                          metrics=[{"train/global_step": 1, "train/loss": 2.2},
                                   {"train/global_step": 2, "train/loss": 1.7}])  # fmt: skip
    tasks.poll_openai_jobs()
    expect(progress).to_contain_text("Together AI reports the job running", timeout=WAIT_MS)
    expect(progress.locator("svg polyline.curve")).to_have_count(1)
    fake_together.advance(
        job.remote_job_id, "completed", events=[{"type": "job_complete", "message": "Job finished"}]
    )
    tasks.poll_openai_jobs()
    expect(progress.locator(".badge")).to_have_text("Succeeded", timeout=WAIT_MS)
    assert page.evaluate("window.__stayedOnPage") is True
    job.refresh_from_db()
    model_id = job.result.remote_model_id

    # --- sample the fine-tuned model -------------------------------------------------------
    progress.get_by_role("link", name="Sample from it").click()
    page.wait_for_url(re.compile(r"/training/sampling/new/"))
    sampling = page.locator("#sampling-form")
    sampling.locator("textarea[name=prompts]").fill("Should I tell my friend a hard truth?")
    sampling.locator("input[name=n_samples]").fill("2")
    sampling.locator("button.primary").click()
    page.wait_for_url(re.compile(r"/training/sampling/\d+/$"))
    expect(page.locator("main")).to_contain_text(f"({reply_tag(model_id)}) to", timeout=WAIT_MS)

    # --- the exit kit --------------------------------------------------------------------------
    kit = download_exit_kit(page, job, tmp_path / "kit.zip", timeout_ms=WAIT_MS)
    with zipfile.ZipFile(kit) as zf:
        rows = zf.read(f"finetune-{job.pk}/outputs.jsonl").decode().splitlines()
    assert len(rows) == 2 and f"({reply_tag(model_id)})" in json.loads(rows[0])["text"]
