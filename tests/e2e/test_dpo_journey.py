"""Issue 18's last journey step, in headless Chromium: an admin opens a frozen preference
snapshot, launches DPO from the values-targeted version on its pairs, and watches the job
page fill in the loss curve and the reward margin and accuracy charts (htmx polling). The
job runs on a real Celery worker (see conftest)."""

from __future__ import annotations

import os
import re

import pytest

from evaluation.report import preferences
from evaluation.studies import lifecycle
from tests.evaluation.conftest import build_study
from tests.evaluation.test_pairwise_report import judge_favouring
from tests.evaluation.test_preference_dpo import arm_text
from training.models import FineTuneJob, JobStatus, ModelVersion

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

JOB_TIMEOUT_MS = 180_000


@pytest.fixture
def frozen(monkeypatch):
    """A closed pairwise study (sampling faked, not queued) frozen into 8 preference pairs."""
    from evaluation import tasks as evaluation_tasks
    from training import tasks as training_tasks

    monkeypatch.setattr(training_tasks.run_sampling, "delay_on_commit", lambda *a, **k: None)
    monkeypatch.setattr(evaluation_tasks.sync_study_sampling, "apply_async", lambda *a, **k: None)
    setup = build_study(mode="pairwise", text=arm_text)
    judge_favouring(setup.study, setup.raters, "values_targeted")
    study = lifecycle.study_close(study=setup.study, user=setup.admin)
    built = preferences.preference_set_build(study=study, source="pairwise", user=setup.admin)
    return setup.admin, preferences.preference_snapshot_freeze(preference_set=built)


@pytest.fixture
def start_version(tmp_path):
    from training import services
    from training.engine.loading import build_tiny_llama

    path = build_tiny_llama(tmp_path / "tiny-llama")
    base = services.base_model_create(
        name="Tiny Llama", kind="local_dir", path=str(path), parameter_count=1_000_000
    )
    return ModelVersion.objects.create(
        base_model=base, name="Tiny · values-targeted SFT", arm="values_targeted",
        path=str(path), metadata={"dataset_kind": "values_targeted"},
    )  # fmt: skip


def test_admin_launches_dpo_and_sees_its_curves(
    celery_worker, new_page, login, frozen, start_version
):
    expect = pytest.importorskip("playwright.sync_api").expect
    admin, snapshot = frozen
    page = new_page()
    login(page, admin)

    page.goto(snapshot.preference_set.get_absolute_url())
    page.locator("#preference-snapshots a").first.click()
    page.wait_for_url(re.compile(r"/preference-snapshots/\d+/$"))
    launch = page.locator("#dpo-launch")
    expect(launch.locator("select[name=start_version] option:checked")).to_contain_text(
        start_version.name
    )
    expect(launch.locator("input[name=beta]")).to_have_value("0.1")
    launch.locator("input[name=beta]").fill("0.5")
    launch.locator("input[name=learning_rate]").fill("0.002")
    launch.locator("input[name=epochs]").fill("2")
    launch.locator("#dpo-submit").click()
    page.wait_for_url(re.compile(r"/training/finetunes/\d+/$"))

    progress = page.locator("#job-progress")
    expect(progress.locator(".badge")).to_have_text("Succeeded", timeout=JOB_TIMEOUT_MS)
    expect(progress.locator("svg polyline.curve").first).to_be_visible()
    expect(progress.locator("#margin-chart-title")).to_have_count(1)
    expect(progress.locator("#accuracy-chart-title")).to_have_count(1)
    expect(progress.locator("#last-reward")).to_contain_text("accuracy")
    expect(page.locator("#finetune-objective")).to_have_text("Preference (DPO)")
    job = FineTuneJob.objects.get()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.result.metadata["preference_snapshot_hash"] == snapshot.content_hash
    assert job.reward_history[-1][1] > 0
