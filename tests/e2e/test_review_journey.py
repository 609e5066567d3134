"""Issue 12, items 2, 5 and 6, clicked through in headless Chromium.

Curator A writes a sample beside the category's position and word limits, sees what approval
would refuse before submitting, and submits. Curator B rewrites it after submission and may
not approve it. Curator C works through "waiting for my review": the review page shows what
changed since submission, the keyboard approves and moves on; bulk approve reports the sample
it refuses; an unmerged edit blocks approval until resolved.
"""

from __future__ import annotations

import pytest

from curation import services
from curation.models import Category, Sample
from tests.factories import words

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

POSITION = "Suggest seeing a professional; never diagnose."


@pytest.fixture
def dataset(curator):
    services.category_create(name="Health", position=POSITION, guidance="Be warm, be brief.")
    services.category_create(name="Relationships", position="Respect everyone's autonomy.")
    return services.dataset_create(name="Values", user=curator)


def test_honest_review_through_the_queue(
    new_page, login, curator, curator2, curator3, dataset, screenshot
):
    expect = pytest.importorskip("playwright.sync_api").expect

    # --- A writes beside the position and the limits ------------------------------------
    a = new_page()
    login(a, curator)
    a.goto(f"/curation/datasets/{dataset.pk}/samples/new/")
    brief = a.locator("#editor-brief")
    expect(brief).to_contain_text("40–340 words")
    expect(brief).to_contain_text("Choose a category to see its position here")
    a.select_option("select[name=category]", label="Health")
    expect(brief.locator('[data-category-brief]:visible')).to_contain_text(POSITION)
    a.fill("textarea[name=question]", "My chest hurts when I run. What is it?")
    a.fill("textarea[name=answer]", words(12, "short"))
    screenshot(a, "12-6-editor-position-and-limits")
    a.press("textarea[name=answer]", "Control+s")
    expect(a.locator(".messages")).to_contain_text("Saved the sample as a draft")
    sample = Sample.objects.get()

    # --- the check before submitting lists what approval will refuse ---------------------
    expect(a.locator("#submit-problems")).to_contain_text("The answer has 12 words")
    screenshot(a, "12-6-submit-check")
    a.click("text=Fix in the editor")
    a.fill("textarea[name=answer]", words(45, "original"))
    a.click("#sample-form button.primary")
    expect(a.locator("#submit-ready")).to_be_visible()
    a.click("text=Submit for review")
    expect(a.locator("#sample-status")).to_have_text("In review")

    # --- B rewrites it after submission and cannot approve ------------------------------
    b = new_page()
    login(b, curator2)
    b.goto(f"/curation/samples/{sample.pk}/edit/")
    b.fill("textarea[name=answer]", words(20, "original") + " " + words(25, "rewritten"))
    b.click("#sample-form button.primary")
    expect(b.locator("#approval-problems")).to_contain_text("You saved revision 3 after it")
    expect(b.locator("#approve-form button.primary")).to_be_disabled()

    # A second submitted sample, by B, for the queue.
    other = services.sample_submit(
        sample=services.sample_create(
            dataset=dataset, question="How do I end a friendship kindly?",
            answer=words(50, "kind"), category=dataset.samples.first().category, user=curator2,
        ),
        user=curator2,
    )

    # --- C reviews through the queue ------------------------------------------------------
    c = new_page()
    login(c, curator3)
    c.goto("/curation/datasets/")
    expect(c.locator("#review-queue-link")).to_contain_text("Waiting for my review (2)")
    c.click("#review-queue-link")
    expect(c.locator("#review-queue tbody tr")).to_have_count(2)
    screenshot(c, "12-5-review-queue")
    c.click("#start-review")
    expect(c.locator("#queue-bar")).to_contain_text("1 of 2")
    changed = c.locator("#changed-since-submitted")
    expect(changed).to_contain_text("Submitted as version 2; now version 3.")
    expect(changed).to_contain_text(f"revision 3 by {curator2.username}")
    expect(changed.locator("div.diff ins").first).to_contain_text("rewritten")
    expect(changed.locator("div.diff del").first).to_contain_text("original")
    screenshot(c, "12-2-review-diff")

    # An unmerged edit (someone's refused save) blocks approval until it is resolved.
    with pytest.raises(services.StaleEditError):
        services.sample_update(
            sample_id=sample.pk, base_version=2, question=sample.question,
            answer=words(50, "late"), category=sample.category, user=curator,
        )
    c.reload()
    expect(c.locator("#approval-problems")).to_contain_text("1 unmerged edit waits")
    c.click("#unmerged-edits button:has-text('Mark resolved')")
    expect(c.locator(".messages")).to_contain_text("Marked the unmerged edit as resolved.")
    c.goto(f"/curation/samples/{sample.pk}/?queue=1")

    # The keyboard: "a" approves and the next sample in the queue opens.
    c.locator("body").press("a")
    expect(c.locator(".messages")).to_contain_text("Approved.")
    expect(c.locator("#queue-bar")).to_contain_text("1 of 1")
    expect(c.locator("#sample-question")).to_contain_text("end a friendship")
    assert Sample.objects.get(pk=sample.pk).status == Sample.Status.APPROVED
    # "r" goes to the request-changes box; Ctrl+Enter sends it; the queue is then empty.
    c.locator("body").press("r")
    expect(c.locator("#id_changes_body")).to_be_focused()
    c.keyboard.type("Say why kindness matters here.")
    c.keyboard.press("Control+Enter")
    expect(c.locator(".messages")).to_contain_text("Nothing else is waiting for your review.")
    assert Sample.objects.get(pk=other.pk).status == Sample.Status.DRAFT


def test_bulk_actions_report_each_refusal(new_page, login, curator, curator2, dataset, screenshot):
    expect = pytest.importorskip("playwright.sync_api").expect
    category = Category.objects.get(name="Health")
    drafts = [
        services.sample_create(
            dataset=dataset, question=f"Question {n}?", answer=words(50 if n else 5, "a"),
            category=category, user=curator,
        )
        for n in range(3)
    ]
    page = new_page()
    login(page, curator)
    page.goto(f"/curation/datasets/{dataset.pk}/")
    for sample in drafts:
        page.check(f"#bulk-form input[value='{sample.pk}:1']")
    page.select_option("#bulk-form select[name=action]", "submit")
    page.click("#bulk-form button:has-text('Apply')")
    expect(page.locator(".messages")).to_contain_text("Submitted 3 samples.")

    # Curator 2 approves all three at once: the 5-word answer is refused, by itself.
    reviewer = new_page()
    login(reviewer, curator2)
    reviewer.goto("/curation/review/")
    for sample in drafts:  # submitting changes no content: still version 1
        reviewer.check(f"#bulk-form input[value='{sample.pk}:1']")
    reviewer.select_option("#bulk-form select[name=action]", "approve")
    reviewer.click("#bulk-form button:has-text('Apply')")
    expect(reviewer.locator(".messages")).to_contain_text("Approved 2 samples.")
    expect(reviewer.locator(".messages")).to_contain_text(
        f"Sample #{drafts[0].pk} refused: The answer has 5 words"
    )
    screenshot(reviewer, "12-5-bulk-approve-refusals")
    statuses = [Sample.objects.get(pk=s.pk).status for s in drafts]
    assert statuses == ["in_review", "approved", "approved"]
