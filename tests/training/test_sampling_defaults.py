"""Sampling recommendations per model size (issue 16 item 6): the table, the base-model API
and the study form that shows them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from training.services import SAMPLING_DEFAULTS, sampling_default_for


def test_each_size_gets_its_row_and_every_row_says_why():
    assert sampling_default_for(135_000_000).max_new_tokens == 120
    assert sampling_default_for(135_000_000).temperature == 0.2
    assert sampling_default_for(499_999_999) is SAMPLING_DEFAULTS[0]
    assert sampling_default_for(500_000_000) is SAMPLING_DEFAULTS[1]
    assert sampling_default_for(70_000_000_000) is SAMPLING_DEFAULTS[2]
    assert sampling_default_for(None) is None
    assert all(len(row.reason) > 40 for row in SAMPLING_DEFAULTS)
    temperatures = [row.temperature for row in SAMPLING_DEFAULTS]
    assert temperatures == sorted(temperatures)  # smaller models sample cooler


@pytest.mark.django_db
def test_the_base_model_api_reports_the_recommendation(admin_client_, tiny_base):
    body = admin_client_.get(f"/api/base-models/{tiny_base.pk}/").json()
    assert body["sampling_default"]["temperature"] == 0.2
    assert "SmolLM2" in body["sampling_default"]["reason"]


@pytest.mark.django_db
def test_the_study_form_shows_the_recommendations(admin_client_):
    page = admin_client_.get(reverse("evaluation:study-create")).content.decode()
    assert "Recommended per model size" in page
    for row in SAMPLING_DEFAULTS:
        assert row.size in page
