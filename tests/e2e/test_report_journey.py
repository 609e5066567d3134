"""Issue 6's report, in headless Chromium: a researcher opens a closed study's results
(blinded: no arms), unblinds it, reads the per-arm report and downloads the ratings CSV."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from evaluation.models import Export
from tests.evaluation.conftest import VERSION_NAMES
from tests.evaluation.test_report import closed_study

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def closed(monkeypatch, tmp_path, settings, no_training_queue):
    """A closed, blinded study with every output rated; exports run in the request."""
    monkeypatch.setattr(
        "evaluation.tasks.sync_study_sampling.apply_async", lambda *args, **kwargs: None
    )
    from evaluation import tasks

    monkeypatch.setattr(tasks.run_export, "delay", lambda pk: tasks.run_export.apply(args=(pk,)))
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    return closed_study(samples=1)


def test_a_researcher_unblinds_reads_the_report_and_downloads_the_csv(
    new_page, login, researcher, closed, tmp_path, screenshot
):
    expect = pytest.importorskip("playwright.sync_api").expect
    study = closed.study
    page = new_page()
    page.set_viewport_size({"width": 1366, "height": 768})  # a laptop screen
    login(page, researcher)
    page.goto(f"/evaluation/studies/{study.pk}/results/")

    # Closed but blinded: agreement and progress only, nothing that names an arm.
    expect(page.locator("#agreement")).to_contain_text("Krippendorff")
    body = page.content()
    for name in VERSION_NAMES.values():
        assert name not in body
    assert "Values-targeted" not in body and "Arm A" not in body

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Unblind").click()
    page.wait_for_url(f"**/evaluation/studies/{study.pk}/results/")
    expect(page.locator("#summary")).to_contain_text("Values-targeted vs base: better in")
    expect(page.locator("#by-category svg")).to_be_visible()
    expect(page.locator("body")).to_contain_text(VERSION_NAMES["values_targeted"])
    # The page fits a laptop screen: no horizontal scrolling of the whole page.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    # The chart is drawn at its own size, labels level (issue 12, item 15).
    chart = page.locator("#by-category svg").bounding_box()
    assert chart["width"] == 554 and chart["height"] < 400
    screenshot(page, "12-15-results-chart")

    page.get_by_role("link", name="Exports").first.click()
    page.select_option("select[name=format]", "csv")
    page.get_by_role("button", name="Start export").click()
    expect(page.locator("#exports")).to_contain_text("Succeeded")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download").first.click()
    target = tmp_path / "ratings.csv"
    info.value.save_as(target)
    export = Export.objects.get(study=study)
    assert export.includes_arms is True
    data = Path(target).read_bytes()
    assert hashlib.sha256(data).hexdigest() == export.sha256
    header = data.splitlines()[0].decode()
    assert header.startswith("rater,output_id") and ",arm," in header
    assert len(data.splitlines()) == 1 + export.row_count == 1 + 36
