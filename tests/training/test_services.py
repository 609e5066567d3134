"""Training services against the real database: launch rules, claiming, sweeping, storing."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from curation.services import sample_create, snapshot_create
from tests.factories import CategoryFactory, DatasetFactory, words
from training import services
from training.engine.vllm_sampling import Sampler
from training.models import (
    BaseModel,
    FineTuneJob,
    Generation,
    JobStatus,
    ModelVersion,
    SamplingJob,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def snapshot(curator):
    dataset = DatasetFactory()
    category = CategoryFactory()
    for n in range(3):
        sample_create(
            dataset=dataset, category=category, question=f"Question {n}?",
            answer=words(50, f"answer{n}"), user=curator, status="approved",
        )
    return snapshot_create(dataset=dataset, user=curator)


@pytest.fixture
def local_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    return services.base_model_create(
        name="Local tiny", kind=BaseModel.Kind.LOCAL_DIR, path=str(tmp_path),
        parameter_count=1_000_000,
    )


def launch(snapshot, base, **overrides):
    arguments = {"base_model": base, "snapshot": snapshot, "arm": ModelVersion.Arm.VALUES_TARGETED}
    return services.finetune_launch(**(arguments | overrides))


def test_registering_a_base_model_creates_its_base_version(local_model):
    version = services.base_version(local_model)
    assert version.arm == ModelVersion.Arm.BASE
    assert version.path == local_model.path


def test_registering_the_default_model_twice_keeps_one(db):
    first = services.base_model_register_default()
    assert services.base_model_register_default() == first
    assert BaseModel.objects.filter(kind=BaseModel.Kind.PACKAGED).count() == 1
    assert first.is_default and first.size_label == "135M"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "local_dir", "path": "/nonexistent"}, "no config.json"),
        ({"kind": "openai", "model_id": ""}, "model name"),
        ({"kind": "openai_compatible", "model_id": "m", "base_url": ""}, "base URL"),
        ({"kind": "nonsense"}, "Unknown base model kind"),
    ],
)
def test_bad_base_models_are_refused_and_nothing_is_created(fields, message):
    with pytest.raises(services.TrainingError, match=message):
        services.base_model_create(name="x", **fields)
    assert not BaseModel.objects.exists()


def test_launch_queues_one_job_with_defaults_and_an_estimate(
    snapshot, local_model, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = launch(snapshot, local_model, hyperparameters={"epochs": 2})
    assert len(callbacks) == 1
    assert job.status == JobStatus.QUEUED
    assert job.hyperparameters["epochs"] == 2
    assert job.hyperparameters["learning_rate"] == 1e-3  # tiny models take a high rate
    # 3 examples of ~50 words ≈ 67 tokens + overhead each, times two epochs.
    assert 3 * 2 * 60 < job.estimated_tokens < 3 * 2 * 200


@pytest.mark.parametrize(
    ("hyperparameters", "message"),
    [
        ({"epochs": 0}, "epochs must be between"),
        ({"learning_rate": "fast"}, "learning_rate must be a number"),
        ({"dropout_of_doom": 1}, "Unknown hyperparameters: dropout_of_doom"),
    ],
)
def test_bad_hyperparameters_are_refused_and_nothing_is_queued(
    snapshot, local_model, hyperparameters, message
):
    with pytest.raises(services.TrainingError, match=message):
        launch(snapshot, local_model, hyperparameters=hyperparameters)
    assert not FineTuneJob.objects.exists()


def test_base_arm_and_mismatched_backends_are_refused(snapshot, local_model):
    with pytest.raises(services.TrainingError, match="arm"):
        launch(snapshot, local_model, arm=ModelVersion.Arm.BASE)
    with pytest.raises(services.TrainingError, match="OpenAI models only"):
        launch(snapshot, local_model, backend=FineTuneJob.Backend.OPENAI)


def test_openai_backend_needs_ten_examples(snapshot):
    remote = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4.1-mini")
    with pytest.raises(services.TrainingError, match="at least 10 training examples"):
        launch(snapshot, remote)


def test_a_job_is_claimed_exactly_once(snapshot, local_model):
    job = launch(snapshot, local_model)
    assert services.claim_job(FineTuneJob, job.pk, worker="a")
    assert not services.claim_job(FineTuneJob, job.pk, worker="b")  # duplicate delivery
    job.refresh_from_db()
    assert (job.status, job.worker, job.attempts) == (JobStatus.RUNNING, "a", 1)


def test_a_missing_job_is_a_no_op(db):
    assert not services.claim_job(FineTuneJob, 999_999, worker="a")
    services.finetune_execute(999_999)
    services.sampling_execute(999_999)


def test_a_running_job_with_a_dead_worker_can_be_reclaimed(snapshot, local_model):
    job = launch(snapshot, local_model)
    services.claim_job(FineTuneJob, job.pk, worker="dead")
    FineTuneJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timedelta(minutes=10)
    )
    assert services.claim_job(FineTuneJob, job.pk, worker="alive")
    job.refresh_from_db()
    assert job.attempts == 2


def test_sweep_fails_jobs_whose_heartbeat_stopped_and_only_those(snapshot, local_model):
    dead, alive = launch(snapshot, local_model), launch(snapshot, local_model)
    for job in (dead, alive):
        services.claim_job(FineTuneJob, job.pk, worker="w")
    FineTuneJob.objects.filter(pk=dead.pk).update(
        heartbeat_at=timezone.now() - timedelta(minutes=10)
    )
    assert services.sweep_stale_jobs() == 1
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == JobStatus.FAILED and "stopped responding" in dead.error
    assert alive.status == JobStatus.RUNNING


def test_cancelling_a_queued_job_ends_it_at_once(snapshot, local_model):
    job = launch(snapshot, local_model)
    services.job_cancel(job=job)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED


def test_cancelling_a_running_job_asks_the_worker(snapshot, local_model):
    job = launch(snapshot, local_model)
    services.claim_job(FineTuneJob, job.pk, worker="w")
    services.job_cancel(job=job)
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.cancel_requested
    assert services.JobReporter(job).should_cancel()


def test_retry_requeues_failed_jobs_only(snapshot, local_model, django_capture_on_commit_callbacks):
    job = launch(snapshot, local_model)
    with pytest.raises(services.TrainingError, match="Only failed or cancelled"):
        services.job_retry(job=job)
    FineTuneJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, error="boom")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.job_retry(job=job)
    job.refresh_from_db()
    assert (job.status, job.error, len(callbacks)) == (JobStatus.QUEUED, "", 1)


def test_reporter_writes_at_a_bounded_rate_and_keeps_the_log_tail(snapshot, local_model):
    job = launch(snapshot, local_model)
    reporter = services.JobReporter(job)
    reporter.update(force=True, progress_done=1)
    reporter.update(progress_done=2)  # within the same second: held back
    job.refresh_from_db()
    assert job.progress_done == 1
    reporter.log("hello")
    reporter.flush()
    job.refresh_from_db()
    assert job.progress_done == 2 and job.log.endswith("hello\n")


def test_readable_failures():
    assert "Out of memory" in services.readable_failure(RuntimeError("CUDA out of memory."))
    assert "missing" in services.readable_failure(FileNotFoundError(2, "x", "/m/config.json"))


def sampling_job(local_model, **kwargs) -> SamplingJob:
    return services.sampling_launch(
        prompts=["Hi?", {"text": "Who?", "category": "Relationships"}],
        model_versions=[services.base_version(local_model)], n_samples=2, **kwargs,
    )


def test_sampling_launch_validates_and_counts_the_work(local_model):
    job = sampling_job(local_model)
    assert job.progress_total == 4
    assert job.prompts[1] == {"text": "Who?", "category": "Relationships"}
    with pytest.raises(services.TrainingError, match="Prompt 1 is empty"):
        services.sampling_launch(
            prompts=["  "], model_versions=[services.base_version(local_model)]
        )
    with pytest.raises(services.TrainingError, match="top_p"):
        sampling_job(local_model, top_p=0)


def test_storing_generations_twice_adds_nothing(local_model):
    job = sampling_job(local_model)
    version = services.base_version(local_model)
    params = SimpleNamespace(temperature=0.7, top_p=0.9, max_new_tokens=10)
    outputs = [
        SimpleNamespace(prompt_index=p, sample_index=s, text=f"{p}{s}", tokens_generated=2, seed=7)
        for p in range(2)
        for s in range(2)
    ]
    sampler = Sampler("transformers", "5.0")
    services.sampling._store_generations(job, version, outputs, params, sampler)
    services.sampling._store_generations(job, version, outputs, params, sampler)  # delivered twice
    assert Generation.objects.filter(job=job).count() == 4
    assert services.sampling._done_slots(job, version) == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_a_nul_byte_in_generated_text_is_stored_as_a_replacement_character(local_model):
    job = sampling_job(local_model)
    version = services.base_version(local_model)
    params = SimpleNamespace(temperature=0.7, top_p=0.9, max_new_tokens=10)
    output = SimpleNamespace(prompt_index=0, sample_index=0, text="a\x00b", tokens_generated=3,
                             seed=1)
    services.sampling._store_generations(job, version, [output], params,
                                         Sampler("transformers", "5.0"))  # fmt: skip
    assert Generation.objects.get(job=job).text == "a\ufffdb"
