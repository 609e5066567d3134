"""Issue 5's rating page, in headless Chromium: a rater signs in and rates five outputs
with the keyboard alone; htmx brings each next output without reloading the page. Then
the same page on a phone-sized screen."""

from __future__ import annotations

import pytest

from evaluation.models import Rating
from tests.conftest import PASSWORD
from tests.evaluation.conftest import build_study

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def study_setup(monkeypatch):
    """A study in rating, its outputs from a fake sampling run (no worker, no queue)."""
    monkeypatch.setattr("training.services._enqueue", lambda task, job_id: None)
    monkeypatch.setattr(
        "evaluation.tasks.sync_study_sampling.apply_async", lambda *args, **kwargs: None
    )
    return build_study(raters=3, raters_per_output=3, n_categories=2, per_category=2)


def sign_in_by_keyboard(page, user, next_url: str) -> None:
    page.goto(f"/accounts/login/?next={next_url}")
    page.focus("input[name=username]")
    page.keyboard.type(user.username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"**{next_url}")


def current_text(page) -> str:
    return page.locator("#output-text").inner_text()


def test_a_rater_rates_five_outputs_with_the_keyboard_alone(new_page, study_setup):
    expect = pytest.importorskip("playwright.sync_api").expect
    study, rater = study_setup.study, study_setup.raters[0]
    page = new_page()
    rate_url = f"/evaluation/rate/{study.pk}/"
    sign_in_by_keyboard(page, rater, rate_url)

    # The page claims the first output by itself and shows the keyboard hints.
    expect(page.locator("#output-text")).to_be_visible()
    expect(page.locator(".keys")).to_contain_text("Enter")
    page.evaluate("window.__noReload = true")  # gone if the page ever reloads

    scores = [4, 2, 5, 1, 3]
    seen = []
    for score in scores:
        text = current_text(page)
        seen.append(text)
        page.keyboard.press(str(score))
        expect(page.locator(f'input[name=score][value="{score}"]')).to_be_checked()
        page.keyboard.press("Enter")
        expect(page.locator(".task .msg")).to_have_text(f"Saved your rating ({score}).")
        expect(page.locator("#output-text")).not_to_have_text(text)
    assert page.evaluate("window.__noReload") is True
    expect(page.locator("#rate-progress")).to_contain_text("Me: 5 rated")

    # S skips the sixth; Enter without a score is stopped before it leaves the browser.
    sixth = current_text(page)
    page.keyboard.press("Enter")
    assert current_text(page) == sixth
    page.keyboard.press("s")
    expect(page.locator(".task .msg")).to_contain_text("Skipped")
    assert page.evaluate("window.__noReload") is True

    ratings = Rating.objects.filter(rater=rater).exclude(status="claimed").order_by("completed_at")
    assert [(r.status, r.score) for r in ratings] == [
        *[("completed", s) for s in scores],
        ("skipped", None),
    ]
    assert [r.output.text for r in ratings][:5] == seen
    assert len(set(seen)) == 5


def test_the_rating_page_fits_a_phone(browser, live_server, study_setup):
    expect = pytest.importorskip("playwright.sync_api").expect
    context = browser.new_context(
        base_url=live_server.url,
        viewport={"width": 375, "height": 740},
        is_mobile=True,
        has_touch=True,
    )
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        rate_url = f"/evaluation/rate/{study_setup.study.pk}/"
        sign_in_by_keyboard(page, study_setup.raters[1], rate_url)
        expect(page.locator("#output-text")).to_be_visible()
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1
        score = page.locator("label.score").nth(3)
        box = score.bounding_box()
        assert box["height"] >= 40 and box["width"] > 280  # a comfortable tap target
        score.tap()
        page.locator("button[data-key=enter]").tap()
        expect(page.locator(".task .msg")).to_have_text("Saved your rating (4).")
    finally:
        context.close()
