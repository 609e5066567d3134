"""A study arm's free label ("values-targeted + DPO", issue 18 §3): an SFT model and its
DPO'd successor, both values-targeted at one size, are two arms of one study; the report
compares each with base and SFT + DPO with SFT; exports carry the label and replay."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile

import pytest
from django.urls import reverse

from evaluation.errors import EvaluationError
from evaluation.models import Study, StudyArm
from evaluation.report.build import build_report
from evaluation.report.replay import replay_bundle
from evaluation.report.table import bundle_rows
from evaluation.studies import lifecycle
from evaluation.studies.lifecycle import ArmSpec
from tests.conftest import client_for
from tests.evaluation.conftest import build_study, make_prompt_set, make_versions
from tests.evaluation.test_api import api_for
from tests.evaluation.test_report import closed_study
from tests.evaluation.test_report_replay import bundle_of, rewrite_ratings
from tests.evaluation.test_views import study_form_data
from training.models import ModelVersion

pytestmark = pytest.mark.django_db
LABEL = "values-targeted + DPO"


@pytest.fixture(autouse=True)
def artifacts(tmp_path, settings):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"


def sft_and_dpo():
    versions = make_versions()
    sft = versions["values_targeted"]
    dpo = ModelVersion.objects.create(
        base_model=sft.base_model, name="VT + DPO", arm="values_targeted", parameter_count=77
    )
    return versions, sft, dpo


def create(arms):
    return lifecycle.study_create(name="Labels", prompt_set=make_prompt_set(), arms=arms)


def test_arms_are_told_apart_by_role_label_and_size():
    versions, sft, dpo = sft_and_dpo()
    same = [ArmSpec("values_targeted", sft, "135M"), ArmSpec("values_targeted", dpo, "135M")]
    suggestion = rf'ratings\. Give one a label .*"{re.escape(LABEL)}"'
    with pytest.raises(EvaluationError, match=suggestion):
        create(same)
    # a label that only differs in case, or is just the role's own name, is no label
    for first, second in (("DPO", " dpo "), ("", "Values-targeted")):
        with pytest.raises(EvaluationError, match="pool their ratings"):
            create([ArmSpec("values_targeted", sft, "135M", label=first),
                    ArmSpec("values_targeted", dpo, "135M", label=second)])  # fmt: skip
    for label, why in (("x" * 61, "at most 60"), ("base", "another role"), ("a\nb", "one line")):
        with pytest.raises(EvaluationError, match=why):
            create([ArmSpec("values_targeted", dpo, "135M", label=label)])
    assert not Study.objects.exists()
    study = create([ArmSpec("values_targeted", sft, "135M"),
                    ArmSpec("values_targeted", dpo, "135M", label=f"  {LABEL} ")])  # fmt: skip
    assert [(a.arm, a.label, a.size_tag) for a in study.arms.all()] == [
        ("values_targeted", "", "135M"),
        ("values_targeted", LABEL, "135M"),
    ]
    assert str(study.arms.last()) == f"{LABEL} · 135M"


def test_the_api_creates_and_reads_a_label_and_refuses_bad_ones(no_queue):
    setup = build_study(open_rating=False)
    dpo = ModelVersion.objects.create(
        base_model=setup.versions["base"].base_model, name="VT + DPO", arm="values_targeted"
    )
    api = api_for(setup.admin)
    body = {
        "name": "API labels",
        "prompt_set": setup.study.prompt_set_id,
        "arms": [{"model_version": setup.versions["values_targeted"].pk, "size_tag": "S"},
                 {"model_version": dpo.pk, "size_tag": "S", "label": "x" * 61}],
    }  # fmt: skip
    n_studies = Study.objects.count()
    too_long = api.post("/api/studies/", body, format="json")
    assert too_long.status_code == 400 and "label" in str(too_long.json())
    body["arms"][1]["label"] = ""
    twins = api.post("/api/studies/", body, format="json")
    assert twins.status_code == 400 and LABEL in str(twins.json())
    assert Study.objects.count() == n_studies
    body["arms"][1]["label"] = LABEL
    created = api.post("/api/studies/", body, format="json")
    assert created.status_code == 201, created.json()
    read = api.get(f"/api/studies/{created.json()['id']}/").json()
    assert [(a["arm"], a["label"], a["size_tag"]) for a in read["arms"]] == [
        ("values_targeted", "", "S"),
        ("values_targeted", LABEL, "S"),
    ]


def test_the_form_creates_and_edits_a_labelled_arm(no_queue):
    setup = build_study(open_rating=False)
    dpo = ModelVersion.objects.create(
        base_model=setup.versions["base"].base_model, name="VT + DPO", arm="values_targeted"
    )
    client = client_for(setup.admin)
    page = client.get(reverse("evaluation:study-create"))
    assert b'name="arms-0-label"' in page.content
    data = study_form_data(setup, setup.study.prompt_set)
    data |= {"arms-2-arm": "values_targeted", "arms-2-model_version": dpo.pk,
             "arms-2-size_tag": "S"}  # fmt: skip
    refused = client.post(reverse("evaluation:study-create"), data)
    assert refused.status_code == 400 and LABEL in refused.content.decode()
    assert not Study.objects.filter(name="Form study").exists()
    response = client.post(reverse("evaluation:study-create"), data | {"arms-2-label": LABEL})
    assert response.status_code == 302
    study = Study.objects.get(name="Form study")
    assert StudyArm.objects.get(study=study, model_version=dpo).label == LABEL
    detail = client.get(study.get_absolute_url()).content.decode()
    assert f"Values-targeted · {LABEL}" in detail
    # the edit form shows it again
    edit = client.get(reverse("evaluation:study-edit", args=[study.pk])).content.decode()
    assert f'value="{LABEL}"' in edit.replace("&#x27;", "'").replace("&quot;", '"')


@pytest.fixture
def labelled(no_queue):
    """base, values-targeted and values-targeted "values-targeted + DPO" at one size,
    closed, not yet unblinded."""
    return closed_study(arms=("base", "values_targeted"), labelled=LABEL, per_category=5)


def unblind(setup) -> Study:
    return lifecycle.study_unblind(study=setup.study, user=setup.admin)


def test_the_report_compares_dpo_with_base_and_with_sft(labelled):
    url = reverse("evaluation:study-results", args=[labelled.study.pk])
    letters = client_for(labelled.admin).get(url).content.decode()
    assert "Arm C" in letters and "DPO" not in letters  # before unblinding: letters only
    report = build_report(unblind(labelled), blinded=False)
    assert [a.label for a in report.arms] == ["Base", "Values-targeted", LABEL]
    assert [(f.key, f.title) for f in report.families] == [
        ("vt-base", "Values-targeted vs base"),
        ("label-base", f"{LABEL} vs base"),
        ("label-role", f"{LABEL} vs values-targeted"),
    ]
    own = report.families[2]
    assert (own.a.free_label, own.b.kind, own.b.free_label) == (LABEL, "values_targeted", "")
    assert report.family("vt-base").a.free_label == ""  # the plain arm, unambiguously
    assert any(line.startswith(f"{LABEL} vs Values-targeted:") for line in report.summary)
    admin = client_for(labelled.admin)
    download = reverse("evaluation:study-report-download", args=[labelled.study.pk])
    for page in (admin.get(url), admin.get(download)):
        html = page.content.decode().replace("&#x27;", "'")
        assert f"{LABEL} vs values-targeted" in html and f"{LABEL} vs base" in html


def test_a_bundle_carries_the_label_and_replays_the_same_families(labelled, tmp_path):
    path = bundle_of(unblind(labelled), tmp_path / "bundle.zip", includes_arms=True)
    with zipfile.ZipFile(path) as zf:
        names = {n.rsplit("/", 1)[-1]: n for n in zf.namelist()}
        manifest = json.loads(zf.read(names["manifest.json"]))
        rows = list(csv.DictReader(io.StringIO(zf.read(names["ratings.csv"]).decode())))
    assert {(r["arm"], r["arm_label"]) for r in rows} == {
        ("base", ""),
        ("values_targeted", ""),
        ("values_targeted", LABEL),
    }
    assert [a["label"] for a in manifest["study"]["arms"]] == ["", "", LABEL]
    numbers = manifest["analysis"]["numbers"]
    own = f"families[a=values_targeted:{LABEL}/Tiny-77M,b=values_targeted/Tiny-77M"
    assert any(k.startswith(own) for k in numbers)
    assert replay_bundle(path)[2] == []
    # a bundle from before labels (no arm_label column) still reads: its arms are roles
    rewrite_ratings(path, lambda rows: [{k: v for k, v in r.items() if k != "arm_label"}
                                        for r in rows])  # fmt: skip
    assert {r["arm"] for r in bundle_rows(_records(path), include_arms=True)} == {
        "base",
        "values_targeted",
    }
    assert any(k.startswith(own) for k, _old, _new in replay_bundle(path)[2])


def _records(path) -> list[dict]:
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith("ratings.csv"))
        return list(csv.DictReader(io.StringIO(zf.read(name).decode())))
