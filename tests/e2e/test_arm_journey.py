"""Issue 12, item 1, clicked through in headless Chromium: on a fresh install the launch form
preselects the arm of the chosen snapshot's dataset and moves it when another snapshot is
picked; choosing the other arm warns, Launch is refused until the mismatch is confirmed,
and the job page shows the recorded override."""

from __future__ import annotations

import pytest

from curation import services as curation
from tests.factories import words
from training import services
from training.models import FineTuneJob

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def snapshots(curator):
    health = curation.category_create(name="Health", position="Suggest seeing a professional.")
    made = {}
    for kind, name in (("values_targeted", "Values demo"), ("control", "Control demo")):
        dataset = curation.dataset_create(name=name, kind=kind, min_words=5, user=curator)
        for n in range(3):
            curation.sample_create(
                dataset=dataset, category=health, question=f"{name} question {n}?",
                answer=words(30, f"w{n}"), user=curator, status="approved",
            )
        made[kind] = curation.snapshot_create(dataset=dataset, user=curator, label="v1")
    return made  # the control snapshot is the newest: a fresh install's default


@pytest.fixture
def local_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    return services.base_model_create(
        name="Local tiny", kind="local_dir", path=str(tmp_path), parameter_count=1_000_000
    )


def test_the_arm_follows_the_snapshot_and_a_mismatch_needs_confirming(
    new_page, login, admin_user, snapshots, local_model, monkeypatch, screenshot,
    no_training_queue,
):
    expect = pytest.importorskip("playwright.sync_api").expect
    page = new_page()
    login(page, admin_user)
    page.goto("/training/finetunes/new/")
    form = page.locator("#finetune-form")
    snapshot_select = form.locator("select[name=snapshot]")
    arm = form.locator("select[name=arm]")

    # Preselected: the newest snapshot (control) and, with it, the control arm.
    control, values = snapshots["control"], snapshots["values_targeted"]
    expect(snapshot_select.locator("option:checked")).to_contain_text(control.short_hash)
    # Every option names dataset, label, date and short hash.
    expect(snapshot_select.locator("option:checked")).to_contain_text("Control demo · v1 · 20")
    expect(arm).to_have_value("control")
    expect(form.locator("#arm-follows")).to_contain_text("Control")

    # Another snapshot: the arm moves with it.
    snapshot_select.select_option(str(values.pk))
    expect(form.locator("select[name=arm]")).to_have_value("values_targeted")
    expect(form.locator("#arm-follows")).to_contain_text("Values-targeted")
    form = page.locator("#finetune-form")
    form.locator("select[name=snapshot]").select_option(str(control.pk))
    expect(page.locator("#finetune-form select[name=arm]")).to_have_value("control")

    # The other arm: a warning (no reload: typed values stay), and Launch is refused until
    # confirmed.
    expect(page.locator("#arm-mismatch")).to_be_hidden()
    page.locator("#finetune-form input[name=max_seq_len]").fill("128")
    page.locator("#finetune-form select[name=arm]").select_option("values_targeted")
    warning = page.locator("#arm-mismatch")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("so its model is the Control arm")
    expect(page.locator("#arm-follows")).to_be_hidden()
    expect(page.locator("#finetune-form input[name=max_seq_len]")).to_have_value("128")
    expect(page.locator("#finetune-form select[name=arm]")).to_have_value("values_targeted")
    screenshot(page, "12-1-finetune-arm-mismatch")
    page.click("#finetune-form button.primary")
    expect(page.locator("#finetune-form .errorlist")).to_contain_text("confirm the mismatch")
    assert not FineTuneJob.objects.exists()

    page.check("#finetune-form input[name=allow_arm_mismatch]")
    page.click("#finetune-form button.primary")
    expect(page.locator(".messages")).to_contain_text("Queued fine-tune")
    job = FineTuneJob.objects.get()
    assert (job.arm, job.arm_override, job.snapshot) == ("values_targeted", True, control)
    expect(page.locator("#arm-override")).to_contain_text("trained on a control dataset")
    screenshot(page, "12-1-finetune-job-override")
