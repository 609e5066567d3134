"""Issue 14, item 1: a study freezes its categories' position versions when it opens.
A curator who edits a position mid-study changes nothing its raters see (page and API);
the study page says a newer version exists; the report, the HTML document and the bundle
record the frozen versions."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest
from django.urls import reverse

from curation import services
from curation.models import Category
from evaluation.models import Prompt
from evaluation.report import exports
from evaluation.report.document import render_report_document
from evaluation.studies import lifecycle, positions
from tests.conftest import api_token, client_for
from tests.evaluation.conftest import build_study

pytestmark = pytest.mark.django_db

NEW_TEXT = "A newer position, written while the study was rating."


def study_categories(study):
    ids = Prompt.objects.filter(pk__in=study.prompt_ids).values("category_id")
    return list(Category.objects.filter(pk__in=ids))


def edit_position(category, user, text=NEW_TEXT):
    return services.category_update(
        category=category, name=category.name, position=text, guidance=category.guidance,
        target_count=category.target_count, user=user,
    )


@pytest.fixture
def setup(no_queue):
    return build_study(raters=3, raters_per_output=1, n_categories=2, per_category=2)


def test_opening_freezes_the_current_version_of_each_category(setup):
    study = setup.study
    frozen = positions.frozen_versions(study)
    categories = study_categories(study)
    assert {v.category_id for v in frozen} == {c.pk for c in categories}
    assert all(v.number == 1 and v.position == v.category.position for v in frozen)


def test_a_draft_study_freezes_nothing_and_reads_the_live_text(no_queue):
    draft = build_study(open_rating=False).study
    assert positions.frozen_versions(draft) == []
    category = draft.prompt_set.prompts.first().category
    assert positions.position_text(draft, category) == category.position


def edited_mid_study(setup, curator):
    """Edit every category of the study; return {category name: frozen text}."""
    frozen = {v.category.name: v.position for v in positions.frozen_versions(setup.study)}
    for category in study_categories(setup.study):
        edit_position(category, curator)
    return frozen


def test_the_rating_page_shows_the_frozen_position_after_an_edit(setup, curator):
    frozen = edited_mid_study(setup, curator)
    client = client_for(setup.raters[0])
    client.post(reverse("evaluation:rate-claim", args=[setup.study.pk]))
    page = client.get(reverse("evaluation:rate", args=[setup.study.pk]))
    assert page.context["state"] == "task"
    body = page.content.decode()
    category = page.context["output"].prompt.category.name
    assert frozen[category] in body and NEW_TEXT not in body


def test_the_rating_api_shows_the_frozen_position_after_an_edit(setup, curator):
    from rest_framework.test import APIClient

    frozen = edited_mid_study(setup, curator)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(setup.raters[1])}")
    task = api.post(f"/api/rating/studies/{setup.study.pk}/claim/").json()
    assert task["position"] == frozen[task["category"]]
    current = api.get(f"/api/rating/studies/{setup.study.pk}/current/").json()
    assert current["position"] == frozen[task["category"]]
    api.post(f"/api/rating/outputs/{task['output']}/submit/", {"score": 4}, format="json")
    last = api.get(f"/api/rating/studies/{setup.study.pk}/last/")
    assert last.status_code == 200 and last.json()["position"] == frozen[task["category"]]


def test_the_study_page_says_a_newer_version_exists(setup, curator):
    edited_mid_study(setup, curator)
    page = client_for(setup.admin).get(setup.study.get_absolute_url()).content.decode()
    for category in study_categories(setup.study):
        assert f"Position of {category.name} edited since this study opened: v1 → v2" in page
    assert 'id="frozen-positions"' in page


def test_no_note_while_the_positions_are_unchanged(setup):
    assert positions.positions_edited_since_opening(setup.study) == []
    page = client_for(setup.admin).get(setup.study.get_absolute_url()).content.decode()
    assert "edited since this study opened" not in page


def test_the_report_document_and_the_bundle_carry_the_frozen_positions(
    setup, curator, tmp_path
):
    frozen = edited_mid_study(setup, curator)
    html = render_report_document(setup.study, "arm-free")
    assert "Positions rated against" in html
    assert all(text in html for text in frozen.values()) and NEW_TEXT not in html

    study = lifecycle.study_close(study=setup.study, user=setup.admin)
    path = tmp_path / "bundle.zip"
    exports.write_export(study, "bundle", path, includes_arms=False)
    with zipfile.ZipFile(path) as zf:
        names = {n.split("/", 1)[1]: n for n in zf.namelist()}
        records = json.loads(zf.read(names["positions.json"]))
        manifest = json.loads(zf.read(names["manifest.json"]))
    assert {(r["category"], r["version"], r["position"]) for r in records} == {
        (name, 1, text) for name, text in frozen.items()
    }
    for record in records:
        assert record["sha256"] == hashlib.sha256(record["position"].encode()).hexdigest()
    assert {(p["category"], p["version"]) for p in manifest["study"]["positions"]} == {
        (name, 1) for name in frozen
    }
    assert "positions.json" in {f["name"] for f in manifest["files"]}


@pytest.mark.django_db(transaction=True)
def test_the_migration_freezes_version_one_for_studies_opened_before_it(no_queue):
    """A study that opened before positions had versions froze nothing; the migration
    freezes the text its raters have read so far (version 1), so later edits miss it."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    study = build_study(n_categories=1, per_category=1).study
    study.position_versions.clear()
    before = [("evaluation", "0010_unlock_unused_prompt_sets")]
    after = [("evaluation", "0011_study_position_versions")]
    executor = MigrationExecutor(connection)
    try:
        executor.migrate(before)
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        apps = executor.loader.project_state(after).apps
        frozen = apps.get_model("evaluation", "Study").objects.get(pk=study.pk).position_versions
        assert [(v.number, v.position) for v in frozen.all()] == [
            (1, "Position text for category 0: be careful.")
        ]
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def test_the_llm_judge_scores_against_the_frozen_position_too(setup, curator):
    from evaluation.scoring.judge import outputs_to_judge

    frozen = edited_mid_study(setup, curator)
    judged = outputs_to_judge(setup.study)
    assert judged
    assert {position for _pk, _text, _prompt, position in judged} <= set(frozen.values())
    assert all(position != NEW_TEXT for *_, position in judged)
