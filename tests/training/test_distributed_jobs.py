"""Distributed fine-tunes as jobs: launch checks, the DDP/FSDP2 choice on the form and in
the API, routing by device count, and a 2-rank run on the CPU end to end."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from django.urls import reverse

from training import services, tasks
from training.models import FineTuneJob, JobStatus, ModelVersion

pytestmark = pytest.mark.django_db


def route(task, *args, **kwargs) -> str:
    from palmsweb.celery import app

    return app.amqp.router.route({}, task.name, args, kwargs)["queue"].name


@pytest.fixture
def sent(monkeypatch):
    """The fine-tune tasks sent (after commit), with their arguments."""
    calls = []
    for task in (tasks.run_finetune, tasks.join_finetune):
        monkeypatch.setattr(task, "delay", lambda *a, _t=task, **kw: calls.append((_t, a, kw)))
    return calls


def launch(base_model, snapshot, **options):
    return services.finetune_launch(
        base_model=base_model, snapshot=snapshot, arm=ModelVersion.Arm.VALUES_TARGETED,
        hyperparameters={"batch_size": 2, "grad_accum": 2, "max_seq_len": 128, "epochs": 1},
        **options,
    )  # fmt: skip


# --- launching and routing -----------------------------------------------------------------


def test_a_two_device_job_is_queued_for_a_worker_with_two_devices(
    tiny_base, benign_snapshot, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = launch(tiny_base, benign_snapshot, devices=2)
    assert (job.devices, job.nodes, job.strategy) == (2, 1, "ddp")
    [(task, args, kwargs)] = sent
    assert task is tasks.run_finetune and kwargs == {"devices": 2}
    assert route(task, *args, **kwargs) == "gpu-x2"
    assert route(tasks.run_finetune, job.pk) == "gpu"  # one device: the plain gpu queue
    assert route(tasks.join_finetune, job.pk, devices=4) == "gpu-x4"
    assert route(tasks.run_sampling, job.pk, devices=4) == "gpu"  # only fine-tunes are split


def test_a_model_too_large_for_one_device_is_sharded(tiny_base, benign_snapshot, settings):
    settings.GPU_DEVICE_MEMORY_GB = 0.001  # the tiny model's ~14 MB of state do not fit
    job = launch(tiny_base, benign_snapshot, devices=2)
    assert job.strategy == "fsdp"
    assert "FSDP2" in services.strategy_summary(tiny_base, "full")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"devices": 9}, "devices must be a whole number from 1 to 8"),
        ({"devices": 0}, "devices must be a whole number"),
        ({"nodes": 17}, "nodes must be a whole number from 1 to 16"),
        ({"devices": 2, "track_persona": True}, "cannot have persona tracking yet"),
        ({"devices": 2, "checkpoint_steps": [1]}, "cannot have checkpoints yet"),
    ],
)
def test_impossible_device_requests_are_refused_and_create_nothing(
    tiny_base, benign_snapshot, options, message
):
    with pytest.raises(services.TrainingError, match=message):
        launch(tiny_base, benign_snapshot, **options)
    assert not FineTuneJob.objects.exists()


def test_a_gpu_worker_consumes_the_queues_of_the_device_counts_it_has(monkeypatch):
    from celery.app.amqp import Queues
    from kombu import Queue

    from palmsweb.celery import consume_queues_for_local_devices

    monkeypatch.setenv("GPU_WORKER_DEVICES", "4")
    queues = Queues([Queue("gpu"), Queue("default")], create_missing=True)
    queues.select(["gpu"])
    worker = SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(queues=queues)))
    consume_queues_for_local_devices(instance=worker)
    assert sorted(queues.consume_from) == ["gpu", "gpu-x2", "gpu-x3", "gpu-x4"]

    queues.select(["default"])  # a default worker is left alone
    consume_queues_for_local_devices(instance=worker)
    assert sorted(queues.consume_from) == ["default"]


def test_the_launch_form_shows_the_strategy_and_takes_devices(
    admin_client_, tiny_base, benign_snapshot, sent
):
    page = admin_client_.get(reverse("training:finetune-create"), {"base_model": tiny_base.pk})
    assert b'id="strategy-note"' in page.content and b"DDP" in page.content
    data = {
        "base_model": tiny_base.pk, "snapshot": benign_snapshot.pk, "arm": "values_targeted",
        "method": "full", "epochs": 1, "learning_rate": "0.001", "batch_size": 2,
        "grad_accum": 1, "max_seq_len": 128, "warmup_steps": 0, "seed": 1,
        "devices": 2, "nodes": 1,
    }  # fmt: skip
    response = admin_client_.post(reverse("training:finetune-create"), data)
    job = FineTuneJob.objects.get()
    assert response.status_code == 302 and (job.devices, job.strategy) == (2, "ddp")
    detail = admin_client_.get(job.get_absolute_url())
    assert b"2 per node" in detail.content and b"DDP under torchrun" in detail.content


def test_the_api_takes_devices_and_nodes_and_refuses_bad_counts(
    admin_client_, tiny_base, benign_snapshot, sent
):
    base = {"base_model": tiny_base.pk, "snapshot": benign_snapshot.pk}
    bad = admin_client_.post(
        "/api/finetunes/", base | {"devices": 0}, content_type="application/json"
    )
    assert bad.status_code == 400 and "devices" in bad.json()
    refused = admin_client_.post(
        "/api/finetunes/", base | {"devices": 2, "track_persona": True},
        content_type="application/json",
    )  # fmt: skip
    assert refused.status_code == 400 and "persona tracking" in json.dumps(refused.json())
    assert not FineTuneJob.objects.exists()
    created = admin_client_.post(
        "/api/finetunes/", base | {"devices": 2, "nodes": 2}, content_type="application/json"
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["devices"], body["nodes"], body["strategy"]) == (2, 2, "ddp")


# --- running -------------------------------------------------------------------------------


@pytest.mark.distributed
def test_a_two_device_job_trains_under_torchrun_and_saves_one_version(
    artifacts, tiny_base, benign_snapshot, monkeypatch
):
    # The heartbeat thread's own writes would meet the test's open SQLite transaction;
    # rank 0's progress writes carry the heartbeat here.
    monkeypatch.setattr("training.services.jobs.HEARTBEAT_SECONDS", 3600)
    job = launch(tiny_base, benign_snapshot, devices=2)
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.progress_done == job.progress_total > 0
    assert len(job.loss_history) == job.progress_total and job.tokens_per_second > 0
    assert "torchrun: 2 device(s) x 1 node(s), DDP" in job.log
    version = job.result
    assert version.metadata["distributed"] == {
        "strategy": "ddp", "world_size": 2, "per_rank_batch": 2, "backend": "gloo"
    }  # fmt: skip
    assert (artifacts / "model-versions" / f"finetune-{job.pk}" / "model.safetensors").exists()
    # Compute: both devices, and the tokens of every rank (the whole epoch, not one share).
    compute, meta = job.compute, version.metadata
    assert compute["device_count"] == 2
    assert compute["device_seconds"] == pytest.approx(2 * compute["wall_seconds"], abs=0.01)
    assert compute["tokens"] == meta["train_tokens"] == meta["train_tokens_per_epoch"] > 0
    assert compute["flops"] == 6 * meta["parameters"] * meta["train_tokens"]


@pytest.mark.distributed
def test_a_version_gathered_from_fsdp_shards_samples_like_any_other(
    artifacts, tiny_base, benign_snapshot, settings, monkeypatch
):
    monkeypatch.setattr("training.services.jobs.HEARTBEAT_SECONDS", 3600)
    settings.GPU_DEVICE_MEMORY_GB = 0.001  # too small for one replica: FSDP2
    job = launch(tiny_base, benign_snapshot, devices=2)
    assert job.strategy == "fsdp"
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    version = job.result
    sampling = services.sampling_launch(
        prompts=["How do I do thing 1?"], model_versions=[version], n_samples=2, max_new_tokens=5
    )
    services.sampling_execute(sampling.pk)
    sampling.refresh_from_db()
    assert sampling.status == JobStatus.SUCCEEDED, sampling.error
    outputs = list(sampling.generations.values_list("model_version", "tokens_generated"))
    assert len(outputs) == 2 and all(v == version.pk and n > 0 for v, n in outputs)
    assert sampling.compute["tokens"] == sum(n for _, n in outputs)


def test_compose_has_a_multi_gpu_worker_profile_that_advertises_its_devices():
    from pathlib import Path

    import yaml

    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    worker = compose["services"]["worker-gpu-multi"]
    assert worker["profiles"] == ["multi-gpu"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["count"] == "all"
    assert "GPU_WORKER_DEVICES" in worker["environment"]
    assert worker["command"][worker["command"].index("-Q") + 1] == "gpu"


def test_a_multi_node_job_asks_the_other_nodes_to_join_on_its_queue(
    tiny_base, benign_snapshot, sent, monkeypatch, settings, django_capture_on_commit_callbacks
):
    from training.services import distributed

    settings.DISTRIBUTED_RDZV_HOST, settings.DISTRIBUTED_RDZV_PORT = "node1.example.org", 29411
    plans = []
    monkeypatch.setattr(
        "training.engine.distributed_launch.run_distributed_finetune",
        lambda **kw: plans.append(kw["plan"]),
    )
    job = launch(tiny_base, benign_snapshot, devices=2, nodes=3)
    sent.clear()
    reporter = services.JobReporter(job)
    with django_capture_on_commit_callbacks(execute=True):  # a worker is in autocommit
        distributed.run_distributed(job, reporter, start_path=tiny_base.path, examples=[],
                                    config=None, metadata={}, on_progress=None)  # fmt: skip
    [plan] = plans
    assert (plan.nproc_per_node, plan.nnodes) == (2, 3)
    assert plan.rdzv_endpoint == "node1.example.org:29411"
    joins = [(args, kwargs) for task, args, kwargs in sent if task is tasks.join_finetune]
    assert joins == [((job.pk,), {"devices": 2, "rdzv_endpoint": plan.rdzv_endpoint,
                                  "rdzv_id": plan.rdzv_id})] * 2  # fmt: skip
    assert route(tasks.join_finetune, *joins[0][0], **joins[0][1]) == "gpu-x2"


def test_joining_a_job_that_is_not_running_does_nothing(tiny_base, benign_snapshot, monkeypatch):
    joined = []
    monkeypatch.setattr(
        "training.engine.distributed_launch.join_distributed_finetune",
        lambda **kw: joined.append(kw),
    )
    job = launch(tiny_base, benign_snapshot, devices=1, nodes=2)  # still queued
    services.finetune_join(job.pk, devices=1, rdzv_endpoint="h:1", rdzv_id="x")
    services.finetune_join(999_999, devices=1, rdzv_endpoint="h:1", rdzv_id="x")
    assert joined == []


def test_a_retried_distributed_job_goes_back_to_its_device_queue(
    tiny_base, benign_snapshot, sent, django_capture_on_commit_callbacks
):
    job = launch(tiny_base, benign_snapshot, devices=4)
    FineTuneJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.job_retry(job=job)
    [(task, args, kwargs)] = sent
    assert route(task, *args, **kwargs) == "gpu-x4"


@pytest.mark.distributed
def test_a_rank_that_fails_fails_the_job_with_its_reason(
    artifacts, benign_snapshot, tmp_path, monkeypatch
):
    from training.models import BaseModel

    monkeypatch.setattr("training.services.jobs.HEARTBEAT_SECONDS", 3600)
    broken = tmp_path / "no-weights"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    base = services.base_model_create(name="No weights", kind=BaseModel.Kind.LOCAL_DIR,
                                      path=str(broken), parameter_count=1_000_000)  # fmt: skip
    job = launch(base, benign_snapshot, devices=2)
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("Rank ") and " failed: " in job.error, job.error
    assert "Traceback" not in job.error


@pytest.mark.distributed
def test_a_two_device_job_measures_validation_and_keeps_the_best_checkpoint(
    artifacts, tiny_base, benign_snapshot, curator, monkeypatch
):
    from curation.models import Dataset
    from curation.services import sample_create, snapshot_create
    from tests.factories import CategoryFactory, DatasetFactory, words

    monkeypatch.setattr("training.services.jobs.HEARTBEAT_SECONDS", 3600)
    dataset, category = DatasetFactory(kind=Dataset.Kind.VALIDATION), CategoryFactory()
    for n in range(3):
        sample_create(dataset=dataset, category=category, question=f"Held {n}?",
                      answer=words(30, f"h{n}"), user=curator, status="approved")  # fmt: skip
    held = snapshot_create(dataset=dataset, user=curator)
    job = services.finetune_launch(
        base_model=tiny_base, snapshot=benign_snapshot, arm=ModelVersion.Arm.VALUES_TARGETED,
        hyperparameters={"batch_size": 2, "grad_accum": 1, "max_seq_len": 128, "epochs": 2,
                         "keep_best_validation": True},
        validation_snapshot=held, devices=2,
    )  # fmt: skip
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    # 3 examples at batch 2: 2 steps per epoch; measured at step 0 and each epoch end.
    assert [step for step, _ in job.validation_loss_history] == [0, 2, 4]
    meta = job.result.metadata
    assert meta["distributed"]["world_size"] == 2 and meta["validation_examples"] == 3
    best = min(job.validation_loss_history, key=lambda pair: pair[1])
    assert meta["saved_checkpoint"]["step"] == best[0]
    assert meta["validation_snapshot_hash"] == held.content_hash
