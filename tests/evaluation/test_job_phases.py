"""Issue 12, item 3 for the evaluation's background work: scoring runs, exports and
misalignment judging say what they are doing and how long is left, and the pages show it."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import respx
from django.urls import reverse
from django.utils import timezone

from evaluation import scoring, tasks
from evaluation.alignment import misalignment
from evaluation.models import Export, MisalignmentEval, ScoringRun, Study
from evaluation.report import exports
from evaluation.scoring import toxicity
from palmsweb.lib import jobs
from tests.conftest import client_for
from tests.evaluation.conftest import build_study, make_versions
from tests.evaluation.test_misalignment import (
    JUDGE_URL,
    create,
    fake_answers,
    fake_judge_endpoint,
    vt_text,
)
from tests.evaluation.test_scoring import GENDER_ONLY
from training.models import JobStatus, SamplingJob

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def study_setup(no_queue):
    return build_study(text=lambda v, p, s: f"A careful answer number {p}-{s} from {v.arm}.")


@pytest.fixture
def watched_phases(monkeypatch):
    """Every progress write of a scoring run, as (phase, done, eta) read back from the row."""
    seen = []
    original = jobs.ProgressWriter.__call__
    monkeypatch.setattr(toxicity, "TOXICITY_BATCH", 5)

    def watch(self, done, *, force=False, phase=""):
        original(self, done, force=True, phase=phase)
        run = ScoringRun.objects.get(pk=self.pk)
        seen.append((run.phase, run.progress_done, run.eta_seconds))

    monkeypatch.setattr(jobs.ProgressWriter, "__call__", watch)
    return seen


def test_a_toxicity_run_reports_its_batches_and_an_eta(study_setup, watched_phases):
    run = ScoringRun.objects.create(study=study_setup.study, kind="toxicity",
                                    scorer="offline")  # fmt: skip
    tasks.run_toxicity_scoring(run.pk)
    run.refresh_from_db()
    assert run.status == ScoringRun.Status.SUCCEEDED, run.error
    # 12 outputs in batches of 5: each batch is announced, then counted as it lands.
    phases = [phase for phase, _, _ in watched_phases]
    assert "scoring batch 1 of 3" in phases and "scoring batch 3 of 3" in phases
    assert phases.index("scoring batch 1 of 3") < phases.index("scoring batch 3 of 3")
    assert watched_phases[-1][1] == 12 and watched_phases[-1][2] == 0
    assert (run.phase, run.eta_seconds, run.eta_left) == ("", None, None)


def test_a_cooccurrence_run_mirrors_its_sampling_job(study_setup, monkeypatch, no_training_queue):
    options = scoring.clean_cooccurrence_options(
        {"sets": GENDER_ONLY, "n_per_template": 2, "tagger": "lexicon", "min_count": 1}
    )
    run = ScoringRun.objects.create(study=study_setup.study, kind="cooccurrence",
                                    options=options)  # fmt: skip
    assert scoring.cooccurrence_advance(run.pk) is True
    job = SamplingJob.objects.get(pk=ScoringRun.objects.get(pk=run.pk).options["sampling_job_id"])
    SamplingJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, phase="sampling model 2 of 3: batch 1 of 1", eta_seconds=20,
        progress_at=timezone.now(), progress_done=4,
    )  # fmt: skip
    assert scoring.cooccurrence_advance(run.pk) is True
    run.refresh_from_db()
    assert run.phase == "sampling completions: sampling model 2 of 3: batch 1 of 1"
    assert 18 <= run.eta_seconds <= 20 and run.progress_done == 4
    page = client_for(study_setup.admin).get(
        reverse("evaluation:study-scoring-runs", args=[study_setup.study.pk]), **HX
    ).content.decode()
    assert "Sampling completions: sampling model 2 of 3: batch 1 of 1…" in page
    assert re.search(r'data-eta-seconds="(1[6-9]|20)"', page)


def test_a_bundle_export_names_each_step(study_setup, tmp_path, settings):
    settings.ARTIFACTS_DIR = tmp_path
    Study.objects.filter(pk=study_setup.study.pk).update(status=Study.Status.CLOSED)
    study_setup.study.refresh_from_db()
    steps = []
    exports.write_export(study_setup.study, "bundle", tmp_path / "b.zip", includes_arms=False,
                         on_phase=steps.append)  # fmt: skip
    assert steps == [
        "writing ratings.csv", "writing ratings.jsonl", "writing ratings.parquet",
        "writing the HTML report", "zipping the bundle",
    ]  # fmt: skip
    export = Export.objects.create(study=study_setup.study, format="csv")
    page = client_for(study_setup.admin).get(
        reverse("evaluation:study-exports", args=[study_setup.study.pk]), **HX
    ).content.decode()
    assert "waiting for a worker" in page
    Export.objects.filter(pk=export.pk).update(status="running", phase="writing ratings.csv")
    page = client_for(study_setup.admin).get(
        reverse("evaluation:study-exports", args=[study_setup.study.pk]), **HX
    ).content.decode()
    assert "Writing ratings.csv…" in page
    exports.export_execute(Export.objects.create(study=study_setup.study, format="jsonl").pk)
    assert Export.objects.filter(status="succeeded").get().phase == ""


def test_misalignment_judging_writes_an_eta_and_the_page_counts_it_down(
    django_capture_on_commit_callbacks, monkeypatch, admin_client_, no_training_queue
):
    monkeypatch.setenv("JUDGE_API_KEY", "sk-secret-judge")
    monkeypatch.setattr(tasks.advance_misalignment_eval, "delay", lambda pk: None)
    monkeypatch.setattr(tasks.measure_misalignment_persona, "apply_async", lambda *a, **k: None)
    versions, judge_key = make_versions(), "JUDGE_API_KEY"
    monkeypatch.setattr(misalignment, "PROGRESS_WRITE_SECONDS", -1)  # write every answer
    writes = []
    original = misalignment._judging_update

    def watch(eval_id, token, **fields):
        writes.append(fields)
        return original(eval_id, token, **fields)

    monkeypatch.setattr(misalignment, "_judging_update", watch)
    evaluation = create(versions, judge_key, django_capture_on_commit_callbacks)
    misalignment.misalignment_advance(evaluation.pk)
    fake_answers(MisalignmentEval.objects.get(pk=evaluation.pk).sampling_job, vt_text)
    with respx.mock(base_url=JUDGE_URL, assert_all_called=False) as router:
        fake_judge_endpoint(router, [])
        misalignment.misalignment_advance(evaluation.pk)
    etas = [w["eta_seconds"] for w in writes if "eta_seconds" in w and "status" not in w]
    assert len(etas) == 12 and etas[-1] == 0 and all(e is not None for e in etas)
    evaluation.refresh_from_db()
    assert evaluation.status == "succeeded" and evaluation.phase == ""

    MisalignmentEval.objects.filter(pk=evaluation.pk).update(
        status="judging", finished_at=None, phase="asking the judge about each answer",
        eta_seconds=90, progress_at=timezone.now() - timedelta(seconds=30),
    )  # fmt: skip
    page = admin_client_.get(evaluation.get_absolute_url(), **HX).content.decode()
    assert "Asking the judge about each answer…" in page
    assert 58 <= int(re.search(r'data-eta-seconds="(\d+)"', page).group(1)) <= 60
