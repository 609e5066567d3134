"""Issue 2's "done when", clicked through in headless Chromium.

Curator A writes a sample and watches its word count; curator B opens it; both edit;
A saves first and B's save is refused with both versions shown and B's text kept; the
history has every revision; a third curator approves; a snapshot downloads as JSONL whose
hash matches the page.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from curation import services
from curation.models import Sample, Snapshot, StaleEdit

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SAVE = "Control+s"


def words(n: int, word: str) -> str:
    return " ".join([word] * n)


@pytest.fixture
def dataset(curator):
    services.category_create(name="Health", position="Suggest seeing a professional.")
    return services.dataset_create(name="Values", user=curator)


def open_editor(page, sample):
    page.goto(f"/curation/samples/{sample.pk}/edit/")
    return page


def test_two_curators_write_review_and_snapshot(
    new_page, login, curator, curator2, curator3, dataset
):
    expect = pytest.importorskip("playwright.sync_api").expect

    # --- curator A writes a sample, watching the live word count -----------------------
    a = new_page()
    login(a, curator)
    a.goto(f"/curation/datasets/{dataset.pk}/")
    a.click("text=New sample")
    count = a.locator(".wordcount")
    expect(count).to_have_text("0 words — needs 40–340")
    a.select_option("select[name=category]", label="Health")
    a.fill("textarea[name=question]", "How do I talk to a friend who seems low?")
    a.fill("textarea[name=answer]", words(5, "short"))
    expect(count).to_have_text("5 words — needs 40–340")
    expect(count).to_have_class(re.compile(r"\bout\b"))
    a.fill("textarea[name=answer]", words(45, "first"))
    expect(count).to_have_text("45 words — within 40–340")
    expect(count).to_have_class(re.compile(r"\bin\b"))
    a.press("textarea[name=answer]", SAVE)  # the keyboard shortcut saves
    expect(a.locator(".messages")).to_contain_text("Saved the sample as a draft")
    sample = Sample.objects.get()
    assert (sample.author, sample.version) == (curator, 1)

    # --- curator B opens it; both edit; A saves first ----------------------------------
    b = new_page()
    login(b, curator2)
    b.goto(f"/curation/samples/{sample.pk}/")
    expect(b.locator("#sample-answer")).to_contain_text("first first")
    open_editor(b, sample)
    open_editor(a, sample)
    theirs, mine = words(50, "alpha"), words(48, "beta")
    a.fill("textarea[name=answer]", theirs)
    b.fill("textarea[name=answer]", mine)
    a.click("button:has-text('Save')")
    expect(a.locator(".messages")).to_contain_text("Saved revision 2.")

    # --- B's save is refused: both versions side by side, B's text kept ----------------
    b.press("textarea[name=answer]", SAVE)
    conflict = b.locator("#conflict")
    expect(conflict).to_be_visible()
    expect(conflict.locator("[data-version=theirs]")).to_contain_text("alpha alpha")
    expect(conflict.locator("[data-version=yours]")).to_contain_text("beta beta")
    expect(b.locator("textarea[name=answer]")).to_have_value(mine)
    expect(b.locator("input[name=version]")).to_have_value("2")
    stale = StaleEdit.objects.get()
    assert (stale.author, stale.answer, stale.base_version) == (curator2, mine, 1)
    assert Sample.objects.get().answer == theirs

    # B merges both and saves again, which now succeeds and resolves the unmerged edit.
    merged = theirs + " " + words(5, "beta")
    b.fill("textarea[name=answer]", merged)
    b.click("button:has-text('Save')")
    expect(b.locator(".messages")).to_contain_text("Saved revision 3.")
    expect(b.locator("#unmerged-edits")).to_have_count(0)

    # --- the history shows every revision, and any two compare ------------------------
    a.goto(f"/curation/samples/{sample.pk}/history/")
    expect(a.locator("tr.revision")).to_have_count(3)
    authors = a.locator("tr.revision td:nth-child(4)").all_inner_texts()
    assert authors == [curator2.username, curator.username, curator.username]
    a.check("input[name=a][value='1']")
    a.check("input[name=b][value='3']")
    a.click("text=Compare selected revisions")
    expect(a.locator("h1")).to_have_text("Revision 1 → revision 3")
    expect(a.locator(".diff ins").first).to_be_visible()
    expect(a.locator(".diff del").first).to_be_visible()

    # --- A submits for review; A may not approve their own sample ----------------------
    a.goto(f"/curation/samples/{sample.pk}/")
    a.click("text=Submit for review")
    expect(a.locator("#sample-status")).to_have_text("In review")
    expect(a.locator("#approval-problems")).to_contain_text("another curator must approve")
    expect(a.locator("#review button:has-text('Approve')")).to_be_disabled()

    # --- a third curator approves ------------------------------------------------------
    c = new_page()
    login(c, curator3)
    c.goto(f"/curation/samples/{sample.pk}/")
    c.click("#review button:has-text('Approve')")
    expect(c.locator("#sample-status")).to_have_text("Approved")

    # --- someone takes a snapshot and downloads it --------------------------------------
    c.goto(f"/curation/datasets/{dataset.pk}/snapshots/")
    c.fill("input[name=label]", "first cut")
    c.click("text=Take snapshot")
    page_hash = c.locator("#snapshot-hash").inner_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", page_hash)

    with c.expect_download() as download_info:
        c.click("#download-jsonl")
    download = download_info.value
    assert download.suggested_filename.endswith(".jsonl")
    with open(download.path(), encoding="utf-8") as jsonl:
        lines = [json.loads(line) for line in jsonl if line.strip()]
    assert lines == [
        {
            "messages": [
                {"role": "user", "content": "How do I talk to a friend who seems low?"},
                {"role": "assistant", "content": merged},
            ]
        }
    ]

    jsonl_url = c.locator("#download-jsonl").get_attribute("href")
    response = c.request.get(jsonl_url)
    assert response.ok
    snapshot = Snapshot.objects.get()
    assert response.headers["x-snapshot-sha256"] == page_hash == snapshot.content_hash
    # The file's own hash is what sha256sum of the downloaded file prints.
    assert response.headers["x-content-sha256"] == hashlib.sha256(response.body()).hexdigest()
    # The hash is the sha256 of the snapshot's canonical content, as stored and as served.
    assert hashlib.sha256(snapshot.content.encode("utf-8")).hexdigest() == page_hash
    canonical = c.request.get(c.locator("#download-json").get_attribute("href"))
    assert hashlib.sha256(canonical.body()).hexdigest() == page_hash
    assert [item["answer"] for item in json.loads(canonical.body())["items"]] == [merged]


def test_filters_and_comments_update_in_place(new_page, login, curator, dataset):
    expect = pytest.importorskip("playwright.sync_api").expect
    for question in ("Is it normal to feel anxious?", "How do I end a relationship?"):
        sample = services.sample_create(
            dataset=dataset, question=question, answer=words(50, "ok"), user=curator
        )
    page = new_page()
    login(page, curator)
    page.goto(f"/curation/datasets/{dataset.pk}/")
    rows = page.locator("#samples tbody tr")
    expect(rows).to_have_count(2)
    page.evaluate("window.__marker = 'still here'")  # gone if the page reloads
    page.fill("input[name=q]", "anxious")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Is it normal to feel anxious?")
    expect(page).to_have_url(re.compile(r"\?.*q=anxious"))
    assert page.evaluate("window.__marker") == "still here"

    page.goto(f"/curation/samples/{sample.pk}/")
    page.evaluate("window.__marker = 'still here'")
    page.fill("textarea[name=body]", "Could the answer name a helpline?")
    page.click("text=Add comment")
    expect(page.locator("#comments li.comment")).to_contain_text("name a helpline")
    expect(page.locator("textarea[name=body]")).to_have_value("")
    assert page.evaluate("window.__marker") == "still here"
