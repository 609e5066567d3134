"""Issue 12, item 18: the new-ticket form carries the report's source without asking anyone
to type JSON, and shows it (and the ticket page) formatted, p-values included."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from django.urls import reverse

from curation import gaps
from curation.models import GapTicket
from palmsweb.lib.format import format_p, format_signed
from tests.factories import CategoryFactory

pytestmark = pytest.mark.django_db

SOURCE = {"kind": "category", "study": 7, "study_name": "Kindness", "mean_diff": -0.4567,
          "p_holm": 0.0123456, "extra": "kept"}  # fmt: skip


def test_numbers_print_as_the_report_prints_them():
    assert [format_p(p) for p in (0.0004, 0.0123456, 1.0, None, float("nan"))] == [
        "< 0.001", "0.012", "1.000", "—", "—",
    ]  # fmt: skip
    assert [format_signed(v) for v in (0.456, -0.3, 0, None)] == ["+0.46", "−0.30", "0.00", "—"]


def test_the_source_is_described_in_words():
    rows = gaps.describe_source(SOURCE)
    assert rows == [
        ("Found as", "a weak category in a study", ""),
        ("Study", "“Kindness” (#7)", "/evaluation/studies/7/results/"),
        ("Values-targeted − base", "−0.46", ""),
        ("p (Holm-adjusted)", "0.012", ""),
        ("extra", "kept", ""),
    ]
    assert gaps.describe_source({"kind": "output", "output": "ab12", "mean": 1.6666, "p_holm":
                                 0.0001})[1:] == [("Output", "ab12", ""),
                                                  ("Mean rating", "1.67 of 5", ""),
                                                  ("p (Holm-adjusted)", "< 0.001", "")]  # fmt: skip


def test_the_form_from_the_report_link_shows_the_source_and_hides_its_json(researcher_client):
    category = CategoryFactory()
    query = urlencode({"category": category.pk, "title": "Weak", "source": json.dumps(SOURCE)})
    page = researcher_client.get(reverse("curation:gap-create") + "?" + query)
    body = page.content.decode()
    assert '<input type="hidden" name="source"' in body and "<textarea name=\"source\"" not in body
    assert "From the report" in body and "<dd>0.012</dd>" in body and "<dd>−0.46</dd>" in body
    assert '<a href="/evaluation/studies/7/results/">“Kindness” (#7)</a>' in body
    assert "0.0123456" not in body.split("<form")[0]  # the raw figure only in the hidden field

    researcher_client.post(reverse("curation:gap-create"), {
        "category": category.pk, "title": "Weak", "source": json.dumps(SOURCE),
    })  # fmt: skip
    ticket = GapTicket.objects.get()
    assert ticket.source == SOURCE  # stored exactly, shown formatted
    detail = researcher_client.get(reverse("curation:gap-detail", args=[ticket.pk]))
    assert "Where it came from" in detail.content.decode()
    assert "<dd>0.012</dd>" in detail.content.decode()


def test_a_ticket_filed_by_hand_has_no_source_section(curator_client):
    page = curator_client.get(reverse("curation:gap-create")).content.decode()
    assert "From the report" not in page and 'type="hidden" name="source"' in page
