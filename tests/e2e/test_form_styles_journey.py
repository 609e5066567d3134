"""Issue 12, item 20 in headless Chromium: the fine-tune, misalignment and re-alignment
forms draw their URL fields like every other field, put each checkbox on the line of its
text, and give every button one shape."""

from __future__ import annotations

import pytest

from training import services as training

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def local_model(tmp_path, benign_snapshot):
    (tmp_path / "config.json").write_text("{}")
    return training.base_model_create(name="Local tiny", kind="local_dir", path=str(tmp_path),
                                      parameter_count=1_000_000)  # fmt: skip


def same_line(page, box_selector: str, text_selector: str) -> bool:
    a = page.locator(box_selector).first.bounding_box()
    b = page.locator(text_selector).first.bounding_box()
    return a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"]


def style(page, selector: str, prop: str) -> str:
    return page.locator(selector).first.evaluate(
        f"(el) => getComputedStyle(el).getPropertyValue('{prop}')"
    )


def check_buttons(page, form: str) -> None:
    heights = {
        round(b["height"]) for b in (
            page.locator(f"{form} button").nth(i).bounding_box()
            for i in range(page.locator(f"{form} button").count())
        ) if b
    }  # fmt: skip
    assert heights and max(heights) - min(heights) <= 1, heights
    assert style(page, f"{form} button.primary", "border-radius") == "6px"


@pytest.mark.parametrize(
    ("url", "form", "name"),
    [
        ("/training/finetunes/new/", "#finetune-form", "finetune-form"),
        ("/evaluation/misalignment/new/", "main form", "misalignment-form"),
        ("/evaluation/realignment/new/", "main form", "realignment-form"),
    ],
)
def test_forms_draw_urls_checkboxes_and_buttons_alike(
    new_page, login, admin_user, local_model, screenshot, url, form, name
):
    page = new_page()
    page.set_viewport_size({"width": 1366, "height": 768})
    login(page, admin_user)
    page.goto(url)
    # The first checkbox shown: the arm-override box stays hidden until the arms disagree.
    checkbox = page.locator(f"{form} input[type=checkbox]:visible").first
    checkbox.wait_for()
    assert checkbox.bounding_box()["width"] < 30  # a box, not a stretched field
    label = checkbox.locator(
        "xpath=ancestor::label[1] | preceding-sibling::label[1] | following-sibling::label[1]"
    ).first
    box, text = checkbox.bounding_box(), label.bounding_box()
    assert box["y"] < text["y"] + text["height"] and text["y"] < box["y"] + box["height"]
    check_buttons(page, form)
    urls = page.locator(f"{form} input[type=url]")
    if urls.count():
        assert style(page, f"{form} input[type=url]", "border-radius") == "6px"
        text_field = page.locator(f"{form} input[type=text]").first
        assert style(page, f"{form} input[type=url]", "padding-left") == text_field.evaluate(
            "(el) => getComputedStyle(el).paddingLeft"
        )
    screenshot(page, f"12-20-{name}")
