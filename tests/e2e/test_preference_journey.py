"""A curator builds and freezes a preference snapshot in headless Chromium: from the home
page's card to a closed pairwise study, the counts before building, a pair dropped, a better
answer written as the chosen side (kept with its revision), the freeze, and the downloads."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from evaluation.models import PreferencePair, PreferenceSet, PreferenceSnapshot
from evaluation.studies import lifecycle
from tests.evaluation.conftest import build_study
from tests.evaluation.test_pairwise_report import judge_favouring

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BETTER = "A curator's better answer: kind, specific and in line with the position."


@pytest.fixture
def closed_pairwise(monkeypatch, no_training_queue):
    monkeypatch.setattr(
        "evaluation.tasks.sync_study_sampling.apply_async", lambda *args, **kwargs: None
    )
    setup = build_study(mode="pairwise")
    judge_favouring(setup.study, setup.raters, "values_targeted")
    setup.study = lifecycle.study_close(study=setup.study, user=setup.admin)
    return setup


def test_a_curator_builds_reviews_and_freezes_a_preference_snapshot(
    new_page, login, curator, closed_pairwise, screenshot
):
    expect = pytest.importorskip("playwright.sync_api").expect
    study = closed_pairwise.study
    page = new_page()
    login(page, curator)
    page.goto("/")
    page.get_by_role("link", name="Preference sets").first.click()
    page.get_by_role("link", name=study.name).click()

    # Counts first: nothing is written until the curator builds.
    page.get_by_role("button", name="Count").click()
    expect(page.locator("#candidates")).to_contain_text("8 pairs kept of 12 considered")
    expect(page.locator("#candidates")).to_contain_text("4 left out: no majority")
    assert not PreferenceSet.objects.exists()
    page.get_by_role("button", name="Build the preference set").click()
    expect(page.get_by_role("heading", name="Preference set #")).to_be_visible()
    preference_set = PreferenceSet.objects.get()
    first, second = list(preference_set.pairs.order_by("pk"))[:2]

    # Drop one pair.
    page.locator(f"#pair-{first.pk}").get_by_role("button", name="Drop this pair").click()
    expect(page.locator(f"#pair-{first.pk}")).to_contain_text("dropped")

    # Write a better answer as the chosen side of another; its history keeps it.
    page.locator(f"#pair-{second.pk}").get_by_role("link", name="Write a better answer").click()
    expect(page.locator("#raters-choice")).to_have_text(second.chosen.text)
    page.fill("#id_answer", BETTER)
    page.get_by_role("button", name="Save answer").click()
    expect(page.locator(f"#pair-{second.pk} .chosen-text")).to_have_text(BETTER)
    expect(page.locator(f"#pair-{second.pk}")).to_contain_text(f"written by {curator.username}")
    page.locator(f"#pair-{second.pk}").get_by_role("link", name="Edit your answer").click()
    expect(page.locator("#answer-revisions")).to_contain_text(f"r1 · {curator.username}")
    page.go_back()
    screenshot(page, "18-preference-review")

    # Freeze: 7 pairs, the curator's answer as the chosen side, said so in provenance.
    page.get_by_role("button", name="Freeze 7 pairs into a snapshot").click()
    snapshots = page.locator("#preference-snapshots")
    expect(snapshots).to_contain_text("7 pairs")
    snapshot = PreferenceSnapshot.objects.get()
    expect(snapshots).to_contain_text(snapshot.content_hash)
    with page.expect_download() as info:
        snapshots.get_by_role("link", name="prompt/chosen/rejected JSONL").click()
    text = Path(info.value.path()).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == 7 and BETTER in {row["chosen"] for row in rows}
    with page.expect_download() as info:
        snapshots.get_by_role("link", name="zip (both, Parquet, dataset card)").click()
    archive = zipfile.ZipFile(io.BytesIO(Path(info.value.path()).read_bytes()))
    assert "curators instead of the raters' choice: 1" in archive.read("README.md").decode()
    content = json.loads(archive.read("snapshot.json"))
    assert content["provenance"]["curator_answers"] == 1
    assert PreferencePair.objects.get(pk=second.pk).answer == BETTER
