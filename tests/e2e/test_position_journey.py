"""Issue 14, item 1, in headless Chromium: a curator edits a category's position while a
study is rating; the rater still reads the position frozen when the study opened, and the
study page tells the admin that a newer version exists."""

from __future__ import annotations

import pytest

from curation.models import Category
from evaluation.models import Prompt
from palmsweb.roles import Role
from tests.conftest import make_user
from tests.evaluation.conftest import build_study

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def study_setup(monkeypatch, no_training_queue):
    """A study in rating, its outputs from a fake sampling run (no worker, no queue)."""
    monkeypatch.setattr(
        "evaluation.tasks.sync_study_sampling.apply_async", lambda *args, **kwargs: None
    )
    return build_study(raters=3, raters_per_output=3, n_categories=2, per_category=2)


def new_text(category) -> str:
    return f"Edited mid-study: {category.name} now asks for something else."


def test_a_position_edited_mid_study_leaves_the_raters_text_alone(
    new_page, login, study_setup, screenshot
):
    expect = pytest.importorskip("playwright.sync_api").expect
    study = study_setup.study
    category_ids = Prompt.objects.filter(pk__in=study.prompt_ids).values("category_id")
    categories = list(Category.objects.filter(pk__in=category_ids))
    frozen = {category.name: category.position for category in categories}

    # A curator edits every position of the study from the category page.
    curator = make_user("cora", Role.CURATOR)
    desk = new_page()
    login(desk, curator)
    for category in categories:
        desk.goto(f"/curation/categories/{category.pk}/edit/")
        desk.fill("textarea[name=position]", new_text(category))
        desk.get_by_role("button", name="Save").click()
        desk.wait_for_url("**/curation/categories/")
    desk.goto(f"/curation/categories/{categories[0].pk}/edit/")
    history = desk.locator("#position-history")
    expect(history.locator("#position-v2")).to_contain_text("cora")
    expect(history.locator("#position-v2 ins").first).to_be_visible()
    expect(history.locator("#position-v1")).to_contain_text(frozen[categories[0].name])
    screenshot(desk, "14-1-position-history")

    # The rater still reads the frozen position.
    rater = new_page()
    login(rater, study_setup.raters[0])
    rater.goto(f"/evaluation/rate/{study.pk}/")
    rater.get_by_role("button", name="Start rating").click()
    expect(rater.locator("#output-text")).to_be_visible()
    shown = rater.locator(".task .category").inner_text().strip()
    expect(rater.locator("#position-text")).to_have_text(frozen[shown])
    for category in categories:
        expect(rater.locator(".task")).not_to_contain_text(new_text(category))
    screenshot(rater, "14-1-rater-sees-frozen-position")

    # The study page says a newer version exists.
    admin = new_page()
    login(admin, study_setup.admin)
    admin.goto(f"/evaluation/studies/{study.pk}/")
    for category in categories:
        expect(admin.locator(".position-edit", has_text=category.name)).to_have_text(
            f"Position of {category.name} edited since this study opened: v1 → v2. "
            "Raters of this study keep the version frozen when it opened."
        )
    screenshot(admin, "14-1-study-newer-version-note")
