"""Training pages through the test client, with and without htmx: roles, launching,
polling, cancel and retry, and the loss curve geometry.

Launches run with the default ``db`` fixture, whose transaction never commits, so the
enqueue registered with ``on_commit`` never reaches a broker; tests count the callbacks.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from curation.services import sample_create, snapshot_create
from tests.factories import CategoryFactory, DatasetFactory, words
from training import selectors, services
from training.models import (
    BaseModel,
    FineTuneJob,
    Generation,
    JobStatus,
    ModelVersion,
    SamplingJob,
)

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _no_eager_tasks(settings, tmp_path):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"


@pytest.fixture
def snapshot(curator):
    dataset = DatasetFactory(name="Values")
    category = CategoryFactory()
    for n in range(3):
        sample_create(
            dataset=dataset,
            category=category,
            question=f"Question {n}?",
            answer=words(50, f"answer{n}"),
            user=curator,
            status="approved",
        )
    return snapshot_create(dataset=dataset, user=curator)


@pytest.fixture
def local_model(tmp_path):
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    return services.base_model_create(
        name="Local small",
        kind=BaseModel.Kind.LOCAL_DIR,
        path=str(directory),
        parameter_count=120_000_000,
    )


@pytest.fixture
def job(local_model, snapshot, admin_user):
    return services.finetune_launch(
        base_model=local_model,
        snapshot=snapshot,
        arm=ModelVersion.Arm.VALUES_TARGETED,
        user=admin_user,
    )


@pytest.fixture
def sampling_job(local_model, admin_user):
    return services.sampling_launch(
        prompts=["Hello?", {"text": "How are you?", "category": "Relationships"}],
        model_versions=[services.base_version(local_model)],
        n_samples=2,
        user=admin_user,
    )


def set_status(job, status, **fields):
    type(job).objects.filter(pk=job.pk).update(status=status, **fields)
    job.refresh_from_db()
    return job


def finetune_form_data(base_model, snapshot, **overrides) -> dict:
    data = {
        "base_model": base_model.pk,
        "snapshot": snapshot.pk,
        "arm": "values_targeted",
        "method": "full",
        "epochs": 2,
        "learning_rate": "0.0001",
        "batch_size": 4,
        "grad_accum": 1,
        "max_seq_len": 256,
        "warmup_steps": 0,
        "seed": 7,
        "lora_r": "",
        "lora_alpha": "",
    }
    return data | overrides


# --- roles ------------------------------------------------------------------------------------


READ_PAGES = [
    ("training:basemodel-list", False),
    ("training:finetune-list", False),
    ("training:finetune-detail", True),
    ("training:modelversion-list", False),
    ("training:sampling-list", False),
    ("training:sampling-detail", "sampling"),
]


def page_url(name, needs, job, sampling_job):
    if needs is True:
        return reverse(name, args=[job.pk])
    if needs == "sampling":
        return reverse(name, args=[sampling_job.pk])
    return reverse(name)


@pytest.mark.parametrize(("name", "needs"), READ_PAGES)
@pytest.mark.parametrize("persona", ["admin_client_", "curator_client", "researcher_client"])
def test_readers_see_the_pages(request, persona, name, needs, job, sampling_job):
    client = request.getfixturevalue(persona)
    response = client.get(page_url(name, needs, job, sampling_job))
    assert response.status_code == 200


@pytest.mark.parametrize(("name", "needs"), READ_PAGES)
@pytest.mark.parametrize("persona", ["rater_client", "outsider_client"])
def test_raters_and_role_less_users_are_refused(request, persona, name, needs, job, sampling_job):
    client = request.getfixturevalue(persona)
    assert client.get(page_url(name, needs, job, sampling_job)).status_code == 403


@pytest.mark.parametrize(("name", "needs"), READ_PAGES)
def test_anonymous_users_go_to_the_login_page(client, name, needs, job, sampling_job):
    response = client.get(page_url(name, needs, job, sampling_job))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize(
    "name",
    [
        "training:basemodel-create",
        "training:finetune-create",
        "training:sampling-create",
        "training:finetune-estimate",
    ],
)
@pytest.mark.parametrize("persona", ["curator_client", "researcher_client", "rater_client"])
def test_only_admins_open_the_launch_forms(request, persona, name, admin_client_, snapshot):
    assert request.getfixturevalue(persona).get(reverse(name)).status_code == 403
    assert admin_client_.get(reverse(name), **HX).status_code == 200


@pytest.mark.parametrize("persona", ["curator_client", "researcher_client"])
def test_readers_cannot_post_anything(request, persona, job, sampling_job, local_model, snapshot):
    client = request.getfixturevalue(persona)
    set_status(sampling_job, JobStatus.FAILED)
    posts = [
        (reverse("training:finetune-create"), finetune_form_data(local_model, snapshot)),
        (reverse("training:basemodel-create"), {"name": "x", "kind": "openai", "model_id": "m"}),
        (reverse("training:sampling-create"), {"prompts": "Hi", "model_versions": [1]}),
        (reverse("training:finetune-cancel", args=[job.pk]), {}),
        (reverse("training:finetune-retry", args=[job.pk]), {}),
        (reverse("training:sampling-cancel", args=[sampling_job.pk]), {}),
        (reverse("training:sampling-retry", args=[sampling_job.pk]), {}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
    assert FineTuneJob.objects.get().status == JobStatus.QUEUED
    assert SamplingJob.objects.get().status == JobStatus.FAILED
    assert BaseModel.objects.count() == 1


def test_actions_refuse_get(admin_client_, job):
    assert admin_client_.get(reverse("training:finetune-cancel", args=[job.pk])).status_code == 405


def test_a_missing_job_is_404(admin_client_):
    assert admin_client_.get(reverse("training:finetune-detail", args=[999])).status_code == 404


# --- base models ------------------------------------------------------------------------------


def test_base_model_list_shows_size_default_and_versions(admin_client_, local_model):
    services.base_model_register_default()
    response = admin_client_.get(reverse("training:basemodel-list"))
    content = response.content.decode()
    assert "Local small" in content and "120M" in content
    assert "SmolLM2-135M-Instruct" in content and ">default<" in content
    models = {base.name: base for base in response.context["base_models"]}
    assert models["Local small"].n_versions == 1


def test_registering_an_endpoint_creates_the_model_and_its_base_version(admin_client_, settings):
    settings.PALMSWEB_KEY_ENVS = [*settings.PALMSWEB_KEY_ENVS, "VLLM_KEY"]  # the operator's
    response = admin_client_.post(
        reverse("training:basemodel-create"),
        {
            "name": "Served Llama",
            "kind": "openai_compatible",
            "model_id": "llama-3-8b",
            "base_url": "http://vllm:8000/v1",
            "api_key_env": "VLLM_KEY",
            "parameter_count": 8_000_000_000,
        },
    )
    assert response.status_code == 302
    base = BaseModel.objects.get(name="Served Llama")
    assert (base.base_url, base.model_id, base.api_key_env) == (
        "http://vllm:8000/v1",
        "llama-3-8b",
        "VLLM_KEY",
    )
    assert base.versions.get().arm == ModelVersion.Arm.BASE


def test_a_pasted_key_is_refused_and_never_stored(admin_client_):
    response = admin_client_.post(
        reverse("training:basemodel-create"),
        {
            "name": "GPT",
            "kind": "openai",
            "model_id": "gpt-4o-mini",
            "api_key_env": "sk-proj-abcdefghijklmnop",
        },
    )
    assert response.status_code == 200
    assert "never the key itself" in response.content.decode()
    assert not BaseModel.objects.exists()


def test_a_local_directory_without_a_model_is_refused(admin_client_, tmp_path):
    response = admin_client_.post(
        reverse("training:basemodel-create"),
        {
            "name": "Nothing here",
            "kind": "local_dir",
            "path": str(tmp_path),
        },
    )
    assert "no config.json" in response.content.decode()
    assert not BaseModel.objects.exists()


# --- launching a fine-tune --------------------------------------------------------------------


def test_launch_form_is_prefilled_with_the_models_defaults(admin_client_, snapshot):
    default = services.base_model_register_default()
    response = admin_client_.get(reverse("training:finetune-create"))
    form = response.context["form"]
    assert form.initial["base_model"] == default.pk
    assert (
        form.initial["learning_rate"] == services.default_hyperparameters(default)["learning_rate"]
    )
    lora = admin_client_.get(
        reverse("training:finetune-create"),
        {"base_model": default.pk, "method": "lora", "learning_rate": "0.5", "defaults": "1"},
    ).context["form"]
    assert (
        lora.initial["learning_rate"]
        == services.default_hyperparameters(default, "lora")["learning_rate"]
    )
    assert response.context["estimate"]["per_epoch"] > 0


def test_changing_the_model_with_htmx_reloads_only_the_form(admin_client_, local_model, snapshot):
    response = admin_client_.get(
        reverse("training:finetune-create"),
        {"base_model": local_model.pk, "method": "lora", "snapshot": snapshot.pk, "defaults": "1"},
        **HX,
    )
    content = response.content.decode()
    assert "<html" not in content and 'id="finetune-form"' in content
    assert '<option value="lora" selected>' in content
    assert "HX-Request" in response.headers["Vary"]


def test_the_no_js_estimate_button_keeps_the_csrf_token_out_of_the_address(admin_client_):
    response = admin_client_.get(
        reverse("training:finetune-create"), {"csrfmiddlewaretoken": "abc", "epochs": "2"}
    )
    assert response.status_code == 302
    assert "csrfmiddlewaretoken" not in response["Location"]
    assert "epochs=2" in response["Location"]


def test_the_no_js_estimate_button_keeps_the_typed_values(admin_client_, local_model, snapshot):
    query = finetune_form_data(local_model, snapshot, epochs=4, max_seq_len=64) | {"refresh": 1}
    response = admin_client_.get(reverse("training:finetune-create"), query)
    assert response.context["form"].initial["epochs"] == "4"
    per_epoch = services.estimate_training_tokens(local_model, snapshot, 64)
    assert response.context["estimate"]["total"] == 4 * per_epoch


def test_estimate_fragment_counts_tokens_times_epochs(admin_client_, local_model, snapshot):
    per_epoch = services.estimate_training_tokens(local_model, snapshot, 256)
    response = admin_client_.get(
        reverse("training:finetune-estimate"),
        {"base_model": local_model.pk, "snapshot": snapshot.pk, "max_seq_len": 256, "epochs": 3},
        **HX,
    )
    content = response.content.decode()
    assert "<html" not in content
    assert f"<strong>{per_epoch * 3:,}</strong>" in content
    assert f"{per_epoch:,} per epoch × 3 epochs" in content


def test_estimate_without_a_snapshot_explains_itself(admin_client_, local_model):
    response = admin_client_.get(
        reverse("training:finetune-estimate"), {"base_model": local_model.pk}, **HX
    )
    assert "to see the estimated token count" in response.content.decode()


def test_estimate_without_htmx_opens_the_launch_page_with_those_values(admin_client_):
    response = admin_client_.get(reverse("training:finetune-estimate"), {"max_seq_len": 64})
    assert response.status_code == 302
    assert response["Location"] == reverse("training:finetune-create") + "?max_seq_len=64"


def test_launch_queues_one_job_and_opens_its_page(
    admin_client_, admin_user, local_model, snapshot, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client_.post(
            reverse("training:finetune-create"), finetune_form_data(local_model, snapshot)
        )
    job = FineTuneJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == job.get_absolute_url()
    assert len(callbacks) == 1
    assert job.status == JobStatus.QUEUED and job.created_by == admin_user
    assert job.hyperparameters["epochs"] == 2
    assert job.hyperparameters["learning_rate"] == 1e-4
    assert job.hyperparameters["seed"] == 7
    # A full fine-tune keeps the model's LoRA defaults, whatever the hidden fields said.
    assert job.hyperparameters["lora_r"] == services.default_hyperparameters(local_model)["lora_r"]
    assert job.estimated_tokens == 2 * services.estimate_training_tokens(local_model, snapshot, 256)


def test_a_lora_launch_keeps_its_rank(admin_client_, local_model, snapshot):
    admin_client_.post(
        reverse("training:finetune-create"),
        finetune_form_data(local_model, snapshot, method="lora", lora_r=4, lora_alpha=8),
    )
    job = FineTuneJob.objects.get()
    assert (job.method, job.hyperparameters["lora_r"], job.hyperparameters["lora_alpha"]) == (
        "lora",
        4,
        8,
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": "5"}, "less than or equal to 0.01"),
        ({"epochs": "0"}, "greater than or equal to 1"),
        ({"arm": "base"}, "Select a valid choice"),
        ({"snapshot": 999}, "Select a valid choice"),
    ],
)
def test_bad_launch_input_is_shown_and_creates_nothing(
    admin_client_, local_model, snapshot, overrides, message, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client_.post(
            reverse("training:finetune-create"),
            finetune_form_data(local_model, snapshot) | overrides,
        )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not FineTuneJob.objects.exists()
    assert callbacks == []


def test_a_service_refusal_is_shown_in_the_form(
    admin_client_, snapshot, django_capture_on_commit_callbacks
):
    remote = services.base_model_create(name="GPT", kind="openai", model_id="gpt-4o-mini")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client_.post(
            reverse("training:finetune-create"), finetune_form_data(remote, snapshot)
        )
    assert "needs at least 10 training examples" in response.content.decode()
    assert not FineTuneJob.objects.exists()
    assert callbacks == []


# --- the job page and its polling -------------------------------------------------------------


def test_job_page_shows_progress_loss_curve_log_and_settings(admin_client_, job, snapshot):
    FineTuneJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING,
        progress_done=3,
        progress_total=10,
        eta_seconds=75,
        tokens_per_second=412.3,
        loss_history=[[1, 2.5], [2, 2.0], [3, 1.25]],
        log="[12:00:00] step 3\n",
    )
    response = admin_client_.get(job.get_absolute_url())
    content = response.content.decode()
    assert "30%" in content and "step 3 / 10" in content
    assert 'ETA <span data-eta-seconds="75"' in content and "1 min 15 s</span>" in content
    assert "412 tokens/s" in content
    assert 'style="width:30%"' in content
    assert "<polyline" in content and 'points="72,12 ' in content
    assert "step 3" in content
    assert snapshot.content_hash in content
    assert "learning_rate" in content
    assert 'hx-trigger="every 2s"' in content
    assert ">Cancel</button>" in content


def test_readers_see_the_job_page_without_buttons(curator_client, job):
    content = curator_client.get(job.get_absolute_url()).content.decode()
    assert "Fine-tune #" in content and ">Cancel</button>" not in content


def test_a_failed_job_shows_its_reason_and_a_retry_button(admin_client_, job):
    set_status(job, JobStatus.FAILED, error="Out of memory. Lower the batch size.")
    content = admin_client_.get(job.get_absolute_url()).content.decode()
    assert "Out of memory. Lower the batch size." in content
    assert ">Retry</button>" in content and ">Cancel</button>" not in content
    assert 'hx-trigger="every 2s"' not in content


def test_a_finished_job_shows_its_model_version(admin_client_, job, local_model):
    version = ModelVersion.objects.create(
        base_model=local_model,
        name="Local small · Values-targeted · #1",
        arm=ModelVersion.Arm.VALUES_TARGETED,
        metadata={"snapshot_hash": "ab" * 32},
    )
    set_status(job, JobStatus.SUCCEEDED, result=version, progress_done=5, progress_total=5)
    content = admin_client_.get(job.get_absolute_url()).content.decode()
    assert "Local small · Values-targeted · #1" in content
    assert "100%" in content


def test_progress_partial_for_htmx_keeps_polling_while_running(admin_client_, job):
    set_status(job, JobStatus.RUNNING, progress_done=1, progress_total=4)
    url = reverse("training:finetune-progress", args=[job.pk])
    response = admin_client_.get(url, **HX)
    content = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in content and 'id="job-progress"' in content
    assert 'hx-trigger="every 2s"' in content and f'hx-get="{url}"' in content
    assert "25%" in content
    assert "HX-Request" in response.headers["Vary"]


def test_progress_partial_stops_polling_once_the_job_finished(admin_client_, job):
    set_status(job, JobStatus.SUCCEEDED, progress_done=4, progress_total=4)
    response = admin_client_.get(reverse("training:finetune-progress", args=[job.pk]), **HX)
    content = response.content.decode()
    assert "hx-trigger" not in content and "100%" in content


def test_progress_without_htmx_goes_to_the_job_page(admin_client_, job):
    response = admin_client_.get(reverse("training:finetune-progress", args=[job.pk]))
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()


def test_progress_polling_is_cheap(admin_client_, job, django_assert_max_num_queries):
    url = reverse("training:finetune-progress", args=[job.pk])
    with django_assert_max_num_queries(6):
        admin_client_.get(url, **HX)


# --- cancel and retry -------------------------------------------------------------------------


def test_cancelling_a_queued_job_ends_it(admin_client_, job):
    response = admin_client_.post(reverse("training:finetune-cancel", args=[job.pk]))
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED


def test_cancelling_a_running_job_with_htmx_asks_it_to_stop(admin_client_, job):
    set_status(job, JobStatus.RUNNING)
    response = admin_client_.post(reverse("training:finetune-cancel", args=[job.pk]), **HX)
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.cancel_requested
    content = response.content.decode()
    assert "<html" not in content and "Cancel requested" in content


def test_cancelling_a_finished_job_says_so(admin_client_, job):
    set_status(job, JobStatus.SUCCEEDED)
    response = admin_client_.post(reverse("training:finetune-cancel", args=[job.pk]), **HX)
    assert response.status_code == 400
    assert "already finished" in response.content.decode()
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED


def test_retrying_a_failed_job_queues_it_again(
    admin_client_, job, django_capture_on_commit_callbacks
):
    set_status(job, JobStatus.FAILED, error="boom")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client_.post(reverse("training:finetune-retry", args=[job.pk]), **HX)
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.QUEUED, "")
    assert len(callbacks) == 1
    assert 'hx-trigger="every 2s"' in response.content.decode()  # polling resumes


def test_retrying_a_queued_job_is_refused(admin_client_, job, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client_.post(
            reverse("training:finetune-retry", args=[job.pk]), follow=True
        )
    assert "Only failed or cancelled jobs can be retried." in response.content.decode()
    assert callbacks == []


# --- lists ------------------------------------------------------------------------------------


def test_finetune_list_shows_status_and_progress_in_few_queries(
    admin_client_, local_model, snapshot, django_assert_max_num_queries
):
    for n in range(5):
        job = services.finetune_launch(
            base_model=local_model, snapshot=snapshot, arm=ModelVersion.Arm.VALUES_TARGETED
        )
        set_status(job, JobStatus.RUNNING, progress_done=n, progress_total=4)
    with django_assert_max_num_queries(8):
        response = admin_client_.get(reverse("training:finetune-list"))
    content = response.content.decode()
    assert content.count('class="badge running"') == 5
    assert 'style="width:50%"' in content
    assert 'hx-trigger="every 5s"' in content


def test_finetune_list_for_htmx_is_the_table_only(admin_client_, job):
    response = admin_client_.get(reverse("training:finetune-list"), **HX)
    content = response.content.decode()
    assert "<html" not in content and 'id="jobs"' in content


def test_model_versions_show_arm_base_size_and_snapshot_hash(admin_client_, job, local_model):
    ModelVersion.objects.create(
        base_model=local_model,
        name="Tuned",
        arm=ModelVersion.Arm.CONTROL,
        metadata={"snapshot_hash": "0123456789abcdef" * 4},
    )
    content = admin_client_.get(reverse("training:modelversion-list")).content.decode()
    assert "Tuned" in content and "Control" in content and "Local small (base)" in content
    assert "0123456789ab<" in content and "120M" in content


# --- sampling ---------------------------------------------------------------------------------


def test_sampling_launch_from_typed_prompts(
    admin_client_, local_model, django_capture_on_commit_callbacks
):
    version = services.base_version(local_model)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client_.post(
            reverse("training:sampling-create"),
            {
                "name": "Smoke",
                "prompts": "Hello?\n\n  Who are you?  \n",
                "model_versions": [version.pk],
                "n_samples": 2,
                "temperature": 0.5,
                "top_p": 0.8,
                "max_new_tokens": 16,
                "seed": 5,
            },
        )
    job = SamplingJob.objects.get()
    assert response["Location"] == job.get_absolute_url()
    assert len(callbacks) == 1
    assert job.prompts == [
        {"text": "Hello?", "category": ""},
        {"text": "Who are you?", "category": ""},
    ]
    assert (job.n_samples, job.temperature, job.top_p, job.max_new_tokens, job.seed) == (
        2,
        0.5,
        0.8,
        16,
        5,
    )
    assert job.progress_total == 4


def test_sampling_launch_with_the_demo_prompts_keeps_their_categories(admin_client_, local_model):
    admin_client_.post(
        reverse("training:sampling-create"),
        {
            "use_demo_prompts": "on",
            "prompts": "One more?",
            "model_versions": [services.base_version(local_model).pk],
            "n_samples": 1,
            "temperature": 0.7,
            "top_p": 0.9,
            "max_new_tokens": 20,
            "seed": 0,
        },
    )
    job = SamplingJob.objects.get()
    assert len(job.prompts) == 41
    assert job.prompts[0]["category"] == "Abuse, Violence and Threat"
    assert job.prompts[-1] == {"text": "One more?", "category": ""}
    assert len({prompt["category"] for prompt in job.prompts[:40]}) == 8


def test_sampling_launch_without_prompts_or_models_creates_nothing(admin_client_):
    response = admin_client_.post(
        reverse("training:sampling-create"),
        {
            "prompts": "  \n",
            "n_samples": 1,
            "temperature": 0.7,
            "top_p": 0.9,
            "max_new_tokens": 20,
            "seed": 0,
        },
    )
    content = response.content.decode()
    assert "Type at least one prompt" in content and "This field is required" in content
    assert not SamplingJob.objects.exists()


def add_outputs(job, count: int):
    version = job.model_versions.get()
    Generation.objects.bulk_create(
        Generation(
            job=job,
            model_version=version,
            prompt_index=n % 2,
            sample_index=n // 2,
            prompt_text=job.prompts[n % 2]["text"],
            text=f"output {n}",
            tokens_generated=3,
            temperature=0.7,
            top_p=0.9,
            max_new_tokens=200,
            seed=n,
        )
        for n in range(count)
    )


def test_sampling_page_shows_outputs_paginated(admin_client_, sampling_job):
    add_outputs(sampling_job, 60)
    response = admin_client_.get(sampling_job.get_absolute_url())
    content = response.content.decode()
    assert "60 outputs so far" in content
    assert content.count('<td class="prewrap">output ') == 50
    assert "Relationships" in content  # the prompt's category
    page_two = admin_client_.get(sampling_job.get_absolute_url(), {"page": 2}, **HX)
    content = page_two.content.decode()
    assert "<html" not in content and content.count('<td class="prewrap">output ') == 10


def test_sampling_progress_polls_then_asks_for_the_outputs(admin_client_, sampling_job):
    url = reverse("training:sampling-progress", args=[sampling_job.pk])
    set_status(sampling_job, JobStatus.RUNNING, progress_done=1)
    running = admin_client_.get(url, {"seen": 1}, **HX)
    assert 'hx-trigger="every 2s"' in running.content.decode()
    assert "HX-Trigger" not in running.headers
    assert "?seen=1" in running.content.decode()
    # A batch landed since the last poll: the outputs table reloads to show it.
    set_status(sampling_job, JobStatus.RUNNING, progress_done=3)
    batch = admin_client_.get(url, {"seen": 1}, **HX)
    assert batch.headers["HX-Trigger"] == "sampling-batch" and "?seen=3" in batch.content.decode()
    page = admin_client_.get(sampling_job.get_absolute_url()).content.decode()
    assert "sampling-finished from:body, sampling-batch from:body" in page
    set_status(sampling_job, JobStatus.SUCCEEDED, progress_done=4)
    finished = admin_client_.get(url, **HX)
    assert "hx-trigger" not in finished.content.decode()
    assert finished.headers["HX-Trigger"] == "sampling-finished"
    assert admin_client_.get(url).status_code == 302


def test_sampling_cancel_and_retry(admin_client_, sampling_job):
    admin_client_.post(reverse("training:sampling-cancel", args=[sampling_job.pk]))
    sampling_job.refresh_from_db()
    assert sampling_job.status == JobStatus.CANCELLED
    admin_client_.post(reverse("training:sampling-retry", args=[sampling_job.pk]))
    sampling_job.refresh_from_db()
    assert sampling_job.status == JobStatus.QUEUED


def test_sampling_list_counts_outputs(admin_client_, sampling_job):
    add_outputs(sampling_job, 3)
    response = admin_client_.get(reverse("training:sampling-list"))
    assert response.context["page"][0].n_generations == 3


# --- the loss curve geometry ------------------------------------------------------------------


def test_loss_points_span_the_box_with_high_loss_on_top():
    points = selectors.loss_curve_svg_points([[1, 3.0], [2, 2.0], [3, 1.0]], 200, 100)
    assert points == [(0.0, 0.0), (100.0, 50.0), (200.0, 100.0)]


def test_loss_points_sort_steps_and_drop_non_numbers():
    history = [[3, 1.0], [1, float("nan")], [2, "x"], [1, 2.0], ["bad"], None]
    assert selectors.loss_curve_svg_points(history, 10, 10) == [(0.0, 0.0), (10.0, 10.0)]


def test_a_flat_or_single_point_curve_sits_in_the_middle():
    assert selectors.loss_curve_svg_points([[5, 1.5]], 100, 40) == [(0.0, 20.0)]
    assert selectors.loss_curve_svg_points([[1, 2], [2, 2]], 100, 40) == [
        (0.0, 20.0),
        (100.0, 20.0),
    ]
    assert selectors.loss_curve_svg_points([], 100, 40) == []


def test_long_histories_are_thinned_keeping_both_ends():
    history = [[step, 1 / step] for step in range(1, 5001)]
    points = selectors.loss_curve_svg_points(history, 500, 100, max_points=100)
    assert len(points) == 100
    assert points[0] == (0.0, 0.0) and points[-1] == (500.0, 100.0)


def test_loss_chart_places_ticks_and_the_curve_inside_the_plot():
    chart = selectors.loss_chart([[0, 4.0], [10, 2.0]], width=300, height=200)
    assert chart.points == f"{chart.left},{chart.top} {chart.right},{chart.bottom}"
    assert [tick.label for tick in chart.x_ticks] == ["0", "5", "10"]
    assert [tick.label for tick in chart.y_ticks] == ["2", "3", "4"]
    assert chart.y_ticks[0].position == chart.bottom and chart.y_ticks[-1].position == chart.top
    assert (chart.last_x, chart.last_y) == (chart.right, chart.bottom)
    assert not selectors.loss_chart([]).has_curve


# --- Django admin -----------------------------------------------------------------------------


@pytest.fixture
def superuser_client(client, django_user_model):
    # The "admin" persona is staff with the admin role; Django's admin also needs model
    # permissions, which a superuser holds.
    client.force_login(django_user_model.objects.create_superuser("root", "root@x.test", "pw"))
    return client


def test_admin_shows_training_models_and_keeps_jobs_read_only(superuser_client, job, sampling_job):
    admin_client = superuser_client
    for model in ["basemodel", "modelversion", "finetunejob", "samplingjob", "generation"]:
        assert admin_client.get(f"/admin/training/{model}/").status_code == 200, model
    page = admin_client.get(f"/admin/training/finetunejob/{job.pk}/change/")
    assert page.status_code == 200
    assert b'name="status"' not in page.content  # shown, not editable
    assert admin_client.get("/admin/training/finetunejob/add/").status_code == 403
    admin_client.post(f"/admin/training/finetunejob/{job.pk}/change/", {"status": "succeeded"})
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED


def test_admin_action_cancels_jobs(superuser_client, job):
    superuser_client.post(
        "/admin/training/finetunejob/", {"action": "cancel_jobs", "_selected_action": [job.pk]}
    )
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
