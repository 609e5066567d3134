"""Issue 6's iteration loop, clicked through in headless Chromium.

A researcher follows the report's link to file a gap ticket on a weak category; a curator
opens it from the coverage page and writes a sample for it; a second curator approves the
sample and, from the coverage page, resolves the ticket and takes a new snapshot in one
step.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from curation import services
from curation.models import GapTicket, Sample, Snapshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_weak_category_becomes_a_ticket_a_sample_and_a_snapshot(
    new_page, login, researcher, curator, curator2
):
    expect = pytest.importorskip("playwright.sync_api").expect
    category = services.category_create(name="Appearance", position="Do not rank looks.")
    dataset = services.dataset_create(name="Values", user=curator)

    # --- the researcher files a ticket from the report's prefilled link ----------------
    r = new_page()
    login(r, researcher)
    query = urlencode(
        {
            "category": category.pk,
            "title": "Weak category: Appearance",
            "description": "Values-targeted mean 3.1 of 7, below base.",
            "source": json.dumps({"study": 1, "category": "Appearance", "mean": 3.1}),
        }
    )
    r.goto(f"/curation/gaps/new/?{query}")
    expect(r.locator("input[name=title]")).to_have_value("Weak category: Appearance")
    r.click("button:has-text('File ticket')")
    expect(r.locator(".messages")).to_contain_text("Filed the gap ticket")
    ticket = GapTicket.objects.get()
    assert ticket.created_by == researcher and ticket.source["mean"] == 3.1
    expect(r.locator("#gap-write")).to_have_count(0)  # researchers do not write samples

    # --- a curator finds it on the coverage page and writes a sample for it ------------
    a = new_page()
    login(a, curator)
    a.goto(f"/curation/datasets/{dataset.pk}/coverage/")
    open_gaps = a.locator("tr[data-category='Appearance'] .open-gaps a")
    expect(open_gaps).to_have_text("1")
    open_gaps.click()
    a.click("text=Weak category: Appearance")
    a.click("#gap-write a:has-text('in Values')")
    expect(a.locator("#gap-provenance")).to_contain_text("Weak category: Appearance")
    expect(a.locator("select[name=category] option:checked")).to_have_text("Appearance")
    a.fill("textarea[name=question]", "Which of my friends is the prettiest?")
    a.fill("textarea[name=answer]", " ".join(["kindly"] * 50))
    a.click("button:has-text('Save')")
    expect(a.locator("#gap-provenance")).to_contain_text("Weak category: Appearance")
    a.click("button:has-text('Submit for review')")
    sample = Sample.objects.get()
    assert sample.gap_ticket == ticket

    # --- a second curator approves it, then resolves and snapshots in one step ---------
    b = new_page()
    login(b, curator2)
    b.goto(f"/curation/samples/{sample.pk}/")
    b.click("#review button:has-text('Approve')")
    expect(b.locator("#sample-status")).to_have_text("Approved")
    b.goto(f"/curation/datasets/{dataset.pk}/coverage/")
    b.click("text=resolve tickets with a new snapshot")
    expect(b.locator("#resolve-form input[name=tickets]")).to_be_checked()
    b.fill("input[name=label]", "closes the Appearance gap")
    b.click("button:has-text('Resolve and take snapshot')")
    expect(b.locator(".messages")).to_contain_text("Resolved 1 gap ticket in snapshot")
    snapshot = Snapshot.objects.get()
    ticket.refresh_from_db()
    assert ticket.status == GapTicket.Status.RESOLVED
    assert ticket.resolved_in_snapshot == snapshot and snapshot.sample_count == 1

    # --- the researcher sees it closed, with the snapshot that closed it ---------------
    r.goto(f"/curation/gaps/{ticket.pk}/")
    expect(r.locator("#gap-status")).to_have_text("Resolved")
    expect(r.locator("main")).to_contain_text(snapshot.short_hash)
