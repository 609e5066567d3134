"""Sample screening (issue 21, item 1): robust outliers, the engine's projection difference,
the background run on a tiny model, its page and API, and who may see and launch it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from django.urls import reverse

from palmsweb.lib.outliers import robust_summary
from palmsweb.models import Membership, Profile
from palmsweb.roles import Role
from tests.conftest import client_for, make_user
from training import services as training
from training.models import BaseModel, JobStatus, ScreeningRun
from training.services.screening import screening_execute, screening_launch

# --- robust outliers --------------------------------------------------------------------------


def test_a_planted_risky_sample_is_flagged_and_nothing_else():
    rng = np.random.default_rng(7)
    values = list(rng.normal(0.0, 1.0, 79)) + [9.0]
    summary = robust_summary(values)
    assert summary.high == [79]
    assert summary.z[79] > 3.5 and summary.n == 80


def test_no_scale_flags_nothing():
    assert robust_summary([1.0] * 50 + [5.0]).high == []


def test_the_flag_rate_on_clean_data_is_small_by_simulation():
    """The flag is a test of "this sample is unlike the rest". On 2,000 simulated clean
    datasets of 80 normal scores (the demo's size), it flags under 0.1% of samples and at
    most 5% of datasets contain any flag at all."""
    rng = np.random.default_rng(2026)
    flags = datasets_with_flags = 0
    for _ in range(2000):
        high = robust_summary(rng.normal(0.0, 1.0, 80)).high
        flags += len(high)
        datasets_with_flags += bool(high)
    assert flags / (2000 * 80) < 0.001
    assert datasets_with_flags / 2000 <= 0.05


# --- the engine ------------------------------------------------------------------------------


def test_the_shift_is_the_samples_projection_minus_the_models_own(tiny_llama_dir):
    from training.engine.persona import persona_direction
    from training.engine.screening import persona_shifts

    direction = persona_direction(
        tiny_llama_dir, [("Q?", "Kind and careful.")], [("Q?", "Cruel and reckless.")]
    )
    pairs = [("How do I water a cactus?", "Once a month."), ("Say hi.", "Hi there!")]
    shifts = persona_shifts(tiny_llama_dir, pairs, direction, max_new_tokens=4)
    assert len(shifts) == 2
    for shift in shifts:
        assert math.isfinite(shift.training) and math.isfinite(shift.own)
        assert shift.shift == pytest.approx(shift.training - shift.own)
    again = persona_shifts(tiny_llama_dir, pairs, direction, max_new_tokens=4)
    assert [s.shift for s in again] == pytest.approx([s.shift for s in shifts])  # greedy


# --- the run, its page and API ---------------------------------------------------------------


@pytest.fixture
def screened(artifacts, benign_snapshot, tiny_base, no_training_queue, monkeypatch):
    from training import tasks

    monkeypatch.setattr(tasks.run_screening, "delay_on_commit", lambda *a, **k: None)
    run = screening_launch(snapshot=benign_snapshot, base_model=tiny_base, max_new_tokens=8)
    screening_execute(run.pk)
    run.refresh_from_db()
    return run


def test_a_screening_scores_every_sample_and_records_its_direction(screened):
    assert screened.status == JobStatus.SUCCEEDED, screened.error
    assert len(screened.scores) == screened.snapshot.sample_count == 4
    assert screened.summary["n"] == 4 and "n_flagged" in screened.summary
    assert screened.direction["layer"] >= 1 and screened.direction["contrast_sha256"]
    row = screened.scores[0]
    assert row["shift"] == pytest.approx(row["training"] - row["own"], abs=1e-5)


def test_the_page_and_the_api_show_the_scores_to_the_profiles_readers(screened, curator):
    client = client_for(curator)
    page = client.get(reverse("training:screening-detail", args=[screened.pk]))
    assert page.status_code == 200 and b"screening-table" in page.content
    assert client.get(reverse("training:screening-list")).status_code == 200
    body = client.get(f"/api/screenings/{screened.pk}/").json()
    assert len(body["scores"]) == 4 and body["summary"]["n"] == 4
    launch_form = client_for(make_user("root", Role.ADMIN, staff=True)).get(
        reverse("training:finetune-create")
    )
    assert b"screening-summaries" in launch_form.content
    assert screened.snapshot.choice_label.encode() in launch_form.content


def test_a_user_of_another_profile_sees_no_screening(screened):
    elsewhere = Profile.objects.create(name="Elsewhere", slug="elsewhere")
    stranger = make_user("stranger")
    Membership.objects.create(profile=elsewhere, user=stranger, role="curator")
    client = client_for(stranger)
    assert client.get(reverse("training:screening-detail", args=[screened.pk])).status_code == 404
    assert client.get(f"/api/screenings/{screened.pk}/").status_code == 404
    assert client.get("/api/screenings/").json()["count"] == 0
    body = {"snapshot": screened.snapshot_id, "base_model": screened.base_model_id}
    refused = client.post("/api/screenings/", body, content_type="application/json")
    assert refused.status_code == 400 and "snapshot" in refused.json()


def test_researchers_read_but_do_not_launch_and_hosted_models_are_refused(
    benign_snapshot, tiny_base, researcher, curator, no_training_queue, monkeypatch
):
    from training import tasks

    monkeypatch.setattr(tasks.run_screening, "delay_on_commit", lambda *a, **k: None)
    body = {"snapshot": benign_snapshot.pk, "base_model": tiny_base.pk}
    reader = client_for(researcher)
    assert reader.post("/api/screenings/", body, content_type="application/json").status_code == 403
    hosted = training.base_model_create(
        name="hosted", kind=BaseModel.Kind.OPENAI, model_id="gpt-4o-mini-2024-07-18"
    )
    writer = client_for(curator)
    refused = writer.post(
        "/api/screenings/", {**body, "base_model": hosted.pk}, content_type="application/json"
    )
    assert refused.status_code == 400 and "local base model" in refused.json()["detail"]
    assert not ScreeningRun.objects.exists()
    queued = writer.post("/api/screenings/", body, content_type="application/json")
    assert queued.status_code == 201 and queued.json()["status"] == "queued"
    page = writer.post(
        reverse("training:screening-list"),
        {"snapshot": benign_snapshot.pk, "base_model": tiny_base.pk, "max_new_tokens": 16},
    )
    assert page.status_code == 302 and ScreeningRun.objects.count() == 2
