"""Together AI fine-tuning through the services, against a local fake Together that speaks
the REST protocol the official SDK uses: launch, mirror, succeed and sample the result,
failure, cancel, 403 training_not_available, rate limits with retry, a model that
disappears, the hyperparameter mapping, LoRA or full, and DPO uploads."""

from __future__ import annotations

import json

import pytest

from curation.services import sample_create, snapshot_create
from tests.factories import CategoryFactory, DatasetFactory, words
from tests.fake_together import fake_together, reply_tag  # noqa: F401  (the fixture)
from training import services
from training.engine.errors import EngineError
from training.engine.hosted.base import HostedJobSpec, preference_jsonl
from training.engine.hosted.together import TogetherFineTuneBackend, sdk_root
from training.models import FineTuneJob, Generation, JobStatus, ModelVersion

pytestmark = pytest.mark.django_db
LLAMA = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
RATE_LIMITED = {"error": {"message": "Rate limit reached", "type": "rate_limit"}}


@pytest.fixture
def together(fake_together, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-secret")
    fake_together.api_key = "tg-secret"
    return fake_together


@pytest.fixture
def snapshot():
    dataset, category = DatasetFactory(), CategoryFactory()
    for n in range(4):
        sample_create(
            dataset=dataset,
            category=category,
            question=f"Question {n}?",
            answer=words(40, f"a{n}"),
            status="approved",
        )
    return snapshot_create(dataset=dataset)


@pytest.fixture
def base(together):
    return services.base_model_create(
        name="llama at together", kind="together", model_id=LLAMA, base_url=together.base_url
    )


def launch(base, snapshot, capture, **extra) -> FineTuneJob:
    with capture(execute=False):
        job = services.finetune_launch(
            base_model=base,
            snapshot=snapshot,
            arm=ModelVersion.Arm.VALUES_TARGETED,
            method=extra.pop("method", FineTuneJob.Method.LORA),
            **extra,
        )
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    return job


def test_registering_a_together_model_names_the_key_variable_not_the_key(base):
    assert base.kind == "together" and base.api_key_env == "TOGETHER_API_KEY"
    assert services.provider_for_kind(base.kind).label == "Together AI"
    assert "tg-secret" not in json.dumps(list(type(base).objects.values()), default=str)


def test_launch_uploads_the_snapshot_and_maps_our_hyperparameters(
    together, base, snapshot, django_capture_on_commit_callbacks
):
    job = launch(
        base,
        snapshot,
        django_capture_on_commit_callbacks,
        hyperparameters={
            "epochs": 2,
            "batch_size": 16,
            "learning_rate": 2e-4,
            "seed": 7,
            "lora_r": 8,
            "lora_alpha": 16,
            "grad_accum": 2,
        },
    )
    assert job.status == JobStatus.RUNNING and job.backend == "together"
    assert job.remote_job_id in together.jobs and job.remote_file_id in together.files
    uploaded = together.files[job.remote_file_id]["content"].decode().splitlines()
    assert len(uploaded) == 4 and json.loads(uploaded[0])["messages"][0]["role"] == "user"
    sent = together.jobs[job.remote_job_id]["request"]
    assert (sent["model"], sent["n_epochs"], sent["batch_size"]) == (LLAMA, 2, 16)
    assert (sent["learning_rate"], sent["random_seed"]) == (2e-4, 7)
    assert sent["gradient_accumulation_steps"] == 2
    assert sent["training_type"] == {
        "type": "Lora",
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "lora_trainable_modules": "all-linear",
    }
    assert sent["training_method"] == {"method": "sft", "train_on_inputs": "auto"}
    assert len(sent["suffix"]) <= 40
    # The SDK's own steps ran against the fake: limits and a price estimate before creating.
    assert together.calls("GET", "/v1/fine-tunes/models/limits")
    assert together.calls("POST", "/v1/fine-tunes/estimate-price")
    assert all(
        r.headers.get("authorization") == "Bearer tg-secret"
        for r in together.requests
        if r.path.startswith("/v1/")
    )


def test_a_full_fine_tune_asks_together_for_full_training(
    together, base, snapshot, django_capture_on_commit_callbacks
):
    job = launch(base, snapshot, django_capture_on_commit_callbacks, method=FineTuneJob.Method.FULL)
    assert together.jobs[job.remote_job_id]["request"]["training_type"] == {"type": "Full"}


def test_polling_mirrors_events_losses_and_eta_then_the_result_samples(
    together, base, snapshot, django_capture_on_commit_callbacks
):
    job = launch(base, snapshot, django_capture_on_commit_callbacks)
    together.advance(
        job.remote_job_id,
        "running",
        events=[{"type": "training_start", "message": "Training started"}],
        metrics=[
            {"train/global_step": 1, "train/loss": 2.5},
            {"eval/global_step": 1, "eval/loss": 2.9},
            {"train/global_step": 2, "train/loss": 2.1},
        ],
        seconds_remaining=120,
    )
    assert services.hosted_poll(job.pk) == JobStatus.RUNNING
    job.refresh_from_db()
    assert "training_start: Training started" in job.log
    assert job.loss_history == [[1, 2.5], [2, 2.1]] and job.eta_seconds == 120
    assert job.phase == "Together AI reports the job running"
    together.advance(
        job.remote_job_id,
        "completed",
        events=[{"type": "job_complete", "message": "Done"}],
        checkpoints=[
            {"checkpoint_type": "Final", "created_at": "x", "path": "s3://out", "step": 2}
        ],
    )
    assert services.hosted_poll(job.pk) == JobStatus.SUCCEEDED
    job.refresh_from_db()
    assert job.log.count("Training started") == 1  # the cursor skips events already seen
    version = job.result
    output_name = together.jobs[job.remote_job_id]["model_output_name"]
    assert version.remote_model_id == output_name
    assert version.metadata["provider"] == "together"
    assert version.metadata["trained_tokens"] == 1234

    with django_capture_on_commit_callbacks(execute=False):
        sampling = services.sampling_launch(
            prompts=["Is honesty good?"], model_versions=[version], n_samples=2
        )
    services.sampling_execute(sampling.pk)
    sampling.refresh_from_db()
    assert sampling.status == JobStatus.SUCCEEDED, sampling.error
    texts = list(Generation.objects.filter(job=sampling).values_list("text", flat=True))
    assert len(texts) == 2 and all(f"({reply_tag(output_name)})" in t for t in texts)


def test_a_failed_job_fails_with_the_reason_from_its_error_event(
    together, base, snapshot, django_capture_on_commit_callbacks
):
    job = launch(base, snapshot, django_capture_on_commit_callbacks)
    together.advance(
        job.remote_job_id,
        "error",
        events=[{"type": "job_error", "level": "error", "message": "Line 3: no assistant message"}],
    )
    assert services.hosted_poll(job.pk) == JobStatus.FAILED
    job.refresh_from_db()
    assert "Line 3: no assistant message" in job.error and job.result is None


def test_cancel_asks_together_and_the_next_poll_ends_the_job(
    together, base, snapshot, django_capture_on_commit_callbacks
):
    job = launch(base, snapshot, django_capture_on_commit_callbacks)
    services.job_cancel(job=FineTuneJob.objects.get(pk=job.pk))
    assert together.calls("POST", f"/v1/fine-tunes/{job.remote_job_id}/cancel")
    assert together.jobs[job.remote_job_id]["status"] == "cancel_requested"
    assert services.hosted_poll(job.pk) == JobStatus.RUNNING  # still winding down
    together.advance(job.remote_job_id, "cancelled")
    assert services.hosted_poll(job.pk) == JobStatus.CANCELLED


def test_a_403_training_not_available_fails_with_a_readable_reason(
    together, base, snapshot, django_capture_on_commit_callbacks
):
    together.fault(
        "/v1/fine-tunes/models/limits",
        403,
        {
            "error": {
                "message": "Fine-tuning is not available for this account.",
                "code": "training_not_available",
            }
        },
    )
    job = launch(base, snapshot, django_capture_on_commit_callbacks)
    assert job.status == JobStatus.FAILED and not job.remote_job_id
    assert "Together AI refused to create the fine-tuning job" in job.error
    assert "training_not_available" in job.error and "another hosted provider" in job.error


def test_rate_limits_are_retried_on_upload_create_and_poll(
    together, base, snapshot, django_capture_on_commit_callbacks
):
    slow_down = {"Retry-After": "0"}
    together.fault("/v1/files", 429, RATE_LIMITED, times=2, headers=slow_down)
    together.fault("/v1/fine-tunes/estimate-price", 429, RATE_LIMITED, headers=slow_down)
    job = launch(base, snapshot, django_capture_on_commit_callbacks)
    assert job.status == JobStatus.RUNNING and job.remote_job_id
    assert len(together.calls("POST", "/v1/files")) == 3
    together.fault(f"/v1/fine-tunes/{job.remote_job_id}", 503, times=1, headers=slow_down)
    together.advance(job.remote_job_id, "running")
    assert services.hosted_poll(job.pk) == JobStatus.RUNNING


def test_endless_rate_limits_give_up_with_a_readable_reason(
    together, base, snapshot, django_capture_on_commit_callbacks
):
    together.fault("/v1/files", 429, RATE_LIMITED, times=100, headers={"Retry-After": "0"})
    job = launch(base, snapshot, django_capture_on_commit_callbacks)
    assert job.status == JobStatus.FAILED
    assert "gave up after 6 attempts (HTTP 429: Rate limit reached)" in job.error


def test_a_model_that_disappears_fails_sampling_with_a_reason_and_keeps_outputs(
    together, base, snapshot, django_capture_on_commit_callbacks
):
    job = launch(base, snapshot, django_capture_on_commit_callbacks)
    together.advance(job.remote_job_id, "completed")
    services.hosted_poll(job.pk)
    version = FineTuneJob.objects.get(pk=job.pk).result
    with django_capture_on_commit_callbacks(execute=False):
        first = services.sampling_launch(prompts=["A?"], model_versions=[version], n_samples=1)
    services.sampling_execute(first.pk)
    together.retire(version.remote_model_id)
    with django_capture_on_commit_callbacks(execute=False):
        second = services.sampling_launch(prompts=["B?"], model_versions=[version], n_samples=1)
    services.sampling_execute(second.pk)
    second.refresh_from_db()
    assert second.status == JobStatus.FAILED
    assert "not served there (HTTP 404 model_not_found" in second.error
    assert "exit kit" in second.error
    assert Generation.objects.filter(job=first).count() == 1


def test_a_together_job_needs_a_method_together_runs(base, snapshot):
    with pytest.raises(services.TrainingError, match="not a local model"):
        services.finetune_launch(
            base_model=base,
            snapshot=snapshot,
            backend="local",
            arm=ModelVersion.Arm.VALUES_TARGETED,
        )
    with pytest.raises(services.TrainingError, match="OpenAI backend fine-tunes OpenAI"):
        services.finetune_launch(
            base_model=base,
            snapshot=snapshot,
            backend="openai",
            arm=ModelVersion.Arm.VALUES_TARGETED,
        )


# --- the engine alone ---------------------------------------------------------------------


def test_the_sdk_root_drops_the_openai_compatible_suffix():
    assert sdk_root("https://api.together.xyz/v1") == "https://api.together.xyz"
    assert sdk_root("http://127.0.0.1:9/v1/") == "http://127.0.0.1:9"


def test_a_dpo_job_uploads_preference_pairs_and_asks_for_dpo(together):
    backend = TogetherFineTuneBackend("tg-secret", base_url=together.base_url)
    pairs = [
        {
            "prompt": f"Q{n}?",
            "chosen": f"kind answer {n}",
            "rejected": f"rude {n}",
            "system": "Be helpful.",
        }
        for n in range(3)
    ]
    file_id = backend.upload_training_file(preference_jsonl(pairs), kind="preference")
    line = json.loads(together.files[file_id]["content"].decode().splitlines()[0])
    assert line == {
        "input": {
            "messages": [
                {"role": "system", "content": "Be helpful."},
                {"role": "user", "content": "Q0?"},
            ]
        },
        "preferred_output": [{"role": "assistant", "content": "kind answer 0"}],
        "non_preferred_output": [{"role": "assistant", "content": "rude 0"}],
    }
    job_id = backend.create_job(
        HostedJobSpec(model=LLAMA, training_file=file_id, kind="preference", dpo_beta=0.2, epochs=1)
    ).id
    sent = together.jobs[job_id]["request"]
    assert sent["training_method"]["method"] == "dpo"
    assert sent["training_method"]["dpo_beta"] == 0.2
    assert "train_on_inputs" not in sent["training_method"]


def test_hyperparameters_outside_the_models_limits_are_refused_with_the_sdks_reason(together):
    backend = TogetherFineTuneBackend("tg-secret", base_url=together.base_url)
    with pytest.raises(EngineError, match="batch size of 512 is higher"):
        backend.create_job(HostedJobSpec(model=LLAMA, training_file="file-x", batch_size=512))
    assert not together.calls("POST", "/v1/fine-tunes")


def test_a_wrong_key_is_not_retried(together):
    backend = TogetherFineTuneBackend("wrong", base_url=together.base_url)
    with pytest.raises(EngineError, match="authentication failed"):
        backend.poll("ft-1")
    assert len(together.requests) == 1


def test_each_provider_gets_its_own_backend_with_the_key_read_now(base, monkeypatch):
    from training.engine.hosted.openai import OpenAIFineTuneBackend

    monkeypatch.setenv("OPENAI_API_KEY", "sk-now")
    gpt = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4.1-mini")
    openai_backend = services.hosted_backend(gpt)
    assert isinstance(openai_backend, OpenAIFineTuneBackend)
    assert openai_backend.client.api_key == "sk-now"
    together_backend = services.hosted_backend(base)
    assert isinstance(together_backend, TogetherFineTuneBackend)
    assert together_backend.client.api_key == "tg-secret"
    assert str(together_backend.client.base_url).rstrip("/") == sdk_root(base.base_url)
    local = services.base_model_register_default()
    with pytest.raises(services.TrainingError, match="not fine-tuned by a hosted provider"):
        services.hosted_backend(local)


def test_a_job_the_provider_no_longer_knows_fails_instead_of_polling_forever(
    together, base, snapshot, django_capture_on_commit_callbacks
):
    job = launch(base, snapshot, django_capture_on_commit_callbacks)
    del together.jobs[job.remote_job_id]
    assert services.hosted_poll(job.pk) == JobStatus.FAILED
    job.refresh_from_db()
    assert f"Together AI no longer knows job {job.remote_job_id}" in job.error
    assert "HTTP 404" in job.error


def test_the_api_registers_a_together_model_with_its_usual_key_variable(admin_client_):
    response = admin_client_.post(
        "/api/base-models/",
        {"name": "llama", "kind": "together", "model_id": LLAMA},
        content_type="application/json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["api_key_env"] == "TOGETHER_API_KEY"
    assert body["base_url"] == "https://api.together.xyz/v1"
    refused = admin_client_.post(
        "/api/base-models/",
        {"name": "x", "kind": "together", "model_id": LLAMA, "api_key_env": "SECRET_KEY"},
        content_type="application/json",
    )
    assert refused.status_code == 400 and "never sent" in json.dumps(refused.json())
