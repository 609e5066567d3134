"""Issue 12, item 3 in headless Chromium: an admin sees what opening a study will cost,
opens it, and watches sampling on the study page — the phase ("batch 2 of 3"), outputs as
each batch lands, an ETA that counts down between updates — until the badge turns to
Rating and the log says so, without reloading the page.

Sampling runs on a real Celery worker (a thread of this process; see the fine-tune
journey) with the tiny model; its batches are made small and slow so a person could read
each phase."""

from __future__ import annotations

import re
import time

import pytest

from evaluation.models import Study
from evaluation.studies import lifecycle
from palmsweb.roles import Role
from tests.conftest import make_user
from tests.evaluation.conftest import make_prompt_set
from training import services as training

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TIMEOUT_MS = 90_000


@pytest.fixture
def slow_small_batches(monkeypatch):
    """Batches of 4 outputs, each followed by a pause: 12 outputs become 3 visible steps."""
    from training.engine import generation

    original = generation.generate_local

    def generate(*args, on_batch=None, **kwargs):
        def landed(batch):
            on_batch(batch)
            time.sleep(2.5)

        return original(*args, batch_size=4, on_batch=landed, **kwargs)

    monkeypatch.setattr(generation, "generate_local", generate)


@pytest.fixture
def draft_study(tmp_path, admin_user):
    from training.engine.loading import build_tiny_llama

    path = build_tiny_llama(tmp_path / "tiny-llama")
    base = training.base_model_create(
        name="Tiny Llama", kind="local_dir", path=str(path), parameter_count=1_000_000
    )
    raters = [make_user(f"rater{i}", Role.RATER) for i in range(2)]
    return lifecycle.study_create(
        name="Live study",
        prompt_set=make_prompt_set(n_categories=2, per_category=2),
        arms=[lifecycle.ArmSpec(arm="base", model_version=training.base_version(base))],
        raters=raters,
        samples_per_prompt=3,
        raters_per_output=2,
        max_new_tokens=8,
        user=admin_user,
    )


def test_an_admin_watches_a_study_sample_and_open_for_rating(
    celery_worker, slow_small_batches, new_page, login, admin_user, draft_study, screenshot
):
    expect = pytest.importorskip("playwright.sync_api").expect
    page = new_page()
    page.set_viewport_size({"width": 1366, "height": 768})
    login(page, admin_user)

    # --- before Open: what it will cost ---------------------------------------------------
    page.goto(f"/evaluation/studies/{draft_study.pk}/edit/")
    estimate = page.locator("#study-estimate")
    expect(estimate).to_contain_text("12 outputs")
    page.locator("input[name=samples_per_prompt]").fill("5")
    page.locator("input[name=samples_per_prompt]").dispatch_event("change")
    expect(estimate).to_contain_text("20 outputs")  # follows the form, no reload
    expect(estimate).to_contain_text("40 ratings")
    screenshot(page, "12-03-study-form-estimate")
    page.goto(draft_study.get_absolute_url())
    expect(page.locator("#study-estimate")).to_contain_text("12 outputs")
    expect(page.locator("#study-estimate")).to_contain_text("24 ratings")

    # --- Open, then watch ------------------------------------------------------------------
    page.get_by_role("button", name="Open: sample outputs").click()
    page.wait_for_url(re.compile(rf"/evaluation/studies/{draft_study.pk}/$"))
    page.evaluate("window.__stayedOnPage = true")  # gone if the page reloads
    expect(page.locator("#study-badge")).to_have_text("Sampling")
    phase = page.locator("#study-phase")
    expect(phase).to_contain_text(re.compile(r"batch [23] of 3"), timeout=TIMEOUT_MS)
    expect(page.locator("#study-status")).to_contain_text(re.compile(r"[48] of 12 outputs sampled"))
    eta = page.locator("#study-status [data-eta-seconds]")
    expect(eta).to_be_visible()
    screenshot(page, "12-03-study-sampling")
    first = eta.inner_text()
    page.wait_for_timeout(1_200)
    assert eta.count() == 0 or eta.inner_text() != first or first == "any moment now"

    # Sampling finishes: the badge, the actions and the log change in place.
    expect(page.locator("#study-badge")).to_have_text("Rating", timeout=TIMEOUT_MS)
    expect(page.locator("#study-log")).to_contain_text("Rating opened")
    expect(page.locator("#study-status")).to_contain_text("12 outputs: 12 in the pool")
    expect(page.get_by_role("link", name="Rubric & raters")).to_be_visible()
    assert page.evaluate("window.__stayedOnPage") is True
    screenshot(page, "12-03-study-rating")
    study = Study.objects.get(pk=draft_study.pk)
    assert study.status == Study.Status.RATING and study.outputs.count() == 12
    log = study.sampling_job.log
    assert "loading model 1 of 1, then sampling its first batch" in log
    assert "sampling model 1 of 1: batch 3 of 3" in log
