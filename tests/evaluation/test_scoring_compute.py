"""Every scoring run records what it spent: co-occurrence runs record the counting (their
completions' generation is their sampling job's record), on the run, its page and in the
study's cost."""

from __future__ import annotations

import pytest
from django.urls import reverse

from evaluation import scoring
from evaluation.models import ScoringRun
from evaluation.report.cost import study_cost
from evaluation.scoring.compute import COOCCURRENCE_NOTE
from tests.conftest import client_for
from training.models import SamplingJob

from .test_scoring import GENDER_ONLY, fake_completions, queued, start, study_setup  # noqa: F401

pytestmark = pytest.mark.django_db


def sampled_run(setup, django_capture_on_commit_callbacks) -> ScoringRun:
    """A co-occurrence run whose sampling job has finished (with made-up completions)."""
    options = {"sets": GENDER_ONLY, "n_per_template": 2, "tagger": "lexicon", "min_count": 1}
    run = start(setup, django_capture_on_commit_callbacks, kind="cooccurrence", options=options)
    assert scoring.cooccurrence_advance(run.pk) is True  # its sampling job launched
    run.refresh_from_db()
    job = SamplingJob.objects.get(pk=run.options["sampling_job_id"])
    fake_completions(job, lambda version, p, s: "strong and brave" if p == 0 else "kind")
    return run


def test_a_cooccurrence_run_records_its_counting_on_the_run_its_page_and_the_cost(
    study_setup, queued, django_capture_on_commit_callbacks  # noqa: F811
):
    run = sampled_run(study_setup, django_capture_on_commit_callbacks)
    assert scoring.cooccurrence_advance(run.pk) is False
    run.refresh_from_db()
    assert run.status == ScoringRun.Status.SUCCEEDED, run.error
    compute = run.compute
    assert compute["kind"] == "scoring" and compute["device_type"] == "cpu"
    assert compute["wall_seconds"] >= 0 and compute["energy_kwh"] >= 0
    assert compute["tokens"] is None and compute["flops"] is None
    assert compute["flops_note"] == COOCCURRENCE_NOTE
    page = client_for(study_setup.admin).get(
        reverse("evaluation:study-scoring", args=[study_setup.study.pk])
    )
    assert "not a transformer; the completions&#x27; generation" in page.content.decode()
    assert study_cost(study_setup.study)["jobs_by_kind"]["scoring"] == 1


def test_a_cooccurrence_run_that_fails_counting_records_its_time(
    study_setup, queued, django_capture_on_commit_callbacks, monkeypatch  # noqa: F811
):
    run = sampled_run(study_setup, django_capture_on_commit_callbacks)

    def tagger_breaks(*args):
        raise RuntimeError("the tagger's model is missing")

    monkeypatch.setattr("evaluation.scoring.cooccurrence._count_cooccurrence", tagger_breaks)
    assert scoring.cooccurrence_advance(run.pk) is False
    run.refresh_from_db()
    assert run.status == ScoringRun.Status.FAILED and "tagger" in run.error
    assert run.compute["kind"] == "scoring" and run.compute["flops_note"] == COOCCURRENCE_NOTE
