"""Pairwise rating in headless Chromium: a rater judges pairs with the keyboard alone (←, →,
1, 2, T, X, Enter, S); htmx brings each next pair without a reload. Then a phone-sized
screen, where A and B stack."""

from __future__ import annotations

import pytest

from evaluation.models import PairJudgment
from tests.e2e.test_rating_journey import sign_in_by_keyboard
from tests.evaluation.conftest import build_study

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def settled(page) -> None:
    """Wait until htmx has swapped and settled the last answer, so a key lands on the new
    panel's elements (a click on a link htmx has not taken over yet would load the page)."""
    page.wait_for_function(
        "!document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling, .htmx-added')"
    )


@pytest.fixture
def pairwise_setup(monkeypatch, no_training_queue):
    monkeypatch.setattr(
        "evaluation.tasks.sync_study_sampling.apply_async", lambda *args, **kwargs: None
    )
    return build_study(raters=3, raters_per_output=3, n_categories=2, per_category=2,
                       mode="pairwise")  # fmt: skip


def test_a_rater_judges_pairs_with_the_keyboard_alone(new_page, pairwise_setup):
    expect = pytest.importorskip("playwright.sync_api").expect
    study, rater = pairwise_setup.study, pairwise_setup.raters[0]
    page = new_page()
    # The study's card on the rater's home leads to the 1–5 address: it forwards.
    sign_in_by_keyboard(page, rater, f"/evaluation/rate/{study.pk}/")
    page.wait_for_url(f"**/evaluation/rate/{study.pk}/pairs/")
    page.wait_for_load_state("load")
    expect(page.locator("#instructions")).to_contain_text("A and B")
    page.evaluate("window.__noReload = true")
    page.keyboard.press("Enter")
    expect(page.locator("#output-a")).to_be_visible()
    expect(page.locator("#output-b")).to_be_visible()

    keys = [("ArrowLeft", "a"), ("ArrowRight", "b"), ("1", "a"), ("2", "b"), ("t", "tie"),
            ("x", "both_bad")]  # fmt: skip
    shown = []
    for n, (key, verdict) in enumerate(keys, start=1):
        shown.append(
            (page.locator("#output-a").inner_text(), page.locator("#output-b").inner_text())
        )
        page.keyboard.press(key)
        expect(page.locator(f'input[name=verdict][value="{verdict}"]')).to_be_checked()
        page.keyboard.press("Enter")
        expect(page.locator(".task .msg")).to_contain_text("Saved:")
        # Two pairs may share a response, so the progress tells that the next pair came.
        expect(page.locator("#my-progress")).to_contain_text(f"{n} compared")
    assert page.evaluate("window.__noReload") is True

    # Enter without a verdict says what to do and stays; S skips.
    page.keyboard.press("Enter")
    expect(page.locator("#verdict-error")).to_be_visible()
    page.keyboard.press("s")
    expect(page.locator(".task .msg")).to_contain_text("Skipped")
    assert page.evaluate("window.__noReload") is True

    # U brings back the last judgment (both bad), its verdict chosen; → and Enter change it.
    settled(page)
    page.keyboard.press("u")
    expect(page.locator("#revise-note")).to_contain_text("Both bad")
    expect(page.locator('input[name=verdict][value="both_bad"]')).to_be_checked()
    settled(page)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    expect(page.locator(".task .msg")).to_contain_text("from Both bad to B better")
    expect(page.locator("#output-a")).to_be_visible()  # back at the pair held
    # Esc leaves a change unsaved.
    settled(page)
    page.keyboard.press("u")
    expect(page.locator("#revise-note")).to_be_visible()
    settled(page)
    page.keyboard.press("Escape")
    expect(page.locator("#revise-note")).to_have_count(0)
    assert page.evaluate("window.__noReload") is True
    keys[-1] = ("x", "b")  # the last judgment now says B better

    done = PairJudgment.objects.filter(rater=rater).exclude(status="claimed")
    done = list(done.order_by("completed_at").select_related("pair__left", "pair__right"))
    assert [(j.status, j.verdict) for j in done] == [
        *[("completed", verdict) for _, verdict in keys],
        ("skipped", ""),
    ]
    assert [(j.pair.left.text, j.pair.right.text) for j in done][:6] == shown


def test_on_a_phone_a_and_b_stack(browser, live_server, pairwise_setup, login):
    expect = pytest.importorskip("playwright.sync_api").expect
    study, rater = pairwise_setup.study, pairwise_setup.raters[1]
    context = browser.new_context(base_url=live_server.url, viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        login(page, rater)
        page.goto(f"/evaluation/rate/{study.pk}/pairs/")
        page.get_by_role("button", name="Start comparing").click()
        expect(page.locator("#output-b")).to_be_visible()
        a, b = page.locator("#output-a").bounding_box(), page.locator("#output-b").bounding_box()
        assert b["y"] > a["y"] + a["height"] - 1  # B under A, not beside it
        assert abs(a["x"] - b["x"]) < 2
    finally:
        context.close()
