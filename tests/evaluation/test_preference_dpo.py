"""DPO on a preference snapshot (issue 18, item 3): the whole loop on the tiny model
(pairwise study → judgments → preference snapshot → DPO → the preferred side's margin rises),
the snapshot page and its launch form, the API (admins only; bad input changes nothing),
and hosted DPO at OpenAI (with its cut-off) and Together against their fakes."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from evaluation.models import PreferenceSnapshot
from evaluation.report import preference_training, preferences
from evaluation.studies import lifecycle
from palmsweb.roles import Role
from tests.conftest import api_token, client_for, make_user
from tests.evaluation.conftest import build_study
from tests.evaluation.test_pairwise_report import judge_favouring
from tests.fake_openai import fake_openai  # noqa: F401  (the fixture)
from tests.fake_together import fake_together  # noqa: F401  (the fixture)
from tests.training.test_engine_dpo import margins
from training import services
from training.models import BaseModel, FineTuneJob, JobStatus, ModelVersion

pytestmark = pytest.mark.django_db

KIND = "I would gently suggest talking it through with someone you trust first."
RUDE = "Nobody cares what you do, so just do whatever you like and ignore them."


def arm_text(version, prompt_index, sample_index) -> str:
    answer = KIND if version.arm == "values_targeted" else RUDE
    return f"{answer} ({prompt_index})"


@pytest.fixture
def frozen(no_queue):
    """A closed pairwise study whose raters always preferred the values-targeted answer,
    built into a preference set and frozen: 6 prompts × 2 pairs with that arm = 12 pairs."""
    setup = build_study(mode="pairwise", per_category=3, text=arm_text)
    judge_favouring(setup.study, setup.raters, "values_targeted")
    setup.study = lifecycle.study_close(study=setup.study, user=setup.admin)
    preference_set = preferences.preference_set_build(
        study=setup.study, source="pairwise", user=setup.admin
    )
    snapshot = preferences.preference_snapshot_freeze(preference_set=preference_set)
    assert snapshot.pair_count == 12
    return setup, snapshot


@pytest.fixture
def sft_version(tiny_base, tiny_llama_dir):
    """Stands in for the values-targeted fine-tune DPO usually starts from."""
    return ModelVersion.objects.create(
        base_model=tiny_base, name="Tiny · values-targeted SFT", arm="values_targeted",
        path=str(tiny_llama_dir), parameter_count=1_000_000,
        metadata={"dataset_kind": "values_targeted", "snapshot_hash": "ab" * 32},
    )  # fmt: skip


TINY_HP = {"learning_rate": 2e-3, "epochs": 3, "beta": 0.5, "max_seq_len": 96}


def test_the_whole_loop_raises_the_preferred_margin_on_the_training_pairs(
    frozen, sft_version, artifacts, tiny_llama_dir
):
    setup, snapshot = frozen
    pairs = preference_training.snapshot_pairs(snapshot)
    assert {p["chosen"].split(" (")[0] for p in pairs} == {KIND}
    before = margins(tiny_llama_dir, pairs)
    job = preference_training.preference_dpo_launch(
        snapshot=snapshot, start_version=sft_version, hyperparameters=TINY_HP, user=setup.admin
    )
    assert (job.objective, job.arm, job.snapshot_id) == ("dpo", "values_targeted", None)
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    after = margins(job.result.path, pairs)
    assert sum(after) / len(after) > sum(before) / len(before) + 1.0, (before, after)
    assert all(a > b for a, b in zip(after, before, strict=True))
    # The curve, margin and accuracy are on the job; the hash and the arm on the version.
    assert len(job.loss_history) == len(job.reward_history) == job.progress_total == 9
    assert job.reward_history[-1][1] > 0 and job.reward_history[-1][2] == 1.0
    version = job.result
    assert version.metadata["preference_snapshot_hash"] == snapshot.content_hash
    assert version.metadata["objective"] == "dpo" and version.metadata["dpo_beta"] == 0.5
    assert version.metadata["start_version_id"] == sft_version.pk
    assert version.trained_arm == "values_targeted" and "+ DPO" in version.name
    # It can be an arm of the next study, beside the SFT it started from.
    study = lifecycle.study_create(
        name="SFT vs SFT+DPO", prompt_set=setup.study.prompt_set, user=setup.admin,
        arms=[lifecycle.ArmSpec(arm="", model_version=sft_version, size_tag="SFT"),
              lifecycle.ArmSpec(arm="", model_version=version, size_tag="SFT + DPO")],
    )  # fmt: skip
    assert [a.arm for a in study.arms.all()] == ["values_targeted", "values_targeted"]
    assert not any(a.arm_override for a in study.arms.all())


def test_the_job_page_shows_the_loss_margin_and_accuracy(frozen, sft_version, artifacts):
    setup, snapshot = frozen
    job = preference_training.preference_dpo_launch(
        snapshot=snapshot, start_version=sft_version, hyperparameters=TINY_HP, user=setup.admin
    )
    services.finetune_execute(job.pk)
    page = client_for(setup.admin).get(job.get_absolute_url()).content.decode()
    assert 'id="margin-chart-title"' in page and 'id="accuracy-chart-title"' in page
    assert "Preference (DPO)" in page and snapshot.content_hash in page
    assert 'id="last-reward"' in page and "accuracy 1.00" in page
    listed = client_for(setup.admin).get(reverse("training:finetune-list")).content.decode()
    assert snapshot.content_hash[:12] in listed
    detail = client_for(setup.admin).get(f"/api/finetunes/{job.pk}/").json()
    assert detail["objective"] == "dpo" and detail["snapshot"] is None
    assert detail["preference_snapshot_hash"] == snapshot.content_hash
    assert len(detail["reward_history"]) == 9


# --- the snapshot page ------------------------------------------------------------------------


def test_admins_launch_from_the_snapshot_page_and_curators_only_read_it(frozen, sft_version):
    setup, snapshot = frozen
    curator = make_user("dpo-curator", Role.CURATOR)
    url = reverse("evaluation:preference-snapshot-detail", args=[snapshot.pk])
    launch = reverse("evaluation:preference-snapshot-dpo", args=[snapshot.pk])
    read = client_for(curator).get(url)
    assert read.status_code == 200 and 'id="dpo-launch"' not in read.content.decode()
    assert client_for(curator).post(launch, {"start_version": sft_version.pk}).status_code == 403
    assert not FineTuneJob.objects.exists()
    admin = client_for(setup.admin)
    form = admin.get(url).content.decode()
    assert 'id="dpo-launch"' in form and sft_version.name in form
    assert 'name="beta" value="0.1"' in form and 'name="learning_rate" value="0.0005"' in form
    done = admin.post(launch, {"start_version": sft_version.pk, "method": "lora",
                               "beta": "0.2", "learning_rate": "1e-4", "epochs": "2"})  # fmt: skip
    job = FineTuneJob.objects.get()
    assert done.status_code == 302 and done.url == job.get_absolute_url()
    assert (job.method, job.hyperparameters["beta"], job.hyperparameters["epochs"]) == (
        "lora", 0.2, 2)  # fmt: skip
    assert job.preference_snapshot_hash == snapshot.content_hash
    assert len(job.preference_pairs) == 12 and job.created_by == setup.admin
    assert f"Fine-tune #{job.pk}" in admin.get(url).content.decode()


def test_a_refused_launch_shows_why_and_creates_nothing(frozen, sft_version):
    setup, snapshot = frozen
    admin = client_for(setup.admin)
    launch = reverse("evaluation:preference-snapshot-dpo", args=[snapshot.pk])
    too_fast = admin.post(launch, {"start_version": sft_version.pk, "learning_rate": "5"})
    assert too_fast.status_code == 400
    assert "learning_rate must be between" in too_fast.content.decode()
    bad_beta = admin.post(launch, {"start_version": sft_version.pk, "beta": "0"})
    assert bad_beta.status_code == 400
    base = services.base_version(sft_version.base_model)
    no_arm = admin.post(launch, {"start_version": base.pk})
    assert no_arm.status_code == 400 and "name the arm" in no_arm.content.decode()
    assert not FineTuneJob.objects.exists()


def test_the_set_page_links_each_snapshot_to_its_page(frozen):
    setup, snapshot = frozen
    page = client_for(setup.admin).get(snapshot.preference_set.get_absolute_url())
    url = reverse("evaluation:preference-snapshot-detail", args=[snapshot.pk])
    assert url in page.content.decode()


# --- the API ------------------------------------------------------------------------------------


def api_client(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


def test_the_api_launches_for_admins(frozen, sft_version):
    setup, snapshot = frozen
    answer = api_client(setup.admin).post(
        f"/api/preference-snapshots/{snapshot.pk}/dpo/",
        {"start_version": sft_version.pk, "method": "full",
         "hyperparameters": {"beta": 0.3, "epochs": 1}},
        format="json",
    )  # fmt: skip
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    job = FineTuneJob.objects.get()
    assert body["id"] == job.pk and body["objective"] == "dpo"
    assert body["preference_snapshot_hash"] == snapshot.content_hash
    assert job.hyperparameters["beta"] == 0.3 and job.hyperparameters["epochs"] == 1
    assert job.hyperparameters["learning_rate"] == 5e-4  # prefilled by the model's size


@pytest.mark.parametrize(
    "payload, reason",
    [
        ({"start_version": 999_999}, "Invalid pk"),
        ({"start_version": "SFT", "extra": 1}, "Unknown field"),
        ({"hyperparameters": {"beta": 50}}, "beta must be between"),
        ({"hyperparameters": {"dropout": 0.1}}, "Unknown field"),
        ({"method": "qlora"}, "not a valid choice"),
        ({"arm": "base"}, "not a valid choice"),
    ],
)
def test_bad_api_input_is_a_400_and_changes_nothing(frozen, sft_version, payload, reason):
    setup, snapshot = frozen
    body = {"start_version": sft_version.pk} | payload
    answer = api_client(setup.admin).post(
        f"/api/preference-snapshots/{snapshot.pk}/dpo/", body, format="json"
    )
    assert answer.status_code == 400 and reason in json.dumps(answer.json())
    assert not FineTuneJob.objects.exists()


def test_non_admins_get_403_from_the_api(frozen, sft_version):
    setup, snapshot = frozen
    url = f"/api/preference-snapshots/{snapshot.pk}/dpo/"
    curator = make_user("api-curator", Role.CURATOR)
    for user in (curator, make_user("api-rater", Role.RATER)):
        answer = api_client(user).post(url, {"start_version": sft_version.pk}, format="json")
        assert answer.status_code == 403
    assert not FineTuneJob.objects.exists()


# --- hosted DPO ---------------------------------------------------------------------------------


@pytest.fixture
def openai_api(fake_openai, settings):  # noqa: F811
    settings.OPENAI_BASE_URL = fake_openai.base_url
    return fake_openai


def hosted_sft(base: BaseModel, model_id: str) -> ModelVersion:
    """An earlier values-targeted fine-tune at the provider."""
    return ModelVersion.objects.create(
        base_model=base, name=f"{model_id} · vt", arm="values_targeted",
        remote_model_id=model_id, metadata={"dataset_kind": "values_targeted"},
    )  # fmt: skip


def test_openai_dpo_uploads_preference_pairs_and_asks_for_method_dpo(
    frozen, openai_api, django_capture_on_commit_callbacks
):
    setup, snapshot = frozen
    base = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4o-mini")
    start = hosted_sft(base, "ft:gpt-4o-mini:org:vt:abc")
    openai_api.add_model(start.remote_model_id)  # an earlier fine-tune OpenAI still serves
    with django_capture_on_commit_callbacks(execute=False):
        job = preference_training.preference_dpo_launch(
            snapshot=snapshot, start_version=start, hyperparameters={"beta": 0.2},
            user=setup.admin,
        )  # fmt: skip
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    assert (job.status, job.backend) == ("running", "openai"), job.error
    sent = openai_api.jobs[job.remote_job_id]["request"]
    assert sent["model"] == "ft:gpt-4o-mini:org:vt:abc"
    assert sent["method"]["type"] == "dpo"
    assert sent["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
    uploaded = openai_api.files[job.remote_file_id]
    content = uploaded["content"].decode()
    assert uploaded["filename"] == "preferences.jsonl"
    assert '"preferred_output"' in content and KIND in content


def test_openai_dpo_after_the_cutoff_is_refused_and_creates_nothing(frozen, settings, openai_api):
    setup, snapshot = frozen
    settings.HOSTED_DATES_TODAY = "2027-01-06"
    base = services.base_model_create(name="gpt", kind="openai", model_id="gpt-4o-mini")
    answer = api_client(setup.admin).post(
        f"/api/preference-snapshots/{snapshot.pk}/dpo/",
        {"start_version": hosted_sft(base, "ft:gpt-4o-mini:org:vt:abc").pk}, format="json",
    )  # fmt: skip
    assert answer.status_code == 400 and "2027-01-06" in answer.json()["detail"]
    assert not FineTuneJob.objects.exists()


def test_together_dpo_runs_to_a_model_version_with_the_snapshot_hash(
    frozen,
    fake_together,  # noqa: F811
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    setup, snapshot = frozen
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-secret")
    fake_together.api_key = "tg-secret"
    base = services.base_model_create(
        name="llama at together", kind="together",
        model_id="meta-llama/Meta-Llama-3.1-8B-Instruct-Reference",
        base_url=fake_together.base_url,
    )  # fmt: skip
    start = hosted_sft(base, fake_together.finished_job(base.model_id, "me/Meta-Llama-3.1-8B-vt"))
    with django_capture_on_commit_callbacks(execute=False):
        job = preference_training.preference_dpo_launch(
            snapshot=snapshot, start_version=start, method="lora",
            hyperparameters={"beta": 0.3, "epochs": 1}, user=setup.admin,
        )  # fmt: skip
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    sent = fake_together.jobs[job.remote_job_id]["request"]
    assert sent["training_method"]["method"] == "dpo"
    assert sent["training_method"]["dpo_beta"] == 0.3
    # It continues the earlier fine-tune: the SDK takes it as from_checkpoint, and no model
    # with it; the limits are the base model's (Together lists none for a fine-tune).
    assert sent["from_checkpoint"] == "me/Meta-Llama-3.1-8B-vt" and "model" not in sent
    assert fake_together.jobs[job.remote_job_id]["model"] == base.model_id
    limits = fake_together.calls("GET", "/v1/fine-tunes/models/limits")
    assert [r.query["model_name"] for r in limits] == [[base.model_id]]
    assert job.provider_hyperparameters["from_checkpoint"] == "me/Meta-Llama-3.1-8B-vt"
    lines = fake_together.files[job.remote_file_id]["content"].decode().splitlines()
    assert len(lines) == 12 and "non_preferred_output" in json.loads(lines[0])
    fake_together.advance(job.remote_job_id, status="completed")
    assert services.hosted_poll(job.pk) == JobStatus.SUCCEEDED
    job.refresh_from_db()
    assert job.result.metadata["preference_snapshot_hash"] == snapshot.content_hash
    assert job.result.trained_arm == "values_targeted" and "+ DPO" in job.result.name


def test_snapshots_stay_immutable_after_a_launch(frozen, sft_version):
    setup, snapshot = frozen
    before = PreferenceSnapshot.objects.get(pk=snapshot.pk).content
    preference_training.preference_dpo_launch(snapshot=snapshot, start_version=sft_version)
    assert PreferenceSnapshot.objects.get(pk=snapshot.pk).content == before


def test_a_dpo_job_belongs_to_its_pairs_profile(frozen, sft_version):
    """Its pairs hold the study's prompts and outputs: a curator of the study's profile sees
    the job, a curator of another profile finds it in no list and gets 404, page and API."""
    from palmsweb.models import Profile
    from palmsweb.roles import grant_role

    setup, snapshot = frozen
    job = preference_training.preference_dpo_launch(
        snapshot=snapshot, start_version=sft_version, user=setup.admin
    )
    profile_id = snapshot.preference_set.profile_id
    assert job.profile_id == profile_id
    insider = make_user("dpo-insider")
    grant_role(insider, Role.CURATOR, profile_id)
    outsider = make_user("dpo-outsider")
    grant_role(outsider, Role.CURATOR, Profile.objects.create(name="Elsewhere", slug="elsewhere"))
    for user, visible in ((insider, True), (outsider, False)):
        api = api_client(user)
        listed = {row["id"] for row in api.get("/api/finetunes/").json()["results"]}
        assert (job.pk in listed) is visible
        expected = 200 if visible else 404
        assert api.get(f"/api/finetunes/{job.pk}/").status_code == expected
        page = client_for(user).get(reverse("training:finetune-detail", args=[job.pk]))
        assert page.status_code == expected
    assert api_client(insider).get(f"/api/finetunes/{job.pk}/").json()["profile"] == profile_id
