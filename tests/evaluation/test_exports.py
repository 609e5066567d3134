"""Exports: round-trips of CSV/JSONL/Parquet against the database, the bundle's checksums,
blinding, the task, the download view and the management command."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse

from evaluation.models import AutomaticScore, Export, Rating
from evaluation.report import exports
from evaluation.studies import blinding
from palmsweb.lib import csvsafe
from tests.conftest import client_for, make_user
from tests.evaluation.conftest import SIZE_TAG, VERSION_NAMES
from tests.evaluation.test_report import closed_study
from training.models import Generation

pytestmark = pytest.mark.django_db

ARM_TEXT = [*VERSION_NAMES.values(), "values_targeted", "control", SIZE_TAG, "snapshot"]


@pytest.fixture(autouse=True)
def artifacts(tmp_path, settings):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    return settings.ARTIFACTS_DIR


@pytest.fixture
def study_with_scores(no_queue):
    setup = closed_study(samples=2)
    for i, output in enumerate(setup.study.outputs.order_by("pk")):
        AutomaticScore.objects.create(
            output=output, metric="toxicity", scorer="fake", scorer_version="1", value=i / 100
        )
        if i % 2:  # a missing score stays missing
            AutomaticScore.objects.create(
                output=output, metric="toxicity", scorer="other", scorer_version="2", value=None
            )
    tricky = 'Fine, but "careful":\nline two · naïve'
    first = Rating.objects.filter(study=setup.study, status="completed").order_by("pk")[:3]
    Rating.objects.filter(pk__in=[r.pk for r in first]).update(comment=tricky)
    vt = setup.versions["values_targeted"]
    vt.metadata = {"snapshot_hash": "a" * 64}
    vt.save(update_fields=["metadata"])
    Generation.objects.filter(model_version=vt).update(
        sampler_backend="vllm", sampler_version="0.11.0"
    )
    return setup


def expected_rows(study, *, includes_arms: bool) -> dict[tuple[str, str], dict]:
    """(rater pseudonym, output public id) -> the DB's values, for comparing."""
    out = {}
    for r in Rating.objects.filter(study=study, status="completed").select_related(
        "output__prompt__category", "output__arm__model_version", "output__generation"
    ):
        row = {
            "score": r.score,
            "comment": r.comment,
            "output_text": r.output.text,
            "prompt": r.output.prompt.text,
            "category": r.output.prompt.category.name,
            "completed_at": r.completed_at.isoformat(),
            "temperature": r.output.generation.temperature,
        }
        if includes_arms:
            row["arm"] = r.output.arm.arm
            row["model_version"] = r.output.arm.model_version.name
        out[(blinding.rater_pseudonym(study, r.rater_id), r.output.public_id)] = row
    return out


def check_rows(rows: list[dict], study, *, includes_arms: bool) -> None:
    expected = expected_rows(study, includes_arms=includes_arms)
    assert len(rows) == len(expected)
    for row in rows:
        want = expected[(row["rater"], row["output_id"])]
        assert int(row["score"]) == want["score"]
        assert (row["comment"] or "") == want["comment"]
        assert row["output_text"] == want["output_text"]
        assert row["prompt"] == want["prompt"]
        assert row["category"] == want["category"]
        assert row["completed_at"] == want["completed_at"]
        assert float(row["temperature"]) == want["temperature"]
        assert int(row["display_position"]) >= 1
        if includes_arms:
            assert row["arm"] == want["arm"] and row["model_version"] == want["model_version"]
        else:
            assert "arm" not in row and "model_version" not in row and "snapshot_hash" not in row
            assert "sampler" not in row  # per model: it would tell the arms apart
    usernames = set(study.raters.values_list("username", flat=True))
    assert not usernames & {row["rater"] for row in rows}
    # Pseudonyms are stable: one per rater.
    assert len({row["rater"] for row in rows}) == study.raters.count()


def read_back(path: Path, fmt: str) -> list[dict]:
    if fmt == "csv":  # as a spreadsheet shows it: formula cells come escaped (csvsafe)
        with path.open(newline="", encoding="utf-8") as f:
            return [
                {k: csvsafe.unescape_cell(v) for k, v in row.items()} for row in csv.DictReader(f)
            ]
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_blinded_exports_round_trip_without_arms(study_with_scores, tmp_path, fmt):
    study = study_with_scores.study
    path = tmp_path / f"ratings.{fmt}"
    written = exports.write_ratings(study, fmt, path, includes_arms=False, chunk_size=7)
    assert written.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert written.size == path.stat().st_size
    rows = read_back(path, fmt)
    assert written.rows == len(rows) == 72
    check_rows(rows, study, includes_arms=False)
    raw = path.read_bytes()
    for text in ARM_TEXT:
        assert text.encode() not in raw, text
    # automatic scores: one column per metric and scorer; missing stays missing
    tox = [row["auto_toxicity__fake"] for row in rows]
    assert all(v not in (None, "") for v in tox)
    other = [row["auto_toxicity__other"] for row in rows]
    assert all(v in (None, "") for v in other)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert pq.ParquetFile(path).num_row_groups == 11  # 72 rows in chunks of 7


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_unblinded_exports_carry_arms_and_snapshot_hashes(study_with_scores, tmp_path, fmt):
    from evaluation.studies import lifecycle

    study = lifecycle.study_unblind(study=study_with_scores.study, user=study_with_scores.admin)
    path = tmp_path / f"ratings.{fmt}"
    exports.write_ratings(study, fmt, path, includes_arms=True)
    rows = read_back(path, fmt)
    check_rows(rows, study, includes_arms=True)
    hashes = {row["arm"]: row["snapshot_hash"] for row in rows}
    assert hashes["values_targeted"] == "a" * 64
    assert hashes["base"] in (None, "")
    samplers = {row["arm"]: row["sampler"] for row in rows}
    assert samplers["values_targeted"] == "vllm 0.11.0"
    assert samplers["base"] in (None, "")  # sampled before the backend was recorded


def test_the_bundle_has_a_manifest_whose_checksums_verify(study_with_scores, tmp_path):
    study = study_with_scores.study
    path = tmp_path / "bundle.zip"
    written = exports.write_export(study, "bundle", path, includes_arms=False)
    assert written.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with zipfile.ZipFile(path) as zf:
        names = {n.split("/", 1)[1]: n for n in zf.namelist()}
        assert set(names) == {
            "ratings.csv",
            "ratings.jsonl",
            "ratings.parquet",
            "report.html",
            "positions.json",  # issue 14: the position versions raters judged against
            "manifest.json",
            "SHA256SUMS",
        }
        manifest = json.loads(zf.read(names["manifest.json"]))
        for entry in manifest["files"]:
            data = zf.read(names[entry["name"]])
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert len(data) == entry["size"]
        assert {f["rows"] for f in manifest["files"] if f["rows"] is not None} == {72}
        for line in zf.read(names["SHA256SUMS"]).decode().splitlines():
            digest, name = line.split("  ")
            assert hashlib.sha256(zf.read(names[name])).hexdigest() == digest
        assert manifest["includes_arms"] is False and "arms" not in manifest["study"]
        assert manifest["study"]["raters_per_output"] == 3
        for name in names.values():
            data = zf.read(name)
            for text in VERSION_NAMES.values():
                assert text.encode() not in data, (name, text)
        report = zf.read(names["report.html"]).decode()
        assert "Provenance" in report and "Krippendorff" in report


FORMULA = "=HYPERLINK(\"http://evil.example\",\"click\")"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_formula_comments_are_escaped_in_csv_only(study_with_scores, tmp_path, fmt):
    study = study_with_scores.study
    rating = Rating.objects.filter(study=study, status="completed").order_by("pk").first()
    Rating.objects.filter(pk=rating.pk).update(comment=FORMULA)
    path = tmp_path / f"ratings.{fmt}"
    exports.write_ratings(study, fmt, path, includes_arms=False)
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as f:
            comments = {row["comment"] for row in csv.DictReader(f)}
    else:
        comments = {row["comment"] for row in read_back(path, fmt)}
    expected = "'" + FORMULA if fmt == "csv" else FORMULA
    assert expected in comments and (fmt != "csv" or FORMULA not in comments)


def test_the_bundles_csv_escapes_formulas_too(study_with_scores, tmp_path):
    study = study_with_scores.study
    Rating.objects.filter(study=study, status="completed").update(comment="@SUM(A1:A9)")
    path = tmp_path / "bundle.zip"
    exports.write_export(study, "bundle", path, includes_arms=False)
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith("ratings.csv"))
        rows = list(csv.DictReader(io.StringIO(zf.read(name).decode())))
    assert {row["comment"] for row in rows} == {"'@SUM(A1:A9)"}


def test_export_task_writes_the_file_and_the_download_streams_it(
    study_with_scores, django_capture_on_commit_callbacks, researcher, monkeypatch
):
    from evaluation import tasks

    monkeypatch.setattr(tasks.run_export, "delay", lambda pk: tasks.run_export.apply(args=(pk,)))
    client = client_for(researcher)
    study = study_with_scores.study
    url = reverse("evaluation:study-exports", args=[study.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"format": "csv"})
    assert response.status_code == 302
    export = Export.objects.get(study=study)
    assert export.status == "succeeded" and export.includes_arms is False
    assert export.row_count == 72
    path = Path(export.path)
    assert path.is_relative_to(Path(exports.export_dir()))
    # a task delivered twice does nothing the second time
    tasks.run_export.apply(args=(export.pk,))
    assert Export.objects.get(pk=export.pk).sha256 == export.sha256
    page = client.get(url, HTTP_HX_REQUEST="true")
    assert page.status_code == 200 and b'id="exports"' in page.content
    assert b"<html" not in page.content
    download = client.get(reverse("evaluation:export-download", args=[export.pk]))
    assert download.status_code == 200
    body = b"".join(download.streaming_content)
    assert hashlib.sha256(body).hexdigest() == export.sha256 == download["X-Checksum-SHA256"]
    assert body.startswith(b"rater,output_id")


def test_exports_are_for_researchers_and_admins_only(study_with_scores, tmp_path):
    study = study_with_scores.study
    export = Export.objects.create(study=study, format="csv")
    exports.export_execute(export.pk)
    download = reverse("evaluation:export-download", args=[export.pk])
    page = reverse("evaluation:study-exports", args=[study.pk])
    rater = client_for(study_with_scores.raters[0])
    from palmsweb.roles import Role

    curator = client_for(make_user("cora", Role.CURATOR))
    for client in (rater, curator, client_for(make_user("nobody"))):
        assert client.get(download).status_code == 403
        assert client.get(page).status_code == 403
        assert client.post(page, {"format": "csv"}).status_code == 403
    assert Export.objects.count() == 1
    assert client_for(study_with_scores.admin).get(download).status_code == 200


def test_a_failed_export_says_why(study_with_scores, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(exports, "write_export", boom)
    export = Export.objects.create(study=study_with_scores.study, format="jsonl")
    exports.export_execute(export.pk)
    export.refresh_from_db()
    assert export.status == "failed" and "disk full" in export.error


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "bundle"])
def test_the_management_command_writes_the_same_export(study_with_scores, tmp_path, fmt):
    out = tmp_path / f"cmd.{fmt}"
    stdout = io.StringIO()
    call_command(
        "export_study",
        str(study_with_scores.study.pk),
        "--format",
        fmt,
        "--out",
        str(out),
        stdout=stdout,
    )
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest in stdout.getvalue() and "blinded" in stdout.getvalue()
    if fmt != "bundle":
        check_rows(read_back(out, fmt), study_with_scores.study, includes_arms=False)


def test_an_export_left_running_by_a_dead_worker_is_taken_over_or_swept(study_with_scores):
    from datetime import timedelta

    from django.utils import timezone

    study = study_with_scores.study
    long_ago = timezone.now() - timedelta(seconds=exports.STALE_SECONDS + 60)
    orphan = Export.objects.create(study=study, format="csv", status="running")
    Export.objects.filter(pk=orphan.pk).update(created_at=long_ago)
    fresh = Export.objects.create(study=study, format="csv", status="running")
    # redelivered task: takes over the stale one, leaves a live one alone
    assert exports.export_execute(orphan.pk).status == "succeeded"
    assert exports.export_execute(fresh.pk).status == "running"
    Export.objects.filter(pk=fresh.pk).update(created_at=long_ago)
    assert exports.exports_sweep_stale() == 1
    fresh.refresh_from_db()
    assert fresh.status == "failed" and "worker stopped" in fresh.error
