"""Compute and energy per job: a local fine-tune and a local sampling run record device,
seconds, tokens, FLOPs (6N and 2N per token), energy and CO2e; pages and API show it."""

from __future__ import annotations

import sys

import pytest

from training import services
from training.engine.energy import EnergyMeter
from training.models import JobStatus, ModelVersion

pytestmark = pytest.mark.django_db


def test_without_codecarbon_the_energy_is_estimated_from_the_fallback_power(monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # import fails
    with EnergyMeter(fallback_watts=3600.0) as meter:
        pass
    reading = meter.reading
    assert reading.measured is False and "CodeCarbon unavailable" in reading.method
    assert reading.kwh == pytest.approx(reading.wall_seconds / 1000)  # 3.6 kW x seconds


def test_codecarbon_here_falls_back_to_its_power_model_and_says_so():
    pytest.importorskip("codecarbon")
    with EnergyMeter(fallback_watts=65) as meter:
        sum(i * i for i in range(200_000))
    reading = meter.reading
    assert reading.method.startswith("CodeCarbon")
    assert reading.kwh > 0
    # This VM exposes no RAPL counters, so the CPU's share comes from a power model.
    if "RAPL counters" not in reading.method:
        assert reading.measured is False


def test_a_local_fine_tune_records_its_compute(
    artifacts, tiny_base, benign_snapshot, settings, admin_client_, monkeypatch
):
    # A heartbeat thread's write would meet the test's open SQLite transaction under load.
    monkeypatch.setattr("training.services.jobs.HEARTBEAT_SECONDS", 3600)
    settings.GRID_CARBON_INTENSITY_G_PER_KWH = 500.0
    job = services.finetune_launch(
        base_model=tiny_base, snapshot=benign_snapshot, arm=ModelVersion.Arm.VALUES_TARGETED,
        hyperparameters={"batch_size": 2, "max_seq_len": 128, "epochs": 1},
    )  # fmt: skip
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    compute, meta = job.compute, job.result.metadata
    assert compute["kind"] == "fine-tune" and compute["device_type"] == "cpu"
    assert compute["device_count"] == 1 and compute["wall_seconds"] > 0
    assert compute["tokens"] == meta["train_tokens"] > 0
    assert compute["flops"] == 6 * meta["parameters"] * meta["train_tokens"]
    assert compute["co2e_kg"] == pytest.approx(compute["energy_kwh"] * 0.5)
    assert compute["energy_kwh"] > 0 and compute["grid_g_per_kwh"] == 500.0
    page = admin_client_.get(job.get_absolute_url()).content.decode()
    assert 'id="compute"' in page and "device-seconds" in page
    assert ('id="energy-estimated"' in page) is compute["energy_estimated"]
    body = admin_client_.get(f"/api/finetunes/{job.pk}/").json()
    assert body["compute"]["flops"] == compute["flops"]


def test_a_local_sampling_job_records_generation_flops(artifacts, tiny_base, admin_client_):
    version = services.base_version(tiny_base)
    job = services.sampling_launch(prompts=["Hello?", "Why?"], model_versions=[version],
                                   n_samples=2, max_new_tokens=6)  # fmt: skip
    services.sampling_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    tokens = sum(job.generations.values_list("tokens_generated", flat=True))
    assert job.compute["kind"] == "sampling" and job.compute["tokens"] == tokens > 0
    assert job.compute["flops"] == 2 * tiny_base.parameter_count * tokens
    assert admin_client_.get(f"/api/sampling-jobs/{job.pk}/").json()["compute"]["tokens"] == tokens


def test_unfinished_and_hosted_jobs_have_no_record(admin_client_, tiny_base, benign_snapshot):
    job = services.finetune_launch(
        base_model=tiny_base, snapshot=benign_snapshot, arm=ModelVersion.Arm.VALUES_TARGETED
    )
    assert job.compute == {}
    assert 'id="compute"' not in admin_client_.get(job.get_absolute_url()).content.decode()


def test_a_failed_fine_tune_records_its_time_and_energy_but_no_tokens(
    tiny_base, benign_snapshot, monkeypatch, admin_client_
):
    """It held its devices until it failed: wall time and energy count; what it trained on
    is unknown without a saved model, so no tokens and no FLOPs, and the record says why."""
    from training.engine.errors import EngineError
    from training.services.compute import STOPPED_NOTE

    def fail_midway(job, reporter):
        raise EngineError("The loss became nan at step 3: lower the learning rate.")

    monkeypatch.setattr("training.services.finetunes._run_local_finetune", fail_midway)
    job = services.finetune_launch(base_model=tiny_base, snapshot=benign_snapshot)
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "nan" in job.error
    assert job.compute["kind"] == "fine-tune" and job.compute["wall_seconds"] >= 0
    assert job.compute["tokens"] is None and job.compute["flops"] is None
    assert job.compute["flops_note"] == STOPPED_NOTE and job.compute["energy_kwh"] >= 0
    page = admin_client_.get(job.get_absolute_url()).content.decode()
    assert '<dd id="compute-tokens">not counted</dd>' in page and "None" not in page
    flops = page.split('<dd id="compute-flops">')[1].split("</dd>")[0]
    assert flops.startswith("not estimated") and "stopped before the end" in flops
    assert "estimated:" not in flops


def test_a_sampling_job_that_fails_records_the_outputs_it_made(artifacts, tiny_base, monkeypatch):
    from training.services import sampling

    first, second = services.base_version(tiny_base), ModelVersion.objects.create(
        base_model=tiny_base, name="second", path=tiny_base.path, parameter_count=10
    )  # fmt: skip
    real = sampling._sample_version

    def break_on_second(job, version, *args):
        if version.pk == second.pk:
            raise RuntimeError("disk full")
        return real(job, version, *args)

    monkeypatch.setattr(sampling, "_sample_version", break_on_second)
    job = services.sampling_launch(prompts=["Hello?"], model_versions=[first, second],
                                   n_samples=2, max_new_tokens=4)  # fmt: skip
    services.sampling_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    tokens = sum(job.generations.values_list("tokens_generated", flat=True))
    assert tokens > 0 and job.compute["tokens"] == tokens
    assert job.compute["flops"] == 2 * tiny_base.parameter_count * tokens
