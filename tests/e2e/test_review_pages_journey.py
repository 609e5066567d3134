"""Issue 12, items 16–19 and 21 in headless Chromium, the way a researcher and an admin
meet them: compare refuses the same study twice and explains an unknown id, the output
triage page shows letters until an admin reveals the arms, the gap-ticket form shows the
report's source in words, prompt sets say "locked" only when a study uses them, and a
page outside one's role explains itself. Each page is photographed at laptop and phone
size when PALMSWEB_SCREENSHOTS is set."""

from __future__ import annotations

import pytest

from evaluation.models import StudyEvent
from palmsweb.roles import Role
from tests.conftest import make_user
from tests.evaluation.conftest import VERSION_NAMES, make_prompt_set
from tests.evaluation.test_report import closed_study

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def unblinded(monkeypatch, no_training_queue):
    monkeypatch.setattr(
        "evaluation.tasks.sync_study_sampling.apply_async", lambda *args, **kwargs: None
    )
    return closed_study(unblind=True, samples=1)


def test_a_researcher_meets_honest_review_pages(
    new_page, login, unblinded, screenshot
):
    expect = pytest.importorskip("playwright.sync_api").expect
    study = unblinded.study
    researcher = make_user("rhea", Role.RESEARCHER)
    page = new_page()
    page.set_viewport_size({"width": 1366, "height": 768})
    login(page, researcher)

    # --- 16: compare ------------------------------------------------------------------
    page.goto(f"/evaluation/studies/compare/?a={study.pk}&b={study.pk}")
    expect(page.locator("#compare-problem")).to_have_text(
        "Pick two different studies: A and B are the same study."
    )
    screenshot(page, "12-16-compare-same-study")
    page.goto(f"/evaluation/studies/compare/?a={study.pk}&b=4242")
    expect(page.locator("#compare-problem")).to_contain_text("no closed, unblinded study #4242")
    expect(page.locator("nav.mainnav")).to_be_visible()

    # --- 18: a gap ticket from the report ---------------------------------------------------
    page.goto(f"/evaluation/studies/{study.pk}/results/", timeout=60_000)  # bootstraps
    page.get_by_role("link", name="File a gap ticket").first.click()
    expect(page.locator("#gap-source")).to_contain_text("a weak category in a study")
    expect(page.locator("#gap-source")).to_contain_text(f"“{study.name}” (#{study.pk})")
    expect(page.locator("textarea[name=source]")).to_have_count(0)
    p_value = page.locator("#gap-source dt:text('p (Holm-adjusted)') + dd").inner_text()
    assert p_value == "< 0.001" or (len(p_value) == 5 and p_value.startswith("0."))
    screenshot(page, "12-18-gap-ticket-form")
    page.get_by_role("button", name="File ticket").click()
    expect(page.locator("#gap-source")).to_contain_text(p_value)

    # --- 19: prompt sets ----------------------------------------------------------------------
    unused = make_prompt_set()
    page.goto("/evaluation/prompt-sets/")
    expect(page.locator("tr", has_text=unused.name).locator(".badge")).to_have_text("editable")
    expect(page.locator("tr", has_text=study.prompt_set.name).locator(".badge")).to_have_text(
        "locked"
    )
    screenshot(page, "12-19-prompt-sets")

    # --- 21: a page outside the role ------------------------------------------------------
    page.goto(f"/evaluation/studies/{study.pk}/outputs/")
    expect(page.locator("#error-page h1")).to_have_text("Not for your role")
    expect(page.locator("#error-page")).to_contain_text("rhea")
    expect(page.locator("#error-page")).to_contain_text("(researcher)")
    screenshot(page, "12-21-forbidden")
    page.goto("/evaluation/studies/99999/")
    expect(page.locator("#error-reason")).to_contain_text("There is no study with this number")
    screenshot(page, "12-21-not-found")


def test_an_admin_triages_outputs_under_letters_until_revealing_the_arms(
    new_page, login, monkeypatch, screenshot, no_training_queue
):
    expect = pytest.importorskip("playwright.sync_api").expect
    monkeypatch.setattr(
        "evaluation.tasks.sync_study_sampling.apply_async", lambda *args, **kwargs: None
    )
    from tests.evaluation.conftest import build_study

    setup = build_study()
    page = new_page()
    page.set_viewport_size({"width": 1366, "height": 768})
    login(page, setup.admin)
    page.goto(f"/evaluation/studies/{setup.study.pk}/outputs/")
    expect(page.locator("tbody tr").first).to_contain_text("Arm ")
    for name in VERSION_NAMES.values():
        expect(page.locator("body")).not_to_contain_text(name)
    screenshot(page, "12-17-outputs-letters")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Reveal arms (logged)").click()
    expect(page.locator("body")).to_contain_text(VERSION_NAMES["values_targeted"])
    expect(page.get_by_role("button", name="Hide the arms again")).to_be_visible()
    assert StudyEvent.objects.filter(study=setup.study, kind="arms_revealed").count() == 1
