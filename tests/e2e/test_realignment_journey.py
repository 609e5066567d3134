"""Issue 7's journey in headless Chromium with a real Celery worker: an admin opens a
fine-tune that tracked the persona projection per epoch, sees its plot, re-aligns the
resulting version from the browser and watches the run's plot appear without a reload."""

from __future__ import annotations

import os
import re
import time

import pytest

from evaluation.models import RealignmentRun
from tests.e2e.test_finetune_journey import (  # noqa: F401 (fixtures)
    snapshot,
    tiny_model,
)
from training import services
from training.models import FineTuneJob, JobStatus, ModelVersion

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUN_TIMEOUT_MS = 150_000


def wait_for_job(job_id: int, timeout: float = 120) -> FineTuneJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = FineTuneJob.objects.get(pk=job_id)
        if job.status in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}:
            return job
        time.sleep(0.5)
    raise AssertionError(f"fine-tune #{job_id} did not finish")


def test_admin_sees_the_persona_track_and_realigns_from_the_browser(
    celery_worker, new_page, login, admin_user, tiny_model, snapshot  # noqa: F811
):
    expect = pytest.importorskip("playwright.sync_api").expect
    job = services.finetune_launch(
        base_model=tiny_model, snapshot=snapshot, arm=ModelVersion.Arm.VALUES_TARGETED,
        hyperparameters={"epochs": 2, "batch_size": 2, "max_seq_len": 128},
        track_persona=True, user=admin_user,
    )  # fmt: skip
    job = wait_for_job(job.pk)
    assert job.status == JobStatus.SUCCEEDED, job.error

    page = new_page()
    login(page, admin_user)
    page.goto(job.get_absolute_url())
    track = page.locator("figure", has=page.locator("#persona-chart-title"))
    expect(track.locator("circle")).to_have_count(3)  # before training, after epochs 1 and 2
    expect(page.locator("table.persona-track tbody tr")).to_have_count(3)

    page.get_by_role("link", name="Re-align it").click()
    page.wait_for_url(re.compile(r"/evaluation/realignment/new/"))
    form = page.locator("form.stack")
    expect(form.locator("select[name=source_version] option:checked")).to_have_text(
        job.result.name
    )
    form.locator("input[name=name]").fill("Journey re-alignment")
    form.locator("input[name=steps]").fill("4")
    form.locator("input[name=eval_steps]").fill("0, 2, 4")
    form.locator("input[name=batch_size]").fill("2")
    form.get_by_role("button", name="Queue re-alignment").click()
    page.wait_for_url(re.compile(r"/evaluation/realignment/\d+/$"))
    run = RealignmentRun.objects.get()
    assert run.source_version == job.result and run.eval_steps == [0, 2, 4]

    page.evaluate("window.__stayedOnPage = true")  # gone if the page reloads
    progress = page.locator("#realignment-progress")
    status = progress.locator("#realignment-status")
    expect(status).to_have_text("Succeeded", timeout=RUN_TIMEOUT_MS)
    assert page.evaluate("window.__stayedOnPage") is True
    chart = progress.locator("figure", has=page.locator("#persona-shift-title"))
    expect(chart.locator("circle")).to_have_count(3)
    expect(progress.locator("table.realignment-points tbody tr")).to_have_count(3)
    expect(progress).not_to_have_attribute("hx-trigger", re.compile("every"))
    if shots := os.environ.get("PALMSWEB_SCREENSHOTS"):  # a folder, to look at the pages
        page.screenshot(path=f"{shots}/realignment.png", full_page=True)
        page.goto(job.get_absolute_url())
        page.screenshot(path=f"{shots}/persona-track.png", full_page=True)
