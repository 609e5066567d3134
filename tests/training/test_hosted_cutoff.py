"""OpenAI's cut-off, handled: launches refused from the configured date (form, API, retry,
a queued job run late), OpenAI's own ``403 training_not_available`` as a readable reason,
and the shutdown date of every hosted model version (the provider's listing, else the
configured date of its family). The clock is the ``HOSTED_DATES_TODAY`` setting."""

from __future__ import annotations

from datetime import date

import pytest
from django.urls import reverse

from curation.services import sample_create, snapshot_create
from palmsweb.settings import HOSTED_PROVIDER_DATES_DEFAULT, hosted_provider_dates
from tests.factories import CategoryFactory, DatasetFactory, words
from tests.fake_openai import API_KEY, NOT_AVAILABLE, fake_openai  # noqa: F401  (the fixture)
from tests.training.test_views import finetune_form_data
from training import services
from training.engine.errors import TrainingNotAvailable
from training.engine.hosted.base import HostedJobSpec
from training.engine.hosted.openai import OpenAIFineTuneBackend
from training.models import BaseModel, FineTuneJob, JobStatus, ModelVersion
from training.services import hosted_dates

pytestmark = pytest.mark.django_db

CUTOFF = "2027-01-06"
JSON = "application/json"


@pytest.fixture
def today(settings):
    """Move the hosted-dates clock: ``today("2027-01-06")``."""

    def move(day: str) -> None:
        settings.HOSTED_DATES_TODAY = day

    return move


@pytest.fixture
def api(fake_openai, settings):  # noqa: F811
    """A local fake OpenAI (tests/fake_openai.py) as the endpoint of OpenAI base models."""
    settings.OPENAI_BASE_URL = fake_openai.base_url
    return fake_openai


@pytest.fixture
def snapshot():
    dataset, category = DatasetFactory(kind="values_targeted"), CategoryFactory()
    for n in range(10):
        sample_create(dataset=dataset, category=category, question=f"Question {n}?",
                      answer=words(45, f"a{n}"), status="approved")  # fmt: skip
    return snapshot_create(dataset=dataset)


@pytest.fixture
def gpt(db):
    return services.base_model_create(name="GPT-4o mini", kind="openai", model_id="gpt-4o-mini")


def launch(gpt, snapshot, django_capture_on_commit_callbacks) -> FineTuneJob:
    with django_capture_on_commit_callbacks(execute=False):
        return services.finetune_launch(base_model=gpt, snapshot=snapshot)


# --- the settings ---------------------------------------------------------------------------


def test_openai_dates_are_configured_per_provider():
    dates = hosted_dates.provider_dates("openai")
    assert dates.no_new_jobs_from == date(2027, 1, 6)
    for family in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"):
        assert dates.model_shutdowns[family] == date(2027, 1, 14)
    together = hosted_dates.provider_dates("together")
    assert together.no_new_jobs_from is None and together.model_shutdowns == {}
    assert hosted_dates.provider_dates("nobody") is None


def test_the_environment_moves_one_date_and_keeps_the_others():
    merged = hosted_provider_dates(
        HOSTED_PROVIDER_DATES_DEFAULT,
        '{"openai": {"no_new_jobs_from": "2027-02-01",'
        ' "model_shutdowns": {"gpt-4o": "2027-03-01"}},'
        ' "together": {"label": "Together AI", "model_shutdowns": {"m": "2028-01-01"}}}',
    )
    assert merged["openai"]["no_new_jobs_from"] == "2027-02-01"
    assert merged["openai"]["model_shutdowns"]["gpt-4o"] == "2027-03-01"
    assert merged["openai"]["model_shutdowns"]["gpt-4.1"] == "2027-01-14"
    assert merged["together"]["model_shutdowns"] == {"m": "2028-01-01"}
    assert HOSTED_PROVIDER_DATES_DEFAULT["openai"]["model_shutdowns"]["gpt-4o"] == "2027-01-14"


def test_a_malformed_date_is_a_configuration_error(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.HOSTED_PROVIDER_DATES = {"openai": {"no_new_jobs_from": "6 January"}}
    with pytest.raises(ImproperlyConfigured, match="no_new_jobs_from"):
        hosted_dates.provider_dates("openai")


@pytest.mark.parametrize(
    ("model_id", "family"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("ft:gpt-4o-2024-08-06:acme:palms:abc123", "gpt-4o"),
        ("ft:gpt-4.1-mini-2025-04-14:acme::xyz:ckpt-step-10", "gpt-4.1-mini"),
        ("gpt-4o-audio-preview", "gpt-4o-audio-preview"),
    ],
)
def test_a_model_id_belongs_to_its_family(model_id, family):
    assert hosted_dates.model_family(model_id) == family


# --- refused before launch ------------------------------------------------------------------


def test_the_day_before_the_cutoff_an_openai_job_launches(
    gpt, snapshot, today, django_capture_on_commit_callbacks
):
    today("2027-01-05")
    assert launch(gpt, snapshot, django_capture_on_commit_callbacks).status == JobStatus.QUEUED


@pytest.mark.parametrize("day", [CUTOFF, "2027-03-01"])
def test_from_the_cutoff_the_service_refuses_and_creates_nothing(
    gpt, snapshot, today, day, django_capture_on_commit_callbacks
):
    today(day)
    refused = pytest.raises(
        services.HostedCutoffError, match=f"no new fine-tuning jobs from {CUTOFF}"
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks, refused:
        services.finetune_launch(base_model=gpt, snapshot=snapshot)
    assert not FineTuneJob.objects.exists() and callbacks == []


def test_local_models_are_not_affected_by_the_cutoff(
    tiny_base, snapshot, today, django_capture_on_commit_callbacks
):
    today("2030-01-01")
    assert launch(tiny_base, snapshot, django_capture_on_commit_callbacks).backend == "local"


def test_the_form_shows_the_cutoff_under_the_base_model(admin_client_, gpt, snapshot, today):
    today(CUTOFF)
    response = admin_client_.post(
        reverse("training:finetune-create"), finetune_form_data(gpt, snapshot)
    )
    assert response.status_code == 200
    assert "base_model" in response.context["form"].errors
    error = response.context["form"].errors["base_model"][0]
    assert f"OpenAI accepts no new fine-tuning jobs from {CUTOFF}" in error
    assert "nothing was launched" in error and "2027-01-14" in error
    assert not FineTuneJob.objects.exists()


def test_the_api_answers_400_with_the_cutoff(admin_client_, gpt, snapshot, today):
    today(CUTOFF)
    response = admin_client_.post(
        "/api/finetunes/", {"base_model": gpt.pk, "snapshot": snapshot.pk}, content_type=JSON
    )
    assert response.status_code == 400
    assert f"no new fine-tuning jobs from {CUTOFF}" in response.json()["detail"]
    assert not FineTuneJob.objects.exists()


def test_a_moved_cutoff_moves_the_refusal(settings, gpt, snapshot, today,
                                          django_capture_on_commit_callbacks):
    today(CUTOFF)
    settings.HOSTED_PROVIDER_DATES = hosted_provider_dates(
        HOSTED_PROVIDER_DATES_DEFAULT, '{"openai": {"no_new_jobs_from": "2027-02-01"}}'
    )
    assert launch(gpt, snapshot, django_capture_on_commit_callbacks).pk


def test_retrying_an_openai_job_after_the_cutoff_is_refused(
    gpt, snapshot, today, django_capture_on_commit_callbacks
):
    ft = launch(gpt, snapshot, django_capture_on_commit_callbacks)
    FineTuneJob.objects.filter(pk=ft.pk).update(status=JobStatus.FAILED, error="boom")
    today(CUTOFF)
    with pytest.raises(services.HostedCutoffError):
        services.job_retry(job=FineTuneJob.objects.get(pk=ft.pk))
    ft.refresh_from_db()
    assert (ft.status, ft.error) == (JobStatus.FAILED, "boom")


def test_a_job_queued_before_the_cutoff_and_run_after_it_fails_without_calling_openai(
    api, gpt, snapshot, today, django_capture_on_commit_callbacks
):
    ft = launch(gpt, snapshot, django_capture_on_commit_callbacks)
    today(CUTOFF)
    services.finetune_execute(ft.pk)
    ft.refresh_from_db()
    assert ft.status == JobStatus.FAILED and api.requests == []
    assert f"no new fine-tuning jobs from {CUTOFF}" in ft.error


# --- OpenAI's own refusal -------------------------------------------------------------------


def test_training_not_available_is_not_retried_and_keeps_openais_words(api):
    api.training_available = False
    backend = OpenAIFineTuneBackend(API_KEY, base_url=api.base_url, backoff_base=0)
    file_id = backend.upload_training_file(b'{"messages": []}\n')
    with pytest.raises(TrainingNotAvailable) as refused:
        backend.create_job(HostedJobSpec("gpt-4o-mini", file_id))
    assert len(api.calls("POST", "/v1/fine_tuning/jobs")) == 1
    assert refused.value.server_message == NOT_AVAILABLE
    assert "training_not_available" in str(refused.value)


def test_a_403_training_not_available_becomes_a_reason_naming_the_cutoff(
    api, gpt, snapshot, admin_client_, django_capture_on_commit_callbacks
):
    ft = launch(gpt, snapshot, django_capture_on_commit_callbacks)
    api.training_available = False
    services.finetune_execute(ft.pk)
    ft.refresh_from_db()
    assert ft.status == JobStatus.FAILED and not ft.remote_job_id
    assert len(api.calls("POST", "/v1/fine_tuning/jobs")) == 1
    assert "fine-tuning is no longer available to this account" in ft.error
    assert f"from anyone on {CUTOFF}" in ft.error
    assert NOT_AVAILABLE in ft.error
    assert "Traceback" not in ft.error and "Check the API key" not in ft.error
    page_text = admin_client_.get(ft.get_absolute_url()).content.decode()
    assert f"from anyone on {CUTOFF}" in page_text
    detail = admin_client_.get(f"/api/finetunes/{ft.pk}/").json()
    assert detail["status"] == "failed" and f"from anyone on {CUTOFF}" in detail["error"]


# --- shutdown dates -------------------------------------------------------------------------


def succeed(api, ft, *, listed=None, listing_fails=False):
    """The job succeeds at OpenAI, whose model listing gives the fine-tuned model
    ``listed`` as its shutdown date (or answers 404); palmsweb polls it."""
    api.advance(ft.remote_job_id, "succeeded")
    model = api.jobs[ft.remote_job_id]["fine_tuned_model"]
    if listed is not None:
        api.list_shutdown(model, listed)
    if listing_fails:
        api.retire(model)
    assert services.openai_poll(ft.pk) == JobStatus.SUCCEEDED
    assert api.calls("GET", f"/v1/models/{model}")
    ft.refresh_from_db()
    return ft.result


@pytest.fixture
def running(api, gpt, snapshot, django_capture_on_commit_callbacks):
    ft = launch(gpt, snapshot, django_capture_on_commit_callbacks)
    services.finetune_execute(ft.pk)
    ft.refresh_from_db()
    assert ft.status == JobStatus.RUNNING
    return ft


@pytest.mark.parametrize("listed", ["2027-01-10", 1799582400])  # ISO date; Unix s, noon UTC
def test_the_providers_listed_shutdown_date_is_stored_on_the_version(api, running, listed):
    version = succeed(api, running, listed=listed)
    assert version.metadata["shutdown_date"] == "2027-01-10"
    shutdown = services.version_shutdown(version)
    assert (shutdown.on, shutdown.source) == (date(2027, 1, 10), "provider")


def test_without_a_listed_date_the_configured_one_of_its_family_applies(api, running):
    version = succeed(api, running)
    assert version.remote_model_id.startswith("ft:gpt-4o-mini-2024-07-18:")
    assert "shutdown_date" not in version.metadata
    shutdown = services.version_shutdown(version)
    assert (shutdown.on, shutdown.source) == (date(2027, 1, 14), "configured")


def test_a_failed_listing_does_not_fail_the_job(api, running):
    version = succeed(api, running, listing_fails=True)
    running.refresh_from_db()
    assert running.status == JobStatus.SUCCEEDED
    assert "could not read the shutdown date" in running.log
    assert services.version_shutdown(version).on == date(2027, 1, 14)


def test_shutdown_dates_on_the_pages_and_in_the_api(api, running, admin_client_, tiny_base):
    version = succeed(api, running, listed="2027-01-10")
    base = services.base_version(running.base_model)
    listing = admin_client_.get(reverse("training:modelversion-list")).content.decode()
    assert 'datetime="2027-01-10"' in listing and "(from the provider)" in listing
    assert 'datetime="2027-01-14"' in listing and "(configured)" in listing
    detail = admin_client_.get(running.get_absolute_url()).content.decode()
    assert 'id="result-shutdown"' in detail and "2027-01-10" in detail
    rows = {row["id"]: row for row in admin_client_.get("/api/model-versions/").json()["results"]}
    assert (rows[version.pk]["shutdown_date"], rows[version.pk]["shutdown_date_source"]) == (
        "2027-01-10",
        "provider",
    )
    assert (rows[base.pk]["shutdown_date"], rows[base.pk]["shutdown_date_source"]) == (
        "2027-01-14",
        "configured",
    )
    local = services.base_version(tiny_base)
    assert rows[local.pk]["shutdown_date"] is None
    assert rows[local.pk]["shutdown_date_source"] is None


def test_models_without_a_configured_family_have_no_shutdown_date(db):
    custom = services.base_model_create(name="Custom", kind="openai", model_id="my-own-model")
    endpoint = services.base_model_create(
        name="vLLM",
        kind=BaseModel.Kind.OPENAI_COMPATIBLE,
        model_id="gpt-4o",
        base_url="http://localhost:8000/v1",
        api_key_env="OPENAI_API_KEY",
    )
    for base in (custom, endpoint):
        assert services.version_shutdown(services.base_version(base)) is None
    assert ModelVersion.objects.count() == 2


def test_a_fine_tune_whose_name_has_no_family_goes_with_its_base_models_date(db, settings):
    """A Together fine-tune is named ``user/Model-suffix-id``, which names no family: it
    shuts down with the model it was fine-tuned from (OpenAI's too, should one's name
    not parse)."""
    together = {"label": "Together AI", "model_shutdowns": {"meta-llama/Llama-3-8b": "2027-06-30"}}
    settings.HOSTED_PROVIDER_DATES = {**settings.HOSTED_PROVIDER_DATES, "together": together}
    llama = services.base_model_create(
        name="llama", kind="together", model_id="meta-llama/Llama-3-8b",
        base_url="https://api.together.xyz/v1",
    )  # fmt: skip
    gpt = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4o-mini")
    tuned = [
        ModelVersion.objects.create(base_model=llama, name="vt", arm="values_targeted",
                                    remote_model_id="fakeuser/Llama-3-8b-palms-vt-ft-0001"),
        ModelVersion.objects.create(base_model=gpt, name="vt", arm="values_targeted",
                                    remote_model_id="ft:custom:org::abc"),
    ]  # fmt: skip
    dates = [services.version_shutdown(version) for version in tuned]
    assert [(d.on, d.source) for d in dates] == [
        (date(2027, 6, 30), "configured"), (date(2027, 1, 14), "configured"),
    ]  # fmt: skip
    assert services.version_shutdown(services.base_version(llama)).on == date(2027, 6, 30)
