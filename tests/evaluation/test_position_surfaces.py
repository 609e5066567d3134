"""Issue 14 on every study surface: the study API (profile, frozen positions, newer
versions), the results APIs and pages (1–5 and pairwise), the rating exports' per-row
position version, and the value profile on the study page, the HTML documents and the
bundle manifest. Position text and the profile name no arm, so none of this unblinds."""

from __future__ import annotations

import json
import zipfile

import pytest
from django.urls import reverse

from curation.categories import current_position_version
from evaluation.report import exports
from evaluation.report.document import render_report_document
from evaluation.report.pairwise_exports import write_judgments
from evaluation.studies import lifecycle, positions
from palmsweb.models import Profile
from palmsweb.roles import Role
from tests.conftest import client_for, make_user
from tests.evaluation.conftest import VERSION_NAMES, build_study, fake_sampling_run
from tests.evaluation.test_api import api_for
from tests.evaluation.test_exports import read_back
from tests.evaluation.test_frozen_positions import NEW_TEXT, edit_position, study_categories
from tests.evaluation.test_pairwise_report import judge_favouring
from tests.evaluation.test_report import rate_everything

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def artifacts(tmp_path, settings):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"


@pytest.fixture
def tutor_profile(db):
    """The default profile, where build_study puts its prompt set, named and described."""
    profile = Profile.objects.default()
    profile.name, profile.audience = "Kids tutor", "children 8–12"
    profile.save(update_fields=["name", "audience"])
    return profile


def frozen_texts(study) -> dict[str, str]:
    return {v.category.name: v.position for v in positions.frozen_versions(study)}


# --- the study API -------------------------------------------------------------------------


def test_the_study_api_names_the_profile_and_the_frozen_positions(no_queue, tutor_profile):
    setup = build_study(n_categories=2, per_category=1, raters=1, raters_per_output=1)
    frozen = frozen_texts(setup.study)
    researcher = make_user("rhea", Role.RESEARCHER)
    body = api_for(researcher).get(f"/api/studies/{setup.study.pk}/").json()
    assert body["profile"] == {"id": tutor_profile.pk, "name": "Kids tutor"}
    assert {(p["category"], p["version"], p["position"]) for p in body["frozen_positions"]} == {
        (name, 1, text) for name, text in frozen.items()
    }
    assert all("guidance" in p and len(p["sha256"]) == 64 for p in body["frozen_positions"])
    assert body["newer_position_versions"] == []


def test_after_an_edit_the_study_api_says_a_newer_version_exists(no_queue, curator):
    setup = build_study(n_categories=2, per_category=1, raters=1, raters_per_output=1)
    frozen = frozen_texts(setup.study)
    edited = study_categories(setup.study)[0]
    edit_position(edited, curator)
    listed = api_for(setup.admin).get("/api/studies/").json()["results"]
    [body] = [s for s in listed if s["id"] == setup.study.pk]
    assert body["newer_position_versions"] == [
        {"category": edited.name, "frozen": 1, "latest": 2}
    ]
    assert {p["category"]: p["position"] for p in body["frozen_positions"]} == frozen
    assert NEW_TEXT not in json.dumps(body)


def test_a_draft_study_has_frozen_nothing_yet(no_queue):
    draft = build_study(open_rating=False).study
    body = api_for(make_user("rhea", Role.RESEARCHER)).get(f"/api/studies/{draft.pk}/").json()
    assert body["frozen_positions"] == [] and body["newer_position_versions"] == []


# --- results: 1–5 and pairwise ---------------------------------------------------------


def test_the_results_api_carries_the_frozen_positions(no_queue, curator):
    setup = build_study(n_categories=2, per_category=1, raters=1, raters_per_output=1)
    rate_everything(setup)
    frozen = frozen_texts(setup.study)
    for category in study_categories(setup.study):
        edit_position(category, curator)
    body = api_for(setup.admin).get(f"/api/studies/{setup.study.pk}/results/").json()
    assert {p["category"]: (p["version"], p["position"]) for p in body["positions"]} == {
        name: (1, text) for name, text in frozen.items()
    }


@pytest.fixture
def pairwise(no_queue, curator, tutor_profile):
    setup = build_study(n_categories=2, per_category=1, raters=1, raters_per_output=1,
                        mode="pairwise")  # fmt: skip
    judge_favouring(setup.study, setup.raters, "values_targeted")
    setup.frozen = frozen_texts(setup.study)
    for category in study_categories(setup.study):
        edit_position(category, curator)
    return setup


def test_the_pairwise_results_page_shows_the_frozen_positions_and_profile(pairwise):
    url = reverse("evaluation:study-pairwise-results", args=[pairwise.study.pk])
    body = client_for(pairwise.admin).get(url).content.decode()
    assert "Positions rated against" in body and 'id="positions-profile"' in body
    assert all(text in body for text in pairwise.frozen.values()) and NEW_TEXT not in body
    assert "Kids tutor" in body
    for name in VERSION_NAMES.values():  # still blinded for the admin: letters only
        assert name not in body


def test_the_pairwise_results_api_carries_the_frozen_positions(pairwise):
    lifecycle.study_close(study=pairwise.study, user=pairwise.admin)
    researcher = make_user("rhea", Role.RESEARCHER)
    report = api_for(researcher).get(f"/api/pairwise-results/{pairwise.study.pk}/").json()
    assert report["mode"] == "arm-free" and report["outcomes"] == []
    assert {p["category"]: (p["version"], p["position"]) for p in report["positions"]} == {
        name: (1, text) for name, text in pairwise.frozen.items()
    }


def test_the_pairwise_judgments_export_carries_the_position_version(pairwise, tmp_path):
    study = lifecycle.study_close(study=pairwise.study, user=pairwise.admin)
    path = tmp_path / "judgments.jsonl"
    write_judgments(study, "jsonl", path, includes_arms=False)
    rows = read_back(path, "jsonl")
    assert rows and {row["position_version"] for row in rows} == {1}


# --- exports: the position version of each row ------------------------------------------------


@pytest.fixture
def two_versions(no_queue, curator):
    """A study opened after one of its two categories was edited (v2 frozen), rated, then
    closed; both categories are edited again afterwards (v3 and v2, frozen in nothing)."""
    setup = build_study(n_categories=2, per_category=1, raters=1, raters_per_output=1,
                        open_rating=False)  # fmt: skip
    prompts = setup.study.prompt_set.prompts.select_related("category").order_by("order")
    edited, plain = list(dict.fromkeys(prompt.category for prompt in prompts))
    current_position_version(edited)
    edit_position(edited, curator, "Version two, frozen when the study opened.")
    study = lifecycle.study_open(study=setup.study, user=setup.admin)
    fake_sampling_run(study)
    setup.study = lifecycle.study_sync_sampling(study_id=study.pk)
    rate_everything(setup)
    setup.study = lifecycle.study_close(study=setup.study, user=setup.admin)
    edit_position(edited, curator, "Version three, after closing.")
    edit_position(plain, curator, "Version two, after closing.")
    setup.expected = {edited.name: 2, plain.name: 1}
    return setup


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_each_rating_row_carries_its_categorys_frozen_version(two_versions, tmp_path, fmt):
    path = tmp_path / f"ratings.{fmt}"
    exports.write_ratings(two_versions.study, fmt, path, includes_arms=False)
    rows = read_back(path, fmt)
    assert rows
    assert {row["category"]: int(row["position_version"]) for row in rows} == (
        two_versions.expected
    )
    assert "position_version" in exports.columns_for(two_versions.study, includes_arms=False)


# --- the value profile on the study page, the documents and the bundle ------------------------


def test_the_study_page_names_the_value_profile(no_queue, tutor_profile):
    setup = build_study(n_categories=1, per_category=1, raters=1, raters_per_output=1)
    page = client_for(setup.admin).get(setup.study.get_absolute_url()).content.decode()
    assert 'id="study-profile"' in page
    assert "Kids tutor" in page and "children 8–12" in page


def test_the_report_documents_name_the_profile_in_methods_and_provenance(
    no_queue, tutor_profile, pairwise
):
    scale = build_study(n_categories=1, per_category=1, raters=1, raters_per_output=1,
                        rater_prefix="scale")  # fmt: skip
    for study in (scale.study, pairwise.study):
        html = render_report_document(study, "arm-free")
        assert 'id="provenance-profile"' in html and "children 8–12" in html
        assert 'id="positions-profile"' in html
        for name in VERSION_NAMES.values():
            assert name not in html
    html = render_report_document(scale.study, "arm-free")
    assert 'id="methods-profile"' in html and "Value profile: Kids tutor" in html


def test_the_bundle_manifest_ties_the_positions_to_the_profile(no_queue, tutor_profile, tmp_path):
    setup = build_study(n_categories=1, per_category=1, raters=1, raters_per_output=1)
    rate_everything(setup)
    study = lifecycle.study_close(study=setup.study, user=setup.admin)
    path = tmp_path / "bundle.zip"
    exports.write_export(study, "bundle", path, includes_arms=False)
    with zipfile.ZipFile(path) as zf:
        names = {n.split("/", 1)[1]: n for n in zf.namelist()}
        manifest = json.loads(zf.read(names["manifest.json"]))
    assert manifest["study"]["profile"] == {
        "id": tutor_profile.pk, "name": "Kids tutor", "slug": tutor_profile.slug,
        "audience": "children 8–12",
    }
    assert [p["version"] for p in manifest["study"]["positions"]] == [1]
    assert "positions.json" in names
    assert "arms" not in manifest["study"]  # still blinded


def test_the_study_api_still_names_no_model_to_a_researcher_before_unblinding(no_queue):
    """With the new fields, a researcher's study API still carries no model name."""
    setup = build_study(n_categories=1, per_category=1, raters=1, raters_per_output=1)
    body = api_for(make_user("rhea", Role.RESEARCHER)).get(f"/api/studies/{setup.study.pk}/")
    text = body.content.decode()
    for name in VERSION_NAMES.values():
        assert name not in text
