"""Issue 17's "done when", through the pages (the HTTP client drives them as a browser
would, without JavaScript) against the local fake Together AI: an admin registers a Together
base model, fine-tunes a control and a values-targeted model there, builds a study with the
base, control and values-targeted arms, opens it (all three sampled through Together's
OpenAI-compatible endpoint), three raters rate every output blind, the admin closes it and
reads the report, and the exit kit written from it replays the report with no difference.
The workers' steps are the Celery tasks, run in-process."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.management import call_command
from django.urls import reverse

from curation.services import sample_create, snapshot_create
from evaluation.models import Rating, Study, StudyOutput
from evaluation.studies import lifecycle
from palmsweb.roles import Role
from tests.conftest import client_for, make_user
from tests.evaluation.conftest import make_prompt_set, no_queue  # noqa: F401  (the fixture)
from tests.factories import CategoryFactory, DatasetFactory, words
from tests.fake_together import fake_together, reply_tag  # noqa: F401  (the fixture)
from training import services, tasks
from training.models import BaseModel, FineTuneJob, JobStatus

pytestmark = pytest.mark.django_db
LLAMA = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
HX = {"HTTP_HX_REQUEST": "true"}
# What the raters give each arm (the values-targeted model does best), by rater.
SCORES = {"base": (2, 2, 3), "control": (3, 3, 2), "values_targeted": (5, 4, 5)}


@pytest.fixture(autouse=True)
def artifacts(tmp_path, settings, no_queue):  # noqa: F811  (the fixture)
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"


def snapshot_of(kind: str):
    dataset, category = DatasetFactory(kind=kind), CategoryFactory()
    for n in range(5):
        sample_create(dataset=dataset, category=category, question=f"{kind} question {n}?",
                      answer=words(40, f"{kind[:3]}{n}"), status="approved")  # fmt: skip
    return snapshot_create(dataset=dataset)


def register_together_model(admin, fake) -> BaseModel:
    response = admin.post(reverse("training:basemodel-create"), {
        "name": "Llama 3.1 8B at Together", "kind": "together", "model_id": LLAMA,
        "base_url": fake.base_url, "api_key_env": "", "parameter_count": 8_000_000_000,
    })  # fmt: skip
    assert response.status_code == 302
    return BaseModel.objects.get(kind="together")


def fine_tune_at_together(admin, fake, base: BaseModel, arm: str) -> FineTuneJob:
    """Launch from the form, let the worker create the job, and let Together finish it."""
    snapshot = snapshot_of(arm)
    response = admin.post(reverse("training:finetune-create"), {
        "base_model": base.pk, "snapshot": snapshot.pk, "arm": arm, "arm_snapshot": snapshot.pk,
        "method": "lora", "epochs": 2, "learning_rate": 1e-4, "batch_size": 8, "grad_accum": 1,
        "max_seq_len": 1024, "warmup_steps": 1, "seed": 42, "lora_r": 16, "lora_alpha": 32,
    })  # fmt: skip
    job = FineTuneJob.objects.get(snapshot=snapshot)
    assert response.status_code == 302
    tasks.run_finetune(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING, job.error
    fake.advance(job.remote_job_id, "completed",
                 metrics=[{"train/global_step": 1, "train/loss": 1.8}])  # fmt: skip
    tasks.poll_openai_jobs()
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.result.trained_arm == arm
    return job


def study_form(prompt_set, versions: dict, raters: list) -> dict:
    data = {
        "name": "Honesty at Together", "description": "", "prompt_set": prompt_set.pk,
        "samples_per_prompt": 1, "raters_per_output": 3, "temperature": 0.7, "top_p": 0.9,
        "max_new_tokens": 64, "seed": 1, "lease_minutes": 10, "raters": [r.pk for r in raters],
        "arms-TOTAL_FORMS": 3, "arms-INITIAL_FORMS": 0, "arms-MIN_NUM_FORMS": 0,
        "arms-MAX_NUM_FORMS": 24,
    }  # fmt: skip
    for i, (arm, version) in enumerate(versions.items()):
        data.update({f"arms-{i}-arm": arm, f"arms-{i}-model_version": version.pk,
                     f"arms-{i}-size_tag": ""})  # fmt: skip
    data.update({f"rubric_{score}": f"Anchor for {score}" for score in range(1, 6)})
    return data


def rate_everything_from_the_page(study: Study, raters: list, secrets: list[str]) -> int:
    """Each rater claims outputs from the rating page and submits a score until none is
    left; the page never shows a model's name or id. Returns how many ratings were given."""
    given = 0
    for index, rater in enumerate(raters):
        client = client_for(rater)
        while True:
            page = client.post(reverse("evaluation:rate-claim", args=[study.pk]), **HX)
            if page.context["state"] != "task":
                break
            body = page.content.decode()
            assert not any(secret in body for secret in secrets)
            claim = page.context["claim"]
            output = StudyOutput.objects.select_related("arm").get(pk=claim.output_id)
            score = SCORES[output.arm.arm][index]
            url = reverse("evaluation:rate-submit", args=[study.pk, output.public_id])
            saved = client.post(url, {"score": score, "comment": ""}, **HX)
            assert f"Saved your rating ({score})." in saved.content.decode()
            given += 1
    return given


def test_an_admin_runs_the_palms_loop_on_together_from_the_pages_to_a_replayed_exit_kit(
    fake_together,  # noqa: F811  (the fixture)
    monkeypatch,
    admin_user,
    tmp_path,
):
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-secret")
    fake_together.api_key = "tg-secret"
    admin = client_for(admin_user)
    base = register_together_model(admin, fake_together)
    fake_together.served.add(LLAMA)  # Together serves the base model itself, too
    jobs = {arm: fine_tune_at_together(admin, fake_together, base, arm)
            for arm in ("control", "values_targeted")}  # fmt: skip
    versions = {"base": services.base_version(base),
                **{arm: job.result for arm, job in jobs.items()}}  # fmt: skip

    # The study: the three arms, four prompts, one sample each, three raters per output.
    raters = [make_user(f"rater{i}", Role.RATER) for i in range(3)]
    prompt_set = make_prompt_set(2, 2)
    response = admin.post(
        reverse("evaluation:study-create"), study_form(prompt_set, versions, raters)
    )
    study = Study.objects.get(name="Honesty at Together")
    assert response.status_code == 302
    assert sorted(study.arms.values_list("arm", flat=True)) == sorted(versions)

    # Open: one sampling job over the three Together models, then rating opens.
    assert admin.post(reverse("evaluation:study-open", args=[study.pk])).status_code == 302
    study.refresh_from_db()
    tasks.run_sampling(study.sampling_job_id)
    study = lifecycle.study_sync_sampling(study_id=study.pk)
    assert study.status == Study.Status.RATING
    outputs = StudyOutput.objects.filter(study=study).select_related("arm__model_version")
    assert outputs.count() == 3 * 4
    # No output names its model, so none is held from the raters for review.
    assert not outputs.exclude(screening=StudyOutput.Screening.ACTIVE).exists()
    for output in outputs:
        model = output.arm.model_version.remote_model_id or LLAMA
        assert f"({reply_tag(model)})" in output.text
    secrets = [LLAMA, base.name, *(jobs[arm].result.remote_model_id for arm in jobs)]

    assert rate_everything_from_the_page(study, raters, secrets) == 3 * 4 * 3
    assert Rating.objects.filter(study=study, status="completed").count() == 36

    # Close, unblind and read the report: the values-targeted arm is rated highest.
    assert admin.post(reverse("evaluation:study-close", args=[study.pk])).status_code == 302
    assert admin.post(reverse("evaluation:study-unblind", args=[study.pk])).status_code == 302
    study.refresh_from_db()
    assert study.status == Study.Status.CLOSED and study.is_unblinded
    report = admin.get(reverse("evaluation:study-results", args=[study.pk]))
    assert report.status_code == 200 and "Values-targeted" in report.content.decode()

    # The exit kit of both Together fine-tunes, then its replay.
    kit = tmp_path / "kit.zip"
    call_command("hosted_exit_kit", "--output", str(kit), stdout=io.StringIO())
    with zipfile.ZipFile(kit) as zf:
        manifest = json.loads(zf.read("exit-kit.json"))
        folder = f"finetune-{jobs['values_targeted'].pk}"
        rows = [json.loads(x) for x in zf.read(f"{folder}/outputs.jsonl").splitlines()]
    assert {f["finetune"] for f in manifest["finetunes"]} == {job.pk for job in jobs.values()}
    unblinded = "Closed and unblinded: the bundle has arms and model versions."
    assert manifest["studies"] == [{"study": study.pk, "name": study.name,
                                    "bundle": f"studies/study-{study.pk}.zip",
                                    "includes_arms": True, "note": unblinded}]  # fmt: skip
    assert len(rows) == 4 and all(len(row["studies"][0]["ratings"]) == 3 for row in rows)
    out = io.StringIO()
    call_command("replay_report", str(kit), stdout=out)
    assert f"studies/study-{study.pk}.zip:" in out.getvalue()
    assert "none differ" in out.getvalue()
