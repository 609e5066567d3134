"""Issue 14, item 1: every edit of a category's position or guidance is a numbered version
with its author, time and diff; snapshots record the versions of their categories in the
canonical content (so the hash covers them); existing text becomes version 1."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from curation import services
from curation.categories import current_position_version
from curation.models import PositionVersion, canonical_json, sha256_hex
from curation.selectors import position_history
from curation.services import UnchangedSnapshotError
from palmsweb.roles import Role
from tests.conftest import api_token, client_for, make_user
from tests.factories import CategoryFactory, words

pytestmark = pytest.mark.django_db


def edit(category, user, *, position=None, guidance=None):
    return services.category_update(
        category=category,
        name=category.name,
        position=category.position if position is None else position,
        guidance=category.guidance if guidance is None else guidance,
        target_count=category.target_count,
        user=user,
    )


@pytest.fixture
def health(curator):
    return services.category_create(
        name="Health", position="Suggest seeing a professional.", guidance="Be brief.",
        user=curator,
    )


def test_a_new_category_is_version_one_by_its_author(health, curator):
    [v1] = health.position_versions.all()
    assert (v1.number, v1.position, v1.guidance, v1.author) == (
        1, "Suggest seeing a professional.", "Be brief.", curator,
    )


def test_an_edit_makes_version_two_with_its_author_and_a_diff(health, curator, curator2):
    edit(health, curator2, position="Suggest seeing a doctor or nurse.")
    v2, v1 = health.position_versions.order_by("-number")
    assert (v2.number, v2.author, v2.position) == (2, curator2, "Suggest seeing a doctor or nurse.")
    assert (v1.number, v1.author, v1.position) == (1, curator, "Suggest seeing a professional.")

    newest, first = position_history(health)
    assert newest.version == v2 and first.version == v1
    assert newest.position_changed and not newest.guidance_changed
    removed = "".join(p.text for p in newest.position if p.kind == "delete")
    added = "".join(p.text for p in newest.position if p.kind == "insert")
    assert "professional." in removed and "doctor or nurse." in added


def test_saving_unchanged_text_makes_no_version_and_guidance_alone_does(health, curator):
    edit(health, curator)
    services.category_update(
        category=health, name="Health and care", position=health.position,
        guidance=health.guidance, target_count=5, user=curator,
    )
    assert health.position_versions.count() == 1
    edit(health, curator, guidance="Be brief; name a helpline.")
    assert health.position_versions.count() == 2
    assert position_history(health)[0].guidance_changed


def test_version_numbers_are_unique_per_category(health):
    with pytest.raises(IntegrityError):
        PositionVersion.objects.create(category=health, number=1, position="Twice.")


def test_a_category_changed_outside_the_workflows_gets_a_version_when_one_is_needed():
    category = CategoryFactory(position="Made in the admin.")
    assert not category.position_versions.exists()
    v1 = current_position_version(category)
    assert (v1.number, v1.position, v1.author) == (1, "Made in the admin.", None)
    assert current_position_version(category) == v1
    category.position = "Edited in the admin."
    category.save()
    assert current_position_version(category).number == 2


def test_the_category_page_shows_the_history_with_diffs(health, curator, curator2):
    edit(health, curator2, position="Suggest seeing a doctor.")
    page = client_for(curator).get(reverse("curation:category-edit", args=[health.pk]))
    body = page.content.decode()
    assert "Position history" in body and 'id="position-v2"' in body and 'id="position-v1"' in body
    assert "<del>professional.</del>" in body and "<ins>doctor.</ins>" in body
    assert curator2.username in body


def test_editing_from_the_page_records_the_curator(health, curator2):
    response = client_for(curator2).post(
        reverse("curation:category-edit", args=[health.pk]),
        {"name": "Health", "position": "Suggest a doctor.", "guidance": "Be brief.",
         "target_count": 10},
    )
    assert response.status_code == 302
    latest = health.position_versions.order_by("-number").first()
    assert (latest.number, latest.author, latest.position) == (2, curator2, "Suggest a doctor.")


def test_the_api_lists_versions_read_only_and_records_the_editor(health, curator, curator2):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(curator2)}")
    url = f"/api/categories/{health.pk}/"
    assert client.patch(url, {"position": "Suggest a doctor."}, format="json").status_code == 200

    researcher = APIClient()
    researcher.credentials(
        HTTP_AUTHORIZATION=f"Token {api_token(make_user('rita', Role.RESEARCHER))}"
    )
    listed = researcher.get(f"{url}versions/")
    assert listed.status_code == 200
    assert listed.json()["count"] == 2
    assert [(v["number"], v["author"], v["position"]) for v in listed.json()["results"]] == [
        (2, curator2.username, "Suggest a doctor."),
        (1, curator.username, "Suggest seeing a professional."),
    ]
    assert listed.json()["results"][0]["position_sha256"] == sha256_hex("Suggest a doctor.")
    assert client.post(f"{url}versions/", {}, format="json").status_code == 405


# --- snapshots -------------------------------------------------------------------------


@pytest.fixture
def approved_dataset(health, curator, curator2):
    dataset = services.dataset_create(name="Values", user=curator)
    sample = services.sample_create(
        dataset=dataset, question="How do I cope?", answer=words(60), category=health,
        user=curator,
    )
    services.sample_submit(sample=sample, user=curator)
    services.sample_approve(sample=sample, user=curator2)
    return dataset


def test_a_snapshot_records_the_position_versions_in_its_hashed_content(
    approved_dataset, health, curator
):
    snapshot = services.snapshot_create(dataset=approved_dataset, user=curator)
    assert snapshot.payload()["positions"] == [
        {"category": "Health", "version": 1, "position": "Suggest seeing a professional.",
         "guidance": "Be brief."},
    ]
    assert snapshot.content == canonical_json(snapshot.payload())
    assert snapshot.hash_matches_content()


def test_a_changed_position_changes_the_hash_and_old_snapshots_keep_theirs(
    approved_dataset, health, curator, curator2
):
    first = services.snapshot_create(dataset=approved_dataset, user=curator)
    with pytest.raises(UnchangedSnapshotError):  # dedupe still holds: same samples, same v1
        services.snapshot_create(dataset=approved_dataset, user=curator)

    edit(health, curator2, position="Suggest seeing a doctor.")
    second = services.snapshot_create(dataset=approved_dataset, user=curator)
    assert second.content_hash != first.content_hash
    assert second.payload()["items"] == first.payload()["items"]
    assert second.payload()["positions"][0]["version"] == 2

    first.refresh_from_db()
    assert first.payload()["positions"][0]["version"] == 1
    assert first.hash_matches_content()


def test_the_snapshot_page_names_the_position_versions(approved_dataset, curator):
    snapshot = services.snapshot_create(dataset=approved_dataset, user=curator)
    page = client_for(curator).get(reverse("curation:snapshot-detail", args=[snapshot.pk]))
    assert 'id="snapshot-positions"' in page.content.decode()
    assert "Health v1" in page.content.decode()


def test_a_snapshot_records_only_the_categories_it_contains(approved_dataset, curator):
    services.category_create(name="Unused", position="Not in this dataset.", user=curator)
    snapshot = services.snapshot_create(dataset=approved_dataset, user=curator)
    assert [p["category"] for p in snapshot.payload()["positions"]] == ["Health"]


# --- migration -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_every_existing_position_as_version_one():
    executor = MigrationExecutor(connection)
    before, after = [("curation", "0003_pending_import")], [("curation", "0004_position_versions")]
    try:
        executor.migrate(before)
        old_apps = executor.loader.project_state(before).apps
        Category = old_apps.get_model("curation", "Category")
        Category.objects.create(
            name="Old", slug="old", position="Written before versions.", guidance="Some advice."
        )
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        new_apps = executor.loader.project_state(after).apps
        Version = new_apps.get_model("curation", "PositionVersion")
        [v1] = Version.objects.filter(category__name="Old")
        assert (v1.number, v1.position, v1.guidance, v1.author_id) == (
            1, "Written before versions.", "Some advice.", None,
        )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
