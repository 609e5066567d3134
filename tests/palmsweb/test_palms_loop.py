"""The scripted PALMS loop end to end, on a tiny model so it runs in seconds."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from curation.demo import demo_profile
from evaluation.models import ScoringRun, Study
from palmsweb.management.commands.palms_loop import adherence_cell
from palmsweb.roles import Role, grant_role
from tests.conftest import make_user
from training import services as training
from training.models import FineTuneJob, JobStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def tiny_base(tmp_path, settings):
    from training.engine.loading import build_tiny_llama

    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    path = build_tiny_llama(tmp_path / "tiny")
    return training.base_model_create(name="tiny", kind="local_dir", path=str(path),
                                      parameter_count=100_000)


def test_the_loop_trains_samples_scores_and_reports(
    tiny_base, tmp_path, monkeypatch, capsys, no_training_queue
):
    # No broker in this test: the command runs every job itself.
    monkeypatch.setattr("django.db.transaction.on_commit", lambda func, *a, **k: None)
    make_user("loop-admin", Role.ADMIN, staff=True).__class__.objects.filter(
        username="loop-admin").update(is_superuser=True)
    for n in range(3):  # raters of the demo profile, where the loop's study is
        grant_role(make_user(f"loop-rater{n}"), Role.RATER, demo_profile())
    report = tmp_path / "report.html"
    call_command(
        "palms_loop", "--base-model", "tiny", "--epochs", "1", "--samples-per-prompt", "1",
        "--max-new-tokens", "6", "--cooccurrence-n", "1", "--report", str(report),
    )
    out = capsys.readouterr().out
    assert "PALMS loop finished" in out and "total" in out
    assert FineTuneJob.objects.filter(status=JobStatus.SUCCEEDED).count() == 2
    study = Study.objects.get()
    assert study.status == Study.Status.RATING
    assert study.outputs.count() == 40 * 3
    assert set(ScoringRun.objects.values_list("kind", "status")) == {
        ("toxicity", "succeeded"), ("capability", "succeeded"), ("cooccurrence", "succeeded"),
        ("adherence", "succeeded"),
    }
    # The held-out adherence of both fine-tunes, per category, as the run computed it.
    result = ScoringRun.objects.get(kind="adherence").result
    assert "held-out answer perplexity vs base (16 samples" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("category"))
    assert "Values-targeted" in header and "Control" in header
    for arm in study.arms.exclude(arm="base"):
        cells = result["arms"][str(arm.pk)]["categories"]
        assert len(cells) == 9  # 8 categories and all of them
        for name, cell in cells.items():
            line = next(line for line in out.splitlines() if line.strip().startswith(name[:44]))
            assert adherence_cell(cell) in line
    html = report.read_text()
    assert "<svg" in html and study.name in html
