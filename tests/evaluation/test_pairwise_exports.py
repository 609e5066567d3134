"""A pairwise study's judgments leave the app like ratings do: CSV, JSON Lines, Parquet and
the study bundle (judgments, the pairwise HTML report, a manifest with every number), and
the report replays from the bundle's judgments.csv alone."""

from __future__ import annotations

import csv
import io
import json
import random
import zipfile

import pyarrow.parquet as pq
import pytest
from django.urls import reverse

from evaluation.models import PairJudgment, StudyArm, StudyPair
from evaluation.report import exports
from evaluation.report.replay import replay_bundle
from evaluation.studies import lifecycle, pairwise_queue
from tests.conftest import client_for
from tests.evaluation.conftest import build_study
from tests.evaluation.test_report_replay import replay

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def artifacts(tmp_path, settings):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"


def judge_noisily(study, raters, seed: int = 7) -> None:
    """Raters prefer the values-targeted arm most of the time, with ties and both-bad, so
    every number of the report (strengths included) is defined."""
    rng = random.Random(seed)
    arm_of = dict(StudyArm.objects.filter(study=study).values_list("pk", "arm"))
    for rater in raters:
        while (claim := pairwise_queue.pair_claim_next(study=study, rater=rater)) is not None:
            pair = StudyPair.objects.select_related("left", "right").get(pk=claim.pair_id)
            favoured = "a" if arm_of[pair.left.arm_id] == "values_targeted" else "b"
            other = "b" if favoured == "a" else "a"
            verdict = rng.choices([favoured, other, "tie", "both_bad"], [6, 3, 1, 1])[0]
            pairwise_queue.pair_judge(public_id=pair.public_id, rater=rater, verdict=verdict)


@pytest.fixture
def closed_pairwise(no_queue):
    setup = build_study(n_categories=2, per_category=4, mode="pairwise")
    judge_noisily(setup.study, setup.raters)
    setup.study = lifecycle.study_close(study=setup.study, user=setup.admin)
    return setup


def unblind(setup):
    setup.study = lifecycle.study_unblind(study=setup.study, user=setup.admin)


def entries(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name.rsplit("/", 1)[-1]: zf.read(name) for name in zf.namelist()}


def test_the_judgments_export_as_csv_jsonl_and_parquet(closed_pairwise, tmp_path):
    unblind(closed_pairwise)
    study = closed_pairwise.study
    completed = PairJudgment.objects.filter(study=study, status="completed").count()
    written = exports.write_export(study, "csv", tmp_path / "j.csv", includes_arms=True)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "j.csv").read_text())))
    assert written.rows == len(rows) == completed
    assert {"pair_id", "a_text", "b_text", "verdict", "a_arm", "b_model_version"} <= set(rows[0])
    assert all(r["rater"].startswith("R") and r["verdict"] for r in rows)
    exports.write_export(study, "jsonl", tmp_path / "j.jsonl", includes_arms=True)
    first = json.loads((tmp_path / "j.jsonl").read_text().splitlines()[0])
    assert isinstance(first["prompt_id"], int) and first["a_output_id"]
    exports.write_export(study, "parquet", tmp_path / "j.parquet", includes_arms=True)
    assert pq.read_table(tmp_path / "j.parquet").num_rows == completed


def test_a_blinded_export_names_no_arm(closed_pairwise, tmp_path):
    study = closed_pairwise.study
    exports.write_export(study, "csv", tmp_path / "j.csv", includes_arms=False)
    text = (tmp_path / "j.csv").read_text()
    header = text.splitlines()[0]
    assert "arm" not in header and "model_version" not in header
    for arm in study.arms.select_related("model_version"):
        assert arm.model_version.name not in text


def test_the_bundle_holds_judgments_and_the_pairwise_report_and_replays(closed_pairwise, tmp_path):
    unblind(closed_pairwise)
    path = tmp_path / "bundle.zip"
    exports.write_export(closed_pairwise.study, "bundle", path, includes_arms=True)
    files = entries(path)
    assert {"judgments.csv", "judgments.jsonl", "judgments.parquet", "report.html",
            "manifest.json", "SHA256SUMS"} <= set(files)  # fmt: skip
    assert "ratings.csv" not in files
    report = files["report.html"].decode()
    assert "PALMS pairwise report" in report and "Bradley–Terry" in report
    assert "Win / tie / loss" in report and "Values-targeted" in report
    manifest = json.loads(files["manifest.json"])
    assert manifest["study"]["mode"] == "pairwise"
    numbers = manifest["analysis"]["numbers"]
    strengths = [k for k in numbers if k.startswith("bradley_terry.strengths[")]
    assert strengths and any(numbers[k] not in (None, 0.0) for k in strengths)
    assert any(k.startswith("outcomes[") for k in numbers)
    recorded, replayed, differing = replay_bundle(path)
    assert differing == [] and recorded == replayed and len(recorded) > 50
    out, ok = replay(path)
    assert ok and "none differ" in out


def test_a_changed_judgment_shows_in_the_replay(closed_pairwise, tmp_path):
    unblind(closed_pairwise)
    path = tmp_path / "bundle.zip"
    exports.write_export(closed_pairwise.study, "bundle", path, includes_arms=True)
    with zipfile.ZipFile(path) as zf:
        content = {name: zf.read(name) for name in zf.namelist()}
    name = next(n for n in content if n.endswith("/judgments.csv"))
    reader = csv.DictReader(io.StringIO(content[name].decode()))
    rows = list(reader)
    for row in rows[:6]:
        row["verdict"] = "b" if row["verdict"] == "a" else "a"
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=reader.fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    content[name] = out.getvalue().encode()
    with zipfile.ZipFile(path, "w") as zf:
        for entry, data in content.items():
            zf.writestr(entry, data)
    _, _, differing = replay_bundle(path)
    assert differing
    text, ok = replay(path)
    assert not ok and "numbers differ" in text


def test_a_blinded_bundle_replays_agreement_only(closed_pairwise, tmp_path):
    path = tmp_path / "bundle.zip"
    exports.write_export(closed_pairwise.study, "bundle", path, includes_arms=False)
    files = entries(path)
    numbers = json.loads(files["manifest.json"])["analysis"]["numbers"]
    assert "agreement.alpha" in numbers and not any(k.startswith("outcomes[") for k in numbers)
    assert "Values-targeted" not in files["report.html"].decode()
    assert replay_bundle(path)[2] == []


def test_the_report_download_of_a_pairwise_study_is_the_pairwise_report(closed_pairwise):
    unblind(closed_pairwise)
    study = closed_pairwise.study
    response = client_for(closed_pairwise.admin).get(
        reverse("evaluation:study-report-download", args=[study.pk])
    )
    body = response.content.decode()
    assert response.status_code == 200 and "PALMS pairwise report" in body
    assert 'id="bradley-terry"' in body and 'id="positions"' in body
    page = client_for(closed_pairwise.admin).get(
        reverse("evaluation:study-pairwise-results", args=[study.pk])
    ).content.decode()
    assert reverse("evaluation:study-report-download", args=[study.pk]) in page
    assert reverse("evaluation:study-exports", args=[study.pk]) in page
