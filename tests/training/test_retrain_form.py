"""Retrain elsewhere from the browser: the form offers the method (as the API takes it), and
a provider past its cut-off is not offered at all, with the reason on the page, rather than
refused after submit."""

from __future__ import annotations

import html

import pytest
from django.urls import reverse

from tests.conftest import client_for
from tests.evaluation.conftest import no_queue  # noqa: F401  (the fixture artifacts needs)
from tests.training.test_hosted_exit_kit import artifacts, together_job  # noqa: F401
from training import services
from training.models import FineTuneJob

pytestmark = pytest.mark.django_db

CLOSED = "OpenAI takes no new fine-tuning jobs from 2027-01-06"


def retrain(client, job, **data):
    return client.post(reverse("training:finetune-retrain", args=[job.pk]), data)


def test_the_retrain_form_runs_the_method_chosen(together_job, admin_user):  # noqa: F811
    local = services.base_model_register_default()
    client = client_for(admin_user)
    page = client.get(together_job.get_absolute_url()).content.decode()
    assert 'name="method"' in page and '<option value="lora" selected>' in page
    response = retrain(client, together_job, base_model=local.pk, method="full")
    new = FineTuneJob.objects.get(retrained_from=together_job)
    assert response.status_code == 302 and (new.backend, new.method) == ("local", "full")
    retrain(client, together_job, base_model=local.pk)  # no method: the job's own
    assert FineTuneJob.objects.filter(retrained_from=together_job).latest("pk").method == "lora"


def test_a_provider_past_its_cut_off_is_not_offered_and_the_page_says_why(
    together_job, admin_user, settings  # noqa: F811
):
    openai = services.base_model_create(name="GPT 4.1 mini", kind="openai", model_id="gpt-4.1-mini")
    client = client_for(admin_user)
    before = html.unescape(client.get(together_job.get_absolute_url()).content.decode())
    assert f'<option value="{openai.pk}"' in before and CLOSED not in before
    settings.HOSTED_DATES_TODAY = "2027-01-07"
    after = html.unescape(client.get(together_job.get_absolute_url()).content.decode())
    assert f'<option value="{openai.pk}"' not in after
    assert 'id="retrain-closed"' in after and f"GPT 4.1 mini ({CLOSED})" in after
    assert retrain(client, together_job, base_model=openai.pk).status_code == 302
    api = client.post(
        f"/api/finetunes/{together_job.pk}/retrain/",
        {"base_model": openai.pk},
        content_type="application/json",
    )
    assert api.status_code == 400 and "accepts no new fine-tuning jobs" in api.json()["detail"]
    assert not FineTuneJob.objects.filter(retrained_from=together_job).exists()
