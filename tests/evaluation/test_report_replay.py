"""A report replays bit for bit from its export bundle (issue 15, item 6)."""

from __future__ import annotations

import csv
import io
import json
import random
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from evaluation.report import exports
from evaluation.report.build import build_report
from evaluation.report.replay import replay_bundle
from tests.evaluation.test_report import closed_study

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def artifacts(tmp_path, settings):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"


def bundle_of(study, path: Path, *, includes_arms: bool) -> Path:
    exports.write_export(study, "bundle", path, includes_arms=includes_arms)
    return path


def rewrite_ratings(path: Path, change) -> None:
    """Rewrite the bundle's ratings.csv in place with ``change(rows) -> rows``."""
    with zipfile.ZipFile(path) as zf:
        entries = {name: zf.read(name) for name in zf.namelist()}
    name = next(n for n in entries if n.endswith("/ratings.csv"))
    reader = csv.DictReader(io.StringIO(entries[name].decode()))
    rows = change(list(reader))
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=reader.fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    entries[name] = out.getvalue().encode()
    with zipfile.ZipFile(path, "w") as zf:
        for entry, data in entries.items():
            zf.writestr(entry, data)


def replay(path: Path) -> tuple[str, bool]:
    out = io.StringIO()
    try:
        call_command("replay_report", str(path), stdout=out)
    except CommandError as exc:
        return out.getvalue() + str(exc), False
    return out.getvalue(), True


@pytest.fixture
def unblinded(no_queue):
    return closed_study(unblind=True, per_category=5, n_categories=2)


def test_an_unchanged_bundle_replays_with_no_difference(unblinded, tmp_path):
    study = unblinded.study
    path = bundle_of(study, tmp_path / "bundle.zip", includes_arms=True)
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith("manifest.json"))
        manifest = json.loads(zf.read(name))
        ratings = next(n for n in zf.namelist() if n.endswith("ratings.csv"))
        header = zf.read(ratings).decode().splitlines()[0]
    settings = manifest["analysis"]["settings"]
    assert settings["seed"] == study.seed % 2**32
    assert settings["row_order"][:4] == ["category", "size_tag", "arm", "prompt_id"]
    assert "prompt_id" in header.split(",")
    numbers = manifest["analysis"]["numbers"]
    report = build_report(study, blinded=False)
    vt_base = report.family("vt-base")
    key = next(k for k in numbers if k.startswith("families[a=values_targeted") and "p_holm" in k)
    assert numbers[key] in [r.result.p_holm for r in vt_base.rows]
    recorded, replayed, differing = replay_bundle(path)
    assert differing == [] and recorded == replayed and len(recorded) > 200
    text, ok = replay(path)
    assert ok and "none differ" in text


def test_the_row_order_of_ratings_csv_does_not_matter(unblinded, tmp_path):
    path = bundle_of(unblinded.study, tmp_path / "bundle.zip", includes_arms=True)
    rewrite_ratings(path, lambda rows: random.Random(7).sample(rows, len(rows)))
    assert replay_bundle(path)[2] == []


def test_an_edited_score_is_reported_with_the_numbers_it_changes(unblinded, tmp_path):
    path = bundle_of(unblinded.study, tmp_path / "bundle.zip", includes_arms=True)

    def edit(rows):
        row = next(r for r in rows if r["arm"] == "values_targeted")
        row["score"] = "1" if row["score"] != "1" else "5"
        return rows

    rewrite_ratings(path, edit)
    _recorded, _replayed, differing = replay_bundle(path)
    keys = [key for key, _old, _new in differing]
    assert any(k.startswith("families[") and k.endswith(".mean_diff") for k in keys)
    assert "n_ratings" not in keys  # one score changed, not the number of ratings
    text, ok = replay(path)
    assert not ok
    assert f"{len(differing)} of " in text and " numbers differ." in text
    assert "→ replay" in text and keys[0] in text


def test_an_arm_free_bundle_replays_its_arm_free_numbers(no_queue, tmp_path):
    setup = closed_study(per_category=5, n_categories=2)
    path = bundle_of(setup.study, tmp_path / "bundle.zip", includes_arms=False)
    recorded, _replayed, differing = replay_bundle(path)
    assert differing == []
    assert "agreement.alpha" in recorded and "n_ratings" in recorded
    assert not any("values_targeted" in k or "base" in k for k in recorded)


def test_a_file_that_is_not_a_bundle_is_refused(tmp_path):
    path = tmp_path / "nothing.zip"
    path.write_bytes(b"not a zip")
    with pytest.raises(CommandError, match="not a zip"):
        call_command("replay_report", str(path))
