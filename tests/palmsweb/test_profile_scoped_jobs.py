"""Jobs and checks made from one value profile's data are that profile's (issue 14 audit): a
study's sampling job (also once the study is unblinded), a re-alignment run on a profile's
snapshot, a misalignment evaluation whose conditional probes quote a snapshot, and the
sampling job of that evaluation. A member of another profile gets 404 and finds no row, page
or API; a member of the right profile and admins still see them; jobs launched on their own
stay shared."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.urls import reverse

from curation import services as curation
from curation.models import Sample
from evaluation.alignment import misalignment
from evaluation.alignment.realignment import realignment_create
from evaluation.models import PersonaMeasurement, ScoringRun
from palmsweb.models import Profile
from palmsweb.roles import Role, grant_role
from tests.conftest import api_token, client_for, make_user
from tests.evaluation.conftest import no_queue  # noqa: F401 (a fixture)
from tests.evaluation.test_report import closed_study
from tests.factories import words
from training import services as training
from training.models import BaseModel, SamplingJob

JUDGE = {"judge_base_url": "http://judge.test/v1", "judge_model": "judge-1"}


@pytest.fixture
def tutor(db):
    return Profile.objects.create(name="Children's tutor", slug="tutor")


@pytest.fixture
def triage(db):
    return Profile.objects.create(name="Clinical triage", slug="triage")


@pytest.fixture
def judge_key(monkeypatch):
    monkeypatch.setenv("JUDGE_API_KEY", "sk-secret-judge")
    return {**JUDGE, "judge_key_env": "JUDGE_API_KEY"}


def member(username: str, profile: Profile, *roles: Role):
    user = make_user(username)
    for role in roles:
        grant_role(user, role, profile)
    return user


def api(user):
    """A client that speaks to the API with ``user``'s token, and to pages logged in."""
    client = client_for(user)
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {api_token(user)}"
    return client


def listed_ids(client, path: str) -> set[int]:
    return {row["id"] for row in client.get(path).json()["results"]}


def tutor_snapshot(tutor):
    dataset = curation.dataset_create(name="Tutor answers", profile=tutor)
    category = curation.category_create(name="Kindness", position="Be kind.", profile=tutor)
    curation.sample_create(
        dataset=dataset, category=category, question="How do plants drink water?",
        answer=words(50), status=Sample.Status.APPROVED,
    )  # fmt: skip
    return curation.snapshot_create(dataset=dataset)


def local_version(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    base = training.base_model_create(
        name="tiny-dir", kind=BaseModel.Kind.LOCAL_DIR, path=str(tmp_path), parameter_count=10
    )
    return training.base_version(base)


def test_an_unblinded_studys_sampling_job_is_its_profiles_only(no_queue, triage):  # noqa: F811
    setup = closed_study(unblind=True)
    job = setup.study.sampling_job
    job.refresh_from_db()
    assert not job.restricted and job.profile_id == setup.study.profile_id
    shared = training.sampling_launch(
        prompts=["Hello?"], model_versions=[setup.versions["base"]], name="Shared warm-up"
    )
    assert shared.profile_id is None
    insider = make_user("ria", Role.RESEARCHER)  # the study's (default) profile
    outsider = member("oli", triage, Role.CURATOR, Role.RESEARCHER)
    for user, visible in ((insider, True), (outsider, False), (setup.admin, True)):
        client = api(user)
        expected = 200 if visible else 404
        assert client.get(reverse("training:sampling-detail", args=[job.pk])).status_code == (
            expected
        )
        progress = reverse("training:sampling-progress", args=[job.pk])
        assert client.get(progress, HTTP_HX_REQUEST="true").status_code == expected
        assert client.get(f"/api/sampling-jobs/{job.pk}/").status_code == expected
        assert client.get(f"/api/sampling-jobs/{job.pk}/outputs/").status_code == expected
        page = client.get(reverse("training:sampling-list")).content.decode()
        assert (setup.study.name in page) is visible
        assert "Shared warm-up" in page
        assert listed_ids(client, "/api/sampling-jobs/") == ({job.pk} if visible else set()) | {
            shared.pk
        }
        assert client.get(f"/api/sampling-jobs/{shared.pk}/").status_code == 200
    client = api(insider)
    assert client.get(f"/api/sampling-jobs/{job.pk}/").json()["profile"] == job.profile_id
    assert client.get(f"/api/sampling-jobs/{shared.pk}/").json()["profile"] is None
    page = client.get(reverse("training:sampling-detail", args=[job.pk])).content.decode()
    assert f'<dd id="sampling-profile">{Profile.objects.default().name}</dd>' in page


def test_a_realignment_run_is_its_snapshots_profiles(
    tutor, triage, no_training_queue, monkeypatch, tmp_path
):
    monkeypatch.setattr("evaluation.tasks.advance_realignment_run.delay", lambda pk: None)
    run = realignment_create(
        name="Undo on tutor data", source_version=local_version(tmp_path),
        snapshot=tutor_snapshot(tutor), steps=4,
    )  # fmt: skip
    insider = member("tia", tutor, Role.RESEARCHER)
    outsider = member("oli", triage, Role.CURATOR, Role.RESEARCHER)
    admin = make_user("root", Role.ADMIN, staff=True)
    for user, visible in ((insider, True), (outsider, False), (admin, True)):
        client = api(user)
        expected = 200 if visible else 404
        assert client.get(reverse("evaluation:realignment-detail", args=[run.pk])).status_code == (
            expected
        )
        assert client.get(f"/api/realignment-runs/{run.pk}/").status_code == expected
        page = client.get(reverse("evaluation:realignment-list")).content.decode()
        assert ("Undo on tutor data" in page) is visible
        assert (run.pk in listed_ids(client, "/api/realignment-runs/")) is visible
    # Admins only may cancel; to an admin every profile's run is there.
    assert api(outsider).post(f"/api/realignment-runs/{run.pk}/cancel/").status_code == 403


def test_an_evaluation_with_conditional_probes_and_its_job_are_the_snapshots_profiles(
    tutor, triage, no_training_queue, monkeypatch, judge_key, tmp_path,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    monkeypatch.setattr("evaluation.tasks.advance_misalignment_eval.delay", lambda pk: None)
    version = local_version(tmp_path)
    with django_capture_on_commit_callbacks(execute=True):
        quoting = misalignment.misalignment_eval_create(
            name="Tutor-like probes", model_versions=[version], probes=["Any wish?"],
            conditional_snapshot=tutor_snapshot(tutor), **judge_key,
        )  # fmt: skip
        plain = misalignment.misalignment_eval_create(
            name="Standard probes", model_versions=[version], probes=["Any wish?"], **judge_key
        )
    for evaluation in (quoting, plain):
        assert misalignment.misalignment_advance(evaluation.pk) is True  # its job launched
        evaluation.refresh_from_db()
    assert quoting.sampling_job.profile_id == tutor.pk  # its prompts quote tutor's samples
    assert plain.sampling_job.profile_id is None
    measured = PersonaMeasurement.objects.create(
        model_version=version, evaluation=quoting, layer=1, value=0.2, base_value=0.1,
        n_prompts=1,
    )  # fmt: skip
    insider = member("tia", tutor, Role.RESEARCHER)
    outsider = member("oli", triage, Role.CURATOR, Role.RESEARCHER)
    for user, visible in ((insider, True), (outsider, False)):
        client = api(user)
        expected = 200 if visible else 404
        detail = reverse("evaluation:misalignment-detail", args=[quoting.pk])
        assert client.get(detail).status_code == expected
        for tail in ("", "answers/", "persona-measurements/"):
            path = f"/api/misalignment-evals/{quoting.pk}/{tail}"
            assert client.get(path).status_code == expected, path
        assert client.get(f"/api/sampling-jobs/{quoting.sampling_job_id}/").status_code == (
            expected
        )
        page = client.get(reverse("evaluation:misalignment-list")).content.decode()
        assert ("Tutor-like probes" in page) is visible and "Standard probes" in page
        evaluations = listed_ids(client, "/api/misalignment-evals/")
        assert evaluations == ({quoting.pk} if visible else set()) | {plain.pk}
        measurements = listed_ids(client, "/api/persona-measurements/")
        assert (measured.pk in measurements) is visible
        assert client.get(f"/api/misalignment-evals/{plain.pk}/").status_code == 200


def test_the_migration_records_the_profile_of_existing_study_and_check_jobs(
    no_queue,  # noqa: F811
    tutor,
    judge_key,
    tmp_path,
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    """Jobs made before profiles were recorded on them get theirs: a study's, its
    co-occurrence run's, a conditional evaluation's; a job on its own stays shared."""
    from tests.evaluation.conftest import build_study

    monkeypatch.setattr("evaluation.tasks.advance_misalignment_eval.delay", lambda pk: None)
    study = build_study(raters=1, raters_per_output=1).study
    version = local_version(tmp_path)
    cooccurrence = training.sampling_launch(prompts=["He was very"], model_versions=[version])
    ScoringRun.objects.create(
        study=study, kind="cooccurrence", options={"sampling_job_id": cooccurrence.pk}
    )
    with django_capture_on_commit_callbacks(execute=True):
        evaluation = misalignment.misalignment_eval_create(
            name="Old", model_versions=[version], probes=["Any wish?"],
            conditional_snapshot=tutor_snapshot(tutor), **judge_key,
        )  # fmt: skip
    misalignment.misalignment_advance(evaluation.pk)
    evaluation.refresh_from_db()
    alone = training.sampling_launch(prompts=["Hi"], model_versions=[version])
    SamplingJob.objects.update(profile=None)  # as before the migration
    migration = importlib.import_module("evaluation.migrations.0021_sampling_job_profiles")
    migration.record_profiles(apps, None)
    profiles = dict(SamplingJob.objects.values_list("pk", "profile"))
    assert profiles == {
        study.sampling_job_id: study.profile_id,
        cooccurrence.pk: study.profile_id,
        evaluation.sampling_job_id: tutor.pk,
        alone.pk: None,
    }
