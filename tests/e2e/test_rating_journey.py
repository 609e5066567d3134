"""Issue 5's rating page, in headless Chromium: a rater signs in and rates five outputs
with the keyboard alone; htmx brings each next output without reloading the page. Then
the same page on a phone-sized screen."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from evaluation.models import Rating
from tests.conftest import PASSWORD
from tests.evaluation.conftest import build_study

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def study_setup(monkeypatch, no_training_queue):
    """A study in rating, its outputs from a fake sampling run (no worker, no queue)."""
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
    # By path (a pairwise study goes on to .../pairs/): a glob such as "**/rate/1/" also
    # matches the sign-in page's own ?next=, and would not wait at all.
    page.wait_for_url(lambda url: urlsplit(url).path.startswith(next_url))


def current_text(page) -> str:
    return page.locator("#output-text").inner_text()


def test_a_rater_rates_five_outputs_with_the_keyboard_alone(new_page, study_setup, screenshot):
    expect = pytest.importorskip("playwright.sync_api").expect
    study, rater = study_setup.study, study_setup.raters[0]
    page = new_page()
    rate_url = f"/evaluation/rate/{study.pk}/"
    sign_in_by_keyboard(page, rater, rate_url)

    # First the instructions: the rubric, what to flag, the keys. Enter starts.
    page.wait_for_load_state("load")  # the keys work once rating.js has run
    expect(page.locator("#instructions")).to_contain_text("Flag instead of rating")
    expect(page.locator("#instructions")).to_contain_text(study.rubric[4])
    page.evaluate("window.__noReload = true")  # gone if the page ever reloads
    page.keyboard.press("Enter")
    expect(page.locator("#output-text")).to_be_visible()
    expect(page.locator(".keys")).to_contain_text("Enter")

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
    expect(page.locator("#my-progress")).to_contain_text("5 rated")

    # Enter without a score says what to do and stays; S skips the sixth.
    sixth = current_text(page)
    page.keyboard.press("Enter")
    expect(page.locator("#score-error")).to_have_text("Pick a score 1–5 first")
    assert current_text(page) == sixth
    screenshot(page, "12-13-rating-progress-and-no-score")
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


def phone_context(browser, live_server):
    context = browser.new_context(
        base_url=live_server.url,
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
    )
    context.set_default_timeout(15_000)
    return context


def test_a_phone_rater_scores_from_a_bar_that_stays_in_reach(
    browser, live_server, study_setup, screenshot
):
    """Issue 12, item 11: on a phone the scores and Submit sit in a bar at the bottom of
    the screen, the position folds away after a category's first output, and no keyboard
    hints are shown on a touch screen."""
    expect = pytest.importorskip("playwright.sync_api").expect
    context = phone_context(browser, live_server)
    try:
        page = context.new_page()
        rate_url = f"/evaluation/rate/{study_setup.study.pk}/"
        sign_in_by_keyboard(page, study_setup.raters[1], rate_url)
        expect(page.locator("#instructions .touch-hint")).to_be_visible()
        expect(page.locator("#instructions .key-hint").first).to_be_hidden()
        screenshot(page, "12-14-instructions")
        page.get_by_role("button", name="Start rating").tap()
        expect(page.locator("#output-text")).to_be_visible()
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1

        # The bar is on screen at once, at the bottom, without scrolling.
        bar = page.locator(".score-bar")
        expect(bar).to_be_visible()
        box = bar.bounding_box()
        assert box["y"] + box["height"] == pytest.approx(844, abs=1) and box["width"] >= 389
        chip = bar.locator('label.chip[data-score="4"]')
        chip_box = chip.bounding_box()
        assert chip_box["height"] >= 44 and chip_box["width"] >= 44  # a comfortable target
        expect(page.locator(".task .keys")).to_be_hidden()
        expect(page.locator(".task kbd").first).to_be_hidden()
        first_category = page.locator(".task .category").inner_text()
        expect(page.locator(".task details.position")).to_have_attribute("open", "")
        screenshot(page, "12-11-rating")

        chip.tap()
        expect(page.locator('input[name=score][value="4"]')).to_be_checked()
        expect(bar.locator(".score-bar-anchor")).to_contain_text("4 — ")
        bar.get_by_role("button", name="Submit").tap()
        expect(page.locator(".task .msg")).to_have_text("Saved your rating (4).")

        # Submit with no score says so, in the page.
        bar.get_by_role("button", name="Submit").tap()
        expect(page.locator("#score-error")).to_have_text("Pick a score 1–5 first")

        # Another output of a category already seen: its position is folded away.
        while page.locator(".task .category").inner_text() != first_category:
            bar.locator('label.chip[data-score="3"]').tap()
            bar.get_by_role("button", name="Submit").tap()
            expect(page.locator(".task .msg")).to_have_text("Saved your rating (3).")
        expect(page.locator(".task details.position")).not_to_have_attribute("open", "")
        expect(page.locator(".task details.position summary")).to_be_visible()
    finally:
        context.close()


def test_a_rater_changes_their_last_rating(new_page, study_setup, screenshot):
    """Issue 12, item 12: after submitting, a rater changes their mind about the last
    output; the change is saved and logged, and the output they held is still theirs."""
    from evaluation.models import RatingRevision

    expect = pytest.importorskip("playwright.sync_api").expect
    study, rater = study_setup.study, study_setup.raters[2]
    page = new_page()
    page.set_viewport_size({"width": 1366, "height": 768})
    sign_in_by_keyboard(page, rater, f"/evaluation/rate/{study.pk}/")
    page.get_by_role("button", name="Start rating").click()
    rated_text = current_text(page)
    page.keyboard.press("5")
    page.keyboard.press("Enter")
    expect(page.locator(".task .msg")).to_have_text("Saved your rating (5).")
    held_text = current_text(page)
    page.evaluate("window.__noReload = true")

    page.get_by_role("link", name="Change your last rating (5)").click()
    expect(page.locator("#revise-note")).to_contain_text("changing your last rating (5)")
    expect(page.locator("#output-text")).to_have_text(rated_text)
    expect(page.locator('input[name=score][value="5"]')).to_be_checked()
    screenshot(page, "12-12-change-last-rating")
    page.keyboard.press("2")
    page.locator("textarea[name=comment]").fill("Read it again: it dodges the question.")
    page.get_by_role("button", name="Save the change").click()
    expect(page.locator(".task .msg")).to_have_text("Changed your last rating from 5 to 2.")
    expect(page.locator("#output-text")).to_have_text(held_text)  # back where they were
    assert page.evaluate("window.__noReload") is True

    rating = Rating.objects.get(rater=rater, status="completed")
    assert (rating.score, rating.comment) == (2, "Read it again: it dodges the question.")
    [log] = RatingRevision.objects.filter(rating=rating)
    assert (log.previous_score, log.score) == (5, 2)
    assert rating.output.completed_count == 1
