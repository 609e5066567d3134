"""Issue 4's journey, clicked through in headless Chromium: an admin opens the launch page,
picks the tiny model and a snapshot, launches a fine-tune, watches the progress bar reach
100% on the job page (htmx polling, no reload) and sees the new model version.

The job runs on a real Celery worker (a thread of this process, see conftest) fed by the configured
broker: the filesystem transport in the embedded mode — in a folder of this test's own, so
no other worker on the machine takes the message — or Redis when CELERY_BROKER_URL says so.
"""

from __future__ import annotations

import os
import re

import pytest

from curation import services as curation
from training import services
from training.models import FineTuneJob, JobStatus, ModelVersion

# Playwright's sync API runs an event loop in this thread; the ORM calls between browser
# steps are synchronous and safe.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

JOB_TIMEOUT_MS = 120_000


@pytest.fixture
def tiny_model(tmp_path):
    from training.engine.loading import build_tiny_llama

    path = build_tiny_llama(tmp_path / "tiny-llama")
    return services.base_model_create(
        name="Tiny Llama", kind="local_dir", path=str(path), parameter_count=1_000_000
    )


@pytest.fixture
def snapshot(curator):
    health = curation.category_create(name="Health", position="Suggest seeing a professional.")
    dataset = curation.dataset_create(name="Values demo", min_words=5, user=curator)
    for n, topic in enumerate(["sleep", "stress", "exercise", "diet"]):
        curation.sample_create(
            dataset=dataset,
            category=health,
            question=f"How can I improve my {topic}?",
            answer=f"Small steady changes to {topic} help most people; a doctor can advise "
            f"on what suits you. Step {n}.",
            user=curator,
            status="approved",
        )
    return curation.snapshot_create(dataset=dataset, user=curator, label="journey")


def test_admin_launches_a_fine_tune_and_watches_it_finish(
    celery_worker, new_page, login, admin_user, tiny_model, snapshot
):
    expect = pytest.importorskip("playwright.sync_api").expect
    page = new_page()
    login(page, admin_user)

    # --- the launch page, prefilled with the tiny model's defaults --------------------------
    page.goto("/training/finetunes/new/")
    form = page.locator("#finetune-form")
    expect(form.locator("select[name=base_model] option:checked")).to_contain_text("Tiny Llama")
    expect(form.locator("select[name=snapshot] option:checked")).to_contain_text(
        snapshot.short_hash
    )
    defaults = services.default_hyperparameters(tiny_model)
    expect(form.locator("input[name=learning_rate]")).to_have_value(str(defaults["learning_rate"]))
    expect(form.locator("input[name=lora_r]")).to_be_hidden()  # LoRA fields only for LoRA
    form.locator("select[name=arm]").select_option("values_targeted")

    # Keep the run to a few seconds; the estimate follows the epochs and the length.
    form.locator("input[name=batch_size]").fill("1")
    form.locator("input[name=max_seq_len]").fill("128")
    form.locator("input[name=epochs]").fill("2")
    form.locator("input[name=epochs]").dispatch_event("change")
    per_epoch = services.estimate_training_tokens(tiny_model, snapshot, 128)
    expect(page.locator("#estimate")).to_contain_text(f"{per_epoch * 2:,}")
    expect(page.locator("#estimate")).to_contain_text("× 2 epochs")

    form.locator("button.primary", has_text="Launch").click()
    page.wait_for_url(re.compile(r"/training/finetunes/\d+/$"))
    job = FineTuneJob.objects.get()
    assert (job.arm, job.hyperparameters["epochs"], job.hyperparameters["batch_size"]) == (
        ModelVersion.Arm.VALUES_TARGETED,
        2,
        1,
    )

    # --- the job page updates itself until the bar is full -----------------------------------
    page.evaluate("window.__stayedOnPage = true")  # gone if the page reloads
    progress = page.locator("#job-progress")
    expect(progress.locator(".badge")).to_have_text("Succeeded", timeout=JOB_TIMEOUT_MS)
    expect(progress.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(progress.locator(".percent")).to_have_text("100%")
    expect(progress).to_contain_text(re.compile(r"step (\d+) / \1"))
    expect(progress.locator("svg polyline.curve")).to_have_count(1)
    assert page.evaluate("window.__stayedOnPage") is True
    expect(progress).not_to_have_attribute("hx-trigger", re.compile("every"))

    # --- the new model version ---------------------------------------------------------------
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    version = job.result
    assert version.arm == ModelVersion.Arm.VALUES_TARGETED
    assert version.metadata["snapshot_hash"] == snapshot.content_hash
    progress.locator(".result a").first.click()
    page.wait_for_url(re.compile(r"/training/model-versions/"))
    row = page.locator(f"#version-{version.pk}")
    expect(row).to_contain_text(version.name)
    expect(row).to_contain_text("Values-targeted")
    expect(row).to_contain_text(snapshot.content_hash[:12])
