"""Long jobs say what they are doing: phases in words, outputs as each batch lands, an ETA
the page counts down. Runs the tiny model for real (fine-tune and sampling)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from training import services
from training.models import BaseModel, FineTuneJob, JobStatus, ModelVersion, SamplingJob

pytestmark = pytest.mark.django_db


def phases_in(log: str) -> list[str]:
    return [line.split("] ", 1)[1] for line in log.splitlines() if "] " in line]


@pytest.fixture
def every_write(monkeypatch):
    """Progress reaches the database on every update, so a test can watch each one."""
    monkeypatch.setattr("palmsweb.lib.jobs.PROGRESS_WRITE_SECONDS", 0.0)


def test_a_fine_tune_reports_loading_each_epoch_and_saving(
    artifacts, benign_snapshot, tiny_base, every_write, monkeypatch
):
    seen = []
    original = services.FineTuneProgress.__call__

    def watch(self, event):
        original(self, event)
        job = FineTuneJob.objects.get(pk=self.reporter.pk)
        seen.append((job.phase, job.progress_done, job.eta_seconds, job.progress_at))

    monkeypatch.setattr(services.FineTuneProgress, "__call__", watch)
    job = services.finetune_launch(
        base_model=tiny_base, snapshot=benign_snapshot, arm=ModelVersion.Arm.VALUES_TARGETED,
        hyperparameters={"batch_size": 2, "max_seq_len": 128, "epochs": 2},
    )  # fmt: skip
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error

    logged = phases_in(job.log)
    order = [
        "loading the model and tokenizing the examples",
        "training: epoch 1 of 2",
        "training: epoch 2 of 2",
        "saving the model version",
    ]
    assert [line for line in logged if line in order] == order
    assert [phase for phase, *_ in seen] == [
        "training: epoch 1 of 2", "training: epoch 1 of 2",
        "training: epoch 2 of 2", "saving the model version",
    ]  # fmt: skip
    assert [done for _, done, *_ in seen] == [1, 2, 3, 4]
    assert all(at is not None for *_, at in seen)
    assert seen[0][2] > 0 and seen[-1][2] is None  # no ETA while saving
    assert (job.phase, job.eta_seconds, job.eta_left) == ("", None, None)


def test_the_first_use_of_the_packaged_model_says_it_converts(
    artifacts, benign_snapshot, tiny_llama_dir, monkeypatch
):
    from training.engine import loading

    converted = []
    monkeypatch.setattr(loading, "default_model_converted", lambda _dir: bool(converted))
    monkeypatch.setattr(loading, "default_model_dir", lambda _dir: converted.append(1)
                        or tiny_llama_dir)  # fmt: skip
    base = BaseModel.objects.create(name="Packaged", kind=BaseModel.Kind.PACKAGED)
    job = services.sampling_launch(prompts=["Hi?"], model_versions=[
        ModelVersion.objects.create(base_model=base, name="Packaged (base)", arm="base")
    ])  # fmt: skip
    reporter = services.JobReporter(job)

    assert services.local_model_path(base, reporter) == tiny_llama_dir
    assert services.local_model_path(base, reporter) == tiny_llama_dir  # now converted
    reporter.flush()
    job.refresh_from_db()
    assert phases_in(job.log).count("converting the base model (first run only)") == 1


def test_sampling_reports_each_batch_as_it_lands_with_an_eta(
    artifacts, tiny_base, every_write, monkeypatch
):
    import transformers

    from training.engine import generation

    original = generation.generate_local
    monkeypatch.setattr(
        generation, "generate_local", lambda *a, **kw: original(*a, batch_size=4, **kw)
    )
    landed = []
    real_landed = services.SamplingProgress.landed

    def watch(self, count):
        real_landed(self, count)
        job = SamplingJob.objects.get(pk=self.job.pk)
        landed.append((job.phase, job.progress_done, job.generations.count(), job.eta_seconds))

    monkeypatch.setattr(services.SamplingProgress, "landed", watch)
    job = services.sampling_launch(
        prompts=[f"Question {n}?" for n in range(5)],
        model_versions=[services.base_version(tiny_base)], n_samples=2, max_new_tokens=4,
    )  # fmt: skip
    services.sampling_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error

    # 10 outputs in batches of 4: the count on the page follows each batch at once.
    assert [(done, stored) for _, done, stored, _ in landed] == [(4, 4), (8, 8), (10, 10)]
    assert [phase for phase, *_ in landed] == [
        "sampling model 1 of 1: batch 2 of 3",
        "sampling model 1 of 1: batch 3 of 3",
        "sampling model 1 of 1: batch 3 of 3",  # the last batch changes no phase
    ]
    assert landed[0][3] > 0 and landed[-1][3] == 0
    assert phases_in(job.log)[:2] == [
        f"sampling Tiny llama (base) through transformers {transformers.__version__}: 10 outputs",
        "loading model 1 of 1, then sampling its first batch",
    ]
    assert job.phase == "" and job.eta_seconds is None


def test_the_job_page_shows_the_phase_and_counts_the_eta_down_from_its_estimate(
    admin_client, tiny_base
):
    job = services.sampling_launch(prompts=["Hi?"], model_versions=[
        services.base_version(tiny_base)
    ])  # fmt: skip
    page = admin_client.get(job.get_absolute_url()).content.decode()
    assert "Waiting for a worker on the gpu queue…" in page
    SamplingJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, phase="sampling model 1 of 2: batch 2 of 5",
        eta_seconds=100, progress_at=timezone.now() - timedelta(seconds=30),
    )  # fmt: skip
    page = admin_client.get(job.get_absolute_url()).content.decode()
    assert "Sampling model 1 of 2: batch 2 of 5…" in page
    left = int(re.search(r'data-eta-seconds="(\d+)"', page).group(1))
    assert 68 <= left <= 70
    api = admin_client.get(f"/api/sampling-jobs/{job.pk}/").json()
    assert api["phase"] == "sampling model 1 of 2: batch 2 of 5" and api["progress_at"]
