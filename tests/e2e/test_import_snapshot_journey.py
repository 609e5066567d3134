"""Issue 12, items 7, 9 and 10, in headless Chromium: an import shows every problem, then a
preview before it commits; coverage and the snapshot count bytes alike and say how; a second
snapshot with no change is refused with a pointer to the first."""

from __future__ import annotations

import json

import pytest

from curation import services
from curation.models import Sample, Snapshot
from tests.factories import words

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def jsonl(*rows) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


@pytest.fixture
def dataset(curator):
    services.category_create(name="Health", position="Suggest seeing a professional.")
    services.category_create(name="Relationships", position="Respect everyone's autonomy.")
    return services.dataset_create(name="Values", min_words=5, user=curator)


def test_import_preview_coverage_and_unchanged_snapshot(
    new_page, login, curator, curator2, dataset, tmp_path, screenshot
):
    expect = pytest.importorskip("playwright.sync_api").expect
    page = new_page()
    login(page, curator)

    # --- a file with problems: every problem of every line, nothing imported -------------
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl(
        {"prompt": "Fine?", "completion": words(20), "category": "Health"},
        {"prompt": "  ", "completion": "", "source": "web"},
        {"prompt": "No category?", "completion": words(20)},
    ))
    page.goto(f"/curation/datasets/{dataset.pk}/import/")
    page.set_input_files("input[name=file]", str(bad))
    page.click("text=Check and preview")
    errors = page.locator("#import-errors")
    expect(errors).to_contain_text("Unknown field: 'source'.")
    expect(errors).to_contain_text("The question is empty.")
    expect(errors).to_contain_text("The answer is empty.")
    expect(errors).to_contain_text("No category: a values-targeted sample needs a category.")
    screenshot(page, "12-9-import-problems")
    assert not Sample.objects.exists()

    # --- a good file with a default category: preview, then import ----------------------
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl(
        {"prompt": "Is this mole cancer?", "completion": words(20, "see"), "category": "Health"},
        {"prompt": "Should I text my ex?", "completion": words(20, "ok"),
         "category": "Relationships"},
        {"prompt": "Why do I feel tired?", "completion": words(20, "rest")},
    ))
    page.set_input_files("input[name=file]", str(good))
    page.select_option("select[name=default_category]", label="Health")
    page.select_option("select[name=status]", "in_review")
    page.click("text=Check and preview")
    expect(page.locator("h1")).to_contain_text("Preview: good.jsonl")
    table = page.locator("#import-per-category")
    expect(table).to_contain_text("Health")
    expect(table.locator("tr", has_text="Health")).to_contain_text("2")
    assert not Sample.objects.exists()
    screenshot(page, "12-9-import-preview")
    page.click("#confirm-import")
    expect(page.locator(".messages")).to_contain_text("Imported 3 samples from good.jsonl.")
    assert Sample.objects.filter(status="in_review").count() == 3

    # Approve them (another curator) and look at coverage.
    for sample in Sample.objects.all():
        services.sample_approve(sample=sample, user=curator2)
    page.goto(f"/curation/datasets/{dataset.pk}/coverage/")
    expect(page.locator("#coverage thead")).to_contain_text("UTF-8, question + answer")
    expect(page.locator("main")).to_contain_text("UTF-8 bytes of question + answer")
    coverage_bytes = page.locator("#coverage tfoot .bytes").inner_text()
    screenshot(page, "12-10-coverage-bytes")

    # --- snapshots: the first is taken, the second (no change) is refused ---------------
    page.goto(f"/curation/datasets/{dataset.pk}/snapshots/")
    page.fill("input[name=label]", "first")
    page.click("text=Take snapshot")
    expect(page.locator(".messages")).to_contain_text("Took snapshot")
    snapshot = Snapshot.objects.get()
    assert f"{snapshot.byte_count:,}" == coverage_bytes
    page.goto(f"/curation/datasets/{dataset.pk}/snapshots/")
    page.fill("input[name=label]", "again")
    page.click("text=Take snapshot")
    expect(page.locator(".messages")).to_contain_text("Nothing changed since the last snapshot")
    expect(page.locator("#snapshot-hash")).to_have_text(snapshot.content_hash)
    screenshot(page, "12-7-snapshot-unchanged")
    assert Snapshot.objects.count() == 1
