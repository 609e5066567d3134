"""Issue 17's PALMS loop on Together, the study half, in headless Chromium against the local
fake Together AI: the admin opens a study whose base, control and values-targeted arms are
all Together models (sampled by a real Celery worker through Together's OpenAI-compatible
endpoint), no output is held for naming its model, a rater rates outputs by keyboard without
meeting a model's name, the admin closes and unblinds the study and reads the report, and
the exit kit downloaded from a fine-tune's page replays that report with no difference.
(Registering, launching and mirroring a Together fine-tune in the browser is
test_hosted_journey's; here the two fine-tunes run through the services before the
browser starts.)"""

from __future__ import annotations

import io
import os
import re

import pytest
from django.core.management import call_command

from curation.services import sample_create, snapshot_create
from evaluation.models import Rating, Study, StudyOutput
from evaluation.studies import lifecycle, queue
from palmsweb.roles import Role
from tests.conftest import make_user
from tests.e2e.conftest import download_exit_kit
from tests.e2e.test_rating_journey import sign_in_by_keyboard
from tests.evaluation.conftest import make_prompt_set
from tests.factories import CategoryFactory, DatasetFactory, words
from tests.fake_together import fake_together, reply_tag  # noqa: F401  (the fixture)
from training import services, tasks
from training.models import FineTuneJob, JobStatus

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # ORM calls between browser steps

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LLAMA = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
WAIT_MS = 60_000
SCORES = {"base": 2, "control": 3, "values_targeted": 5}


def together_fine_tune(base, fake, arm: str, monkeypatch) -> FineTuneJob:
    """A LoRA fine-tune of ``arm``'s snapshot at the fake Together, run to its result."""
    dataset, category = DatasetFactory(kind=arm), CategoryFactory()
    for n in range(4):
        sample_create(dataset=dataset, category=category, question=f"{arm} question {n}?",
                      answer=words(40, f"{arm[:3]}{n}"), status="approved")  # fmt: skip
    with monkeypatch.context() as queue_off:  # this test runs the job itself, not the worker
        queue_off.setattr(tasks.run_finetune, "delay_on_commit", lambda *a, **k: None)
        job = services.finetune_launch(
            base_model=base, snapshot=snapshot_create(dataset=dataset), arm=arm, method="lora"
        )
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    fake.advance(job.remote_job_id, "completed")
    assert services.hosted_poll(job.pk) == JobStatus.SUCCEEDED
    job.refresh_from_db()
    return job


@pytest.fixture
def together_study(fake_together, monkeypatch, admin_user):  # noqa: F811  (the fixture)
    """A draft study of three Together arms: the base model and two fine-tunes of it."""
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-secret")
    fake_together.api_key = "tg-secret"
    fake_together.served.add(LLAMA)  # Together serves the base model itself, too
    base = services.base_model_create(
        name="Llama 3.1 8B at Together", kind="together", model_id=LLAMA,
        base_url=fake_together.base_url,
    )  # fmt: skip
    jobs = {arm: together_fine_tune(base, fake_together, arm, monkeypatch)
            for arm in ("control", "values_targeted")}  # fmt: skip
    versions = {"base": services.base_version(base), **{a: j.result for a, j in jobs.items()}}
    raters = [make_user(f"rater{i}", Role.RATER) for i in range(3)]
    study = lifecycle.study_create(
        name="Honesty at Together",
        prompt_set=make_prompt_set(2, 2),
        arms=[lifecycle.ArmSpec(arm=arm, model_version=v) for arm, v in versions.items()],
        raters=raters, samples_per_prompt=1, raters_per_output=3, max_new_tokens=32,
        user=admin_user,
    )  # fmt: skip
    return study, raters, jobs


def test_a_study_of_together_arms_opens_is_rated_reported_and_kept_by_the_exit_kit(
    celery_worker,
    new_page,
    login,
    admin_user,
    together_study,
    fake_together,  # noqa: F811  (the fixture)
    tmp_path,
):
    expect = pytest.importorskip("playwright.sync_api").expect
    study, raters, jobs = together_study
    model_names = [LLAMA, *(job.result.remote_model_id for job in jobs.values())]

    # --- the admin opens it; the worker samples the three Together models --------------------
    admin = new_page()
    login(admin, admin_user)
    admin.goto(study.get_absolute_url())
    admin.get_by_role("button", name="Open: sample outputs").click()
    expect(admin.locator("#study-badge")).to_have_text("Rating", timeout=WAIT_MS)
    # Nothing held back for naming its model: all twelve go to the raters.
    expect(admin.locator("#study-status")).to_contain_text("12 outputs: 12 in the pool")
    outputs = StudyOutput.objects.filter(study=study).select_related("arm__model_version")
    assert {o.screening for o in outputs} == {StudyOutput.Screening.ACTIVE}

    # --- a rater rates by keyboard, and never meets a model's name --------------------------
    rater = new_page()
    sign_in_by_keyboard(rater, raters[0], f"/evaluation/rate/{study.pk}/")
    expect(rater.locator("#instructions")).to_be_visible()
    rater.wait_for_load_state("load")  # the keys work once rating.js has run
    rater.keyboard.press("Enter")  # past the instructions
    expect(rater.locator("#output-text")).to_be_visible()
    for _ in range(2):
        text = rater.locator("#output-text").inner_text()
        assert text.startswith("A considered answer (tag ")
        assert not any(name in rater.content() for name in model_names)
        output = outputs.get(text=text)
        score = SCORES[output.arm.arm]
        rater.keyboard.press(str(score))
        rater.keyboard.press("Enter")
        expect(rater.locator(".task .msg")).to_have_text(f"Saved your rating ({score}).")
    assert Rating.objects.filter(rater=raters[0], status="completed").count() == 2

    # The other ratings, as the other raters would give them.
    for person in raters:
        while (claim := queue.rating_claim_next(study=study, rater=person)) is not None:
            output = outputs.get(pk=claim.output_id)
            queue.rating_submit(public_id=output.public_id, rater=person,
                                score=SCORES[output.arm.arm])  # fmt: skip

    # --- close, unblind, read the report ----------------------------------------------------
    admin.goto(study.get_absolute_url())
    admin.on("dialog", lambda dialog: dialog.accept())
    admin.get_by_role("button", name="Close").click()
    expect(admin.locator("#study-badge")).to_have_text("Closed", timeout=WAIT_MS)
    admin.get_by_role("button", name="Unblind").click()
    admin.wait_for_url(f"**/evaluation/studies/{study.pk}/results/")
    expect(admin.locator("#summary")).to_contain_text("Values-targeted vs base: better in")
    study.refresh_from_db()
    assert study.status == Study.Status.CLOSED and study.is_unblinded

    # --- the exit kit, from the values-targeted fine-tune's page, replays the report --------
    kit = download_exit_kit(
        admin, jobs["values_targeted"], tmp_path / "kit.zip", timeout_ms=WAIT_MS
    )
    out = io.StringIO()
    call_command("replay_report", str(kit), stdout=out)
    assert re.search(rf"studies/study-{study.pk}\.zip:\n.*none differ", out.getvalue())
    assert f"({reply_tag(jobs['values_targeted'].result.remote_model_id)})" in "".join(
        outputs.filter(arm__arm="values_targeted").values_list("text", flat=True)
    )
