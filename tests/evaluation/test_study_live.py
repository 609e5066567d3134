"""Issue 12, item 3 on the study page: the estimate before *Open* (outputs, ratings, time),
the sampling phase and ETA while it runs, and polling that follows the study and stops
when it is done."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from evaluation.models import Study
from evaluation.studies import lifecycle
from palmsweb.roles import Role
from tests.conftest import client_for, make_user
from tests.evaluation.conftest import build_study
from training.models import JobStatus, SamplingJob

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


def test_a_draft_study_estimates_outputs_ratings_and_time_before_open(no_queue):
    setup = build_study(open_rating=False, samples=2)  # 4 prompts × 3 arms × 2 = 24 outputs
    page = client_for(setup.admin).get(setup.study.get_absolute_url()).content.decode()
    assert "<strong>24 outputs</strong> (4 prompts × 3 arms × 2 samples)" in page
    assert "<strong>72 ratings</strong> (3 per output), about 24 per rater with 3 raters" in page
    # No sampling job has finished here: the speed is an assumption, and says so.
    assert "at 100 tokens/s, an assumed speed" in page
    # 24 outputs × 200 tokens at 100 tokens/s: 48 s.
    assert "at most about <strong>48 s</strong>" in page
    assert "hx-trigger" not in page.split('id="study-status"')[1].split(">")[0]  # no polling


def test_the_estimate_uses_the_speed_of_the_last_local_sampling_job(no_queue):
    first = build_study(samples=1)  # its fake job: 12 outputs of 50 tokens each
    SamplingJob.objects.filter(pk=first.study.sampling_job_id).update(
        started_at=timezone.now() - timedelta(seconds=3), finished_at=timezone.now()
    )
    first.study.sampling_job.generations.update(tokens_generated=50)
    second = build_study(open_rating=False, rater_prefix="other")
    page = client_for(second.admin).get(second.study.get_absolute_url()).content.decode()
    assert "at 200 tokens/s, the speed of the last sampling job here" in page  # 600 / 3 s


def test_the_study_form_estimate_follows_the_form(no_queue):
    setup = build_study(open_rating=False)
    client = client_for(setup.admin)
    versions = setup.versions
    query = {
        "prompt_set": setup.study.prompt_set_id,
        "samples_per_prompt": 3,
        "raters_per_output": 5,
        "max_new_tokens": 100,
        "arms-0-model_version": versions["base"].pk,
        "arms-1-model_version": versions["values_targeted"].pk,
        "arms-2-model_version": "",
        "raters": [r.pk for r in setup.raters],
    }
    response = client.get(reverse("evaluation:study-estimate"), query, **HX)
    body = response.content.decode()
    assert response.status_code == 200
    assert "<strong>24 outputs</strong> (4 prompts × 2 arms × 3 samples)" in body
    assert "<strong>120 ratings</strong> (5 per output)" in body
    assert "Each output needs 5 different raters, and the pool has 3" in body
    assert 'hx-trigger="change from:closest form"' in body
    bad = client.get(reverse("evaluation:study-estimate"), {"prompt_set": "x"}, **HX)
    assert bad.status_code == 200 and "Choose a prompt set and the arms" in bad.content.decode()
    form = client.get(reverse("evaluation:study-create")).content.decode()
    assert 'id="study-estimate"' in form
    rater = client_for(setup.raters[0])
    assert rater.get(reverse("evaluation:study-estimate"), query).status_code == 403


def test_a_sampling_study_shows_the_phase_outputs_and_a_counting_eta(no_queue):
    setup = build_study(open_rating=False)
    study = lifecycle.study_open(study=setup.study, user=setup.admin)
    SamplingJob.objects.filter(pk=study.sampling_job_id).update(
        status=JobStatus.RUNNING, progress_done=4, phase="sampling model 1 of 3: batch 2 of 2",
        eta_seconds=40, progress_at=timezone.now() - timedelta(seconds=10),
    )  # fmt: skip
    researcher = client_for(make_user("rhea", Role.RESEARCHER))
    body = researcher.get(reverse("evaluation:study-status", args=[study.pk]), **HX)
    body = body.content.decode()
    assert "Sampling model 1 of 3: batch 2 of 2…" in body
    assert "<strong>4</strong> of 12 outputs sampled" in body
    assert 28 <= int(re.search(r'data-eta-seconds="(\d+)"', body).group(1)) <= 30
    assert 'hx-trigger="every 2s"' in body and "Job page" not in body  # admins only


def test_polling_stops_once_the_study_is_closed(no_queue):
    setup = build_study()
    client = client_for(setup.admin)
    url = reverse("evaluation:study-status", args=[setup.study.pk])
    assert 'hx-trigger="every 10s"' in client.get(url, **HX).content.decode()
    lifecycle.study_close(study=setup.study, user=setup.admin)
    body = client.get(url, **HX).content.decode()
    assert "hx-trigger" not in body and 'id="study-badge">Closed<' in body
    assert Study.objects.get(pk=setup.study.pk).status == "closed"


def test_a_failed_sampling_run_comes_back_to_draft_live(no_queue):
    setup = build_study(open_rating=False)
    study = lifecycle.study_open(study=setup.study, user=setup.admin)
    SamplingJob.objects.filter(pk=study.sampling_job_id).update(
        status=JobStatus.FAILED, error="Out of memory."
    )
    body = client_for(setup.admin).get(
        reverse("evaluation:study-status", args=[study.pk]), **HX
    ).content.decode()
    assert "The last sampling run failed: Out of memory." in body
    assert 'id="study-badge">Draft<' in body and "Sampling failed" in body
