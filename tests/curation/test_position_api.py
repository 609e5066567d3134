"""Issue 14 in the API: a snapshot's position versions and its canonical JSON (whose sha256
is the snapshot hash), the current version number of a category, and loading the PALMS
preset into a profile (curators of that profile and admins only)."""

from __future__ import annotations

import hashlib
import json

import pytest
from rest_framework.test import APIClient

from curation import services
from curation.models import Category
from palmsweb.models import Membership, Profile
from palmsweb.roles import Role
from tests.conftest import api_token, make_user
from tests.factories import words

pytestmark = pytest.mark.django_db

PALMS_CATEGORY_COUNT = 8


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


def edit(category, user, position):
    return services.category_update(
        category=category, name=category.name, position=position,
        guidance=category.guidance, target_count=category.target_count, user=user,
    )  # fmt: skip


@pytest.fixture
def health(curator):
    return services.category_create(
        name="Health", position="Suggest seeing a professional.", guidance="Be brief.",
        user=curator,
    )  # fmt: skip


@pytest.fixture
def snapshot(health, curator, curator2):
    dataset = services.dataset_create(name="Values", user=curator)
    sample = services.sample_create(
        dataset=dataset, question="How do I cope?", answer=words(60), category=health,
        user=curator,
    )  # fmt: skip
    services.sample_submit(sample=sample, user=curator)
    services.sample_approve(sample=sample, user=curator2)
    return services.snapshot_create(dataset=dataset, user=curator)


V1 = {"category": "Health", "version": 1, "position": "Suggest seeing a professional.",
      "guidance": "Be brief."}  # fmt: skip


# --- snapshots -------------------------------------------------------------------------


def test_the_snapshot_api_lists_the_position_versions_it_recorded(snapshot, health, curator):
    edit(health, curator, "Suggest seeing a doctor.")  # after the snapshot: not in it
    body = api_for(curator).get(f"/api/snapshots/{snapshot.pk}/").json()
    assert body["positions"] == [V1]
    assert body["hash_matches_content"] is True


def test_the_canonical_json_download_rechecks_the_snapshot_hash(snapshot, curator):
    response = api_for(make_user("rhea", Role.RESEARCHER)).get(
        f"/api/snapshots/{snapshot.pk}/download/json/"
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Content-Disposition"].endswith('.json"')
    digest = hashlib.sha256(response.content).hexdigest()
    assert digest == snapshot.content_hash == response["X-Snapshot-SHA256"]
    assert response["X-Content-SHA256"] == digest
    assert json.loads(response.content)["positions"] == [V1]


def test_the_other_downloads_are_unchanged_and_an_unknown_format_is_404(snapshot, curator):
    client = api_for(curator)
    jsonl = client.get(f"/api/snapshots/{snapshot.pk}/download/jsonl/")
    assert jsonl["Content-Type"] == "application/jsonl"
    assert hashlib.sha256(jsonl.content).hexdigest() == jsonl["X-Content-SHA256"]
    assert jsonl["X-Content-SHA256"] != snapshot.content_hash
    assert client.get(f"/api/snapshots/{snapshot.pk}/download/xml/").status_code == 404


# --- categories ------------------------------------------------------------------------


def test_the_category_api_gives_the_current_version_number(health, curator):
    client = api_for(curator)
    url = f"/api/categories/{health.pk}/"
    assert client.get(url).json()["position_version"] == 1
    patched = client.patch(url, {"position": "Suggest seeing a doctor."}, format="json")
    assert patched.json()["position_version"] == 2
    assert client.patch(url, {"target_count": 12}, format="json").json()["position_version"] == 2
    assert client.get(url).json()["position_version"] == 2
    listed = client.get("/api/categories/").json()["results"]
    assert [(c["name"], c["position_version"]) for c in listed] == [("Health", 2)]


def test_the_version_number_is_read_only(health, curator):
    url = f"/api/categories/{health.pk}/"
    response = api_for(curator).patch(url, {"position_version": 7}, format="json")
    assert response.status_code == 400
    assert health.position_versions.count() == 1


def test_the_category_list_keeps_the_display_order(curator):
    made = {
        name: services.category_create(name=name, position=f"{name} position.", user=curator)
        for name in ("Zebra", "Apple", "Mango")
    }
    services.category_reorder(ordered_ids=[made[n].pk for n in ("Mango", "Zebra", "Apple")])
    listed = api_for(curator).get("/api/categories/").json()["results"]
    assert [c["name"] for c in listed] == ["Mango", "Zebra", "Apple"]


# --- the PALMS preset --------------------------------------------------------------------

PRESET = "/api/categories/load-preset/"


@pytest.fixture
def tutor():
    return Profile.objects.create(name="Kids tutor", slug="kids-tutor")


def curator_of(profile, username="tess"):
    user = make_user(username)
    Membership.objects.create(profile=profile, user=user, role=Role.CURATOR.value)
    return user


def test_a_curator_loads_the_preset_into_their_profile_and_a_second_call_adds_nothing(tutor):
    client = api_for(curator_of(tutor))
    first = client.post(PRESET, {"profile": tutor.pk}, format="json")
    assert first.status_code == 200
    assert first.json() == {"profile": tutor.pk, "created": PALMS_CATEGORY_COUNT,
                            "already_there": 0}  # fmt: skip
    assert Category.objects.filter(profile=tutor).count() == PALMS_CATEGORY_COUNT
    assert all(c.position_versions.count() == 1 for c in Category.objects.filter(profile=tutor))
    again = client.post(PRESET, {}, format="json")  # their only profile: no need to name it
    assert again.status_code == 200
    assert again.json() == {"profile": tutor.pk, "created": 0,
                            "already_there": PALMS_CATEGORY_COUNT}  # fmt: skip
    assert Category.objects.filter(profile=tutor).count() == PALMS_CATEGORY_COUNT


def test_a_curators_edited_category_survives_a_reload(tutor):
    user = curator_of(tutor)
    client = api_for(user)
    client.post(PRESET, {"profile": tutor.pk}, format="json")
    health = Category.objects.get(profile=tutor, name__startswith="Health")
    edit(health, user, "Our own position.")
    client.post(PRESET, {"profile": tutor.pk}, format="json")
    health.refresh_from_db()
    assert health.position == "Our own position."


def test_another_profile_is_404_and_a_profile_where_one_only_rates_is_403(tutor, curator):
    """``curator`` curates in the default profile only: the tutor profile does not exist for
    them (404); once they rate there, it exists but they may not change it (403). Nothing is
    created either way."""
    client = api_for(curator)
    missing = client.post(PRESET, {"profile": tutor.pk}, format="json")
    assert missing.status_code == 404
    Membership.objects.create(profile=tutor, user=curator, role=Role.RATER.value)
    refused = client.post(PRESET, {"profile": tutor.pk}, format="json")
    assert refused.status_code == 403
    assert "curators of this profile" in refused.json()["detail"]
    assert client.post(PRESET, {"profile": 987654}, format="json").status_code == 404
    assert not Category.objects.filter(profile=tutor).exists()


def test_admins_load_into_any_profile_and_must_name_it_when_there_are_several(tutor):
    admin = make_user("ada", Role.ADMIN, staff=True)
    Profile.objects.default()
    client = api_for(admin)
    unnamed = client.post(PRESET, {}, format="json")
    assert unnamed.status_code == 400 and "profile" in unnamed.json()
    assert not Category.objects.exists()
    named = client.post(PRESET, {"profile": tutor.pk}, format="json")
    assert named.status_code == 200 and named.json()["created"] == PALMS_CATEGORY_COUNT


def test_bad_input_and_other_roles_change_nothing(tutor, curator):
    client = api_for(curator)
    assert client.post(PRESET, {"profile": "tutor"}, format="json").status_code == 400
    assert client.post(PRESET, {"profile": 2**70}, format="json").status_code == 400
    assert client.post(PRESET, {"profiles": tutor.pk}, format="json").status_code == 400
    rater = make_user("rita", Role.RATER)
    assert api_for(rater).post(PRESET, {}, format="json").status_code == 403
    researcher = make_user("rhea", Role.RESEARCHER)
    assert api_for(researcher).post(PRESET, {}, format="json").status_code == 403
    assert not Category.objects.exists()
