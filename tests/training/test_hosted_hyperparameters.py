"""Our hyperparameters in each hosted provider's names, and the record of what ran: the
request's hyperparameters (with what the provider filled in, OpenAI's resolved "auto"
values included) on the job, its page, its API and the exit kit's job.json."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.management import call_command

from curation.services import sample_create, snapshot_create
from tests.conftest import client_for
from tests.factories import CategoryFactory, DatasetFactory, words
from tests.fake_openai import fake_openai  # noqa: F401  (the fixture)
from tests.fake_together import fake_together  # noqa: F401  (the fixture)
from tests.training.test_hosted_openai import fake, launched  # noqa: F401
from training import services
from training.engine.errors import EngineError
from training.engine.hosted.base import HostedJobSpec
from training.engine.hosted.together import TogetherFineTuneBackend
from training.models import FineTuneJob, ModelVersion
from training.services.hosted import warmup_ratio

pytestmark = pytest.mark.django_db
LLAMA = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"


@pytest.fixture
def together(fake_together, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-secret")
    fake_together.api_key = "tg-secret"
    return fake_together


def launch_on_together(together, capture, **hyperparameters) -> FineTuneJob:
    dataset, category = DatasetFactory(), CategoryFactory()
    for n in range(8):
        sample_create(dataset=dataset, category=category, question=f"Question {n}?",
                      answer=words(40, f"a{n}"), status="approved")  # fmt: skip
    base = services.base_model_create(
        name="llama at together", kind="together", model_id=LLAMA, base_url=together.base_url
    )
    with capture(execute=False):
        job = services.finetune_launch(
            base_model=base, snapshot=snapshot_create(dataset=dataset),
            arm=ModelVersion.Arm.VALUES_TARGETED, method=FineTuneJob.Method.LORA,
            hyperparameters=hyperparameters,
        )  # fmt: skip
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    return job


@pytest.mark.parametrize(
    ("hp", "examples", "ratio"),
    [
        ({"warmup_steps": 1, "batch_size": 8, "grad_accum": 1, "epochs": 2}, 8, 0.5),
        ({"warmup_steps": 1, "batch_size": 2, "grad_accum": 2, "epochs": 3}, 10, 0.1111),
        ({"warmup_steps": 50, "batch_size": 8, "epochs": 1}, 8, 1.0),  # at most the whole run
        ({"warmup_steps": 0, "batch_size": 8, "epochs": 1}, 8, None),
        ({"warmup_steps": 2, "batch_size": 8, "epochs": 1}, None, None),
    ],
)
def test_warm_up_steps_become_the_share_of_all_steps(hp, examples, ratio):
    assert warmup_ratio(hp, examples) == ratio


def test_together_gets_sequence_length_and_warm_up_and_the_job_records_what_ran(
    together, django_capture_on_commit_callbacks, admin_user
):
    job = launch_on_together(
        together, django_capture_on_commit_callbacks, epochs=2, batch_size=8, grad_accum=1,
        max_seq_len=2048, warmup_steps=1, learning_rate=1e-4, lora_r=8, lora_alpha=16, seed=3,
    )  # fmt: skip
    sent = together.jobs[job.remote_job_id]["request"]
    # 8 examples, batch 8, 2 epochs: 2 steps, one of them warming up.
    assert (sent["max_seq_length"], sent["warmup_ratio"]) == (2048, 0.5)
    recorded = job.provider_hyperparameters
    assert recorded["max_seq_length"] == 2048 and recorded["warmup_ratio"] == 0.5
    assert (recorded["n_epochs"], recorded["batch_size"], recorded["learning_rate"]) == (2, 8, 1e-4)
    assert (recorded["lora"], recorded["lora_r"], recorded["lora_alpha"]) == (True, 8, 16)
    assert recorded["random_seed"] == 3 and "training_file" not in recorded

    # Polling keeps the record as Together reports the job (here: a batch size it settled).
    together.jobs[job.remote_job_id]["batch_size"] = 16
    together.advance(job.remote_job_id, "running")
    services.hosted_poll(job.pk)
    job.refresh_from_db()
    assert job.provider_hyperparameters == {**recorded, "batch_size": 16}
    recorded = job.provider_hyperparameters

    page = client_for(admin_user).get(job.get_absolute_url()).content.decode()
    assert 'id="provider-hyperparameters"' in page and "<code>warmup_ratio</code>" in page
    api_job = client_for(admin_user).get(f"/api/finetunes/{job.pk}/").json()
    assert api_job["provider_hyperparameters"] == recorded


def test_a_sequence_length_outside_the_models_limits_is_brought_within_them(together):
    backend = TogetherFineTuneBackend("tg-secret", base_url=together.base_url)
    file_id = backend.upload_training_file(b'{"messages": []}\n')
    short = backend.create_job(HostedJobSpec(model=LLAMA, training_file=file_id, max_seq_len=64))
    long = backend.create_job(HostedJobSpec(model=LLAMA, training_file=file_id, max_seq_len=10**5))
    # The fake's limits: 512 at least, 8192 at most (as Together lists for Llama 3.1 8B).
    assert together.jobs[short.id]["request"]["max_seq_length"] == 512
    assert together.jobs[long.id]["request"]["max_seq_length"] == 8192
    assert short.hyperparameters["max_seq_length"] == 512


def test_a_model_together_does_not_fine_tune_fails_with_its_404(together):
    backend = TogetherFineTuneBackend("tg-secret", base_url=together.base_url)
    file_id = backend.upload_training_file(b'{"messages": []}\n')
    with pytest.raises(EngineError, match="fine-tuning limits of me/unknown: HTTP 404"):
        backend.create_job(HostedJobSpec(model="me/unknown", training_file=file_id))
    assert not together.calls("POST", "/v1/fine-tunes")


def test_openai_records_what_was_sent_then_the_values_it_picked_for_auto(fake, launched):  # noqa: F811
    ft = launched
    recorded = FineTuneJob.objects.get(pk=ft.pk).provider_hyperparameters
    assert recorded["method"] == "supervised" and recorded["batch_size"] == "auto"
    picked = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.8}
    remote = fake.jobs[ft.remote_job_id]
    remote["hyperparameters"] = picked
    remote["method"] = {"type": "supervised", "supervised": {"hyperparameters": picked}}
    fake.advance(ft.remote_job_id, "running")
    services.hosted_poll(ft.pk)
    recorded = FineTuneJob.objects.get(pk=ft.pk).provider_hyperparameters
    assert (recorded["batch_size"], recorded["learning_rate_multiplier"]) == (4, 1.8)
    assert recorded["method"] == "supervised"


def test_the_exit_kits_job_json_says_what_the_provider_ran(
    together, django_capture_on_commit_callbacks, tmp_path, settings
):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    job = launch_on_together(together, django_capture_on_commit_callbacks, warmup_steps=1)
    kit = tmp_path / "kit.zip"
    call_command("hosted_exit_kit", "--output", str(kit), stdout=io.StringIO())
    spec = json.loads(zipfile.ZipFile(kit).read(f"finetune-{job.pk}/job.json"))
    assert spec["provider_hyperparameters"] == job.provider_hyperparameters
    assert spec["provider_hyperparameters"]["warmup_ratio"] > 0


def test_openai_ignores_what_it_does_not_take(fake):  # noqa: F811
    """Sequence length and warm-up are Together's to take: OpenAI's request has neither."""
    from training.engine.hosted.openai import OpenAIFineTuneBackend

    backend = OpenAIFineTuneBackend(fake.api_key, base_url=fake.base_url)
    file_id = backend.upload_training_file(b'{"messages": []}\n')
    spec = HostedJobSpec("gpt-4o-mini", file_id, max_seq_len=2048, warmup_ratio=0.2)
    job_id = backend.create_job(spec).id
    body = fake.jobs[job_id]["request"]
    assert "2048" not in json.dumps(body) and "warmup" not in json.dumps(body)

