"""Preference sets and snapshots from a closed study: the counts before building, the
rules (majority of raters; margin of mean scores), review, freeze, the JSONL downloads, and
who may do it."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pyarrow.parquet as pq
import pytest
from django.urls import reverse

from curation.models import ImmutableError
from evaluation.models import PreferencePair, PreferenceSet, PreferenceSnapshot, StudyArm
from evaluation.report import preferences
from evaluation.studies import lifecycle, queue
from palmsweb.models import Membership, Profile
from palmsweb.roles import Role
from tests.conftest import client_for, make_user
from tests.evaluation.conftest import build_study
from tests.evaluation.test_pairwise_report import judge_favouring

pytestmark = pytest.mark.django_db


@pytest.fixture
def closed_pairwise(no_queue):
    setup = build_study(mode="pairwise")
    judge_favouring(setup.study, setup.raters, "values_targeted")
    setup.study = lifecycle.study_close(study=setup.study, user=setup.admin)
    return setup


@pytest.fixture
def closed_scale(no_queue):
    setup = build_study()
    arm_of = dict(StudyArm.objects.filter(study=setup.study).values_list("pk", "arm"))
    for rater in setup.raters:
        while (claim := queue.rating_claim_next(study=setup.study, rater=rater)) is not None:
            score = 5 if arm_of[claim.output.arm_id] == "values_targeted" else 2
            queue.rating_submit(public_id=claim.output.public_id, rater=rater, score=score)
    setup.study = lifecycle.study_close(study=setup.study, user=setup.admin)
    return setup


@pytest.fixture
def curator(db):
    return make_user("pref-curator", Role.CURATOR)


def test_counts_come_before_building_and_ties_are_left_out(closed_pairwise, curator):
    study = closed_pairwise.study
    client = client_for(curator)
    url = reverse("evaluation:study-preferences", args=[study.pk])
    page = client.get(url).content.decode()
    # 4 prompts × 3 arm pairs: the 8 pairs with the values-targeted arm have a unanimous
    # winner; base vs control were ties every time.
    assert "<strong>8</strong> pairs kept of 12 considered" in page
    assert "4 left out: no majority for one side" in page
    assert not PreferenceSet.objects.exists()  # counting wrote nothing
    built = client.post(url, {"source": "pairwise"})
    preference_set = PreferenceSet.objects.get()
    assert built.url == preference_set.get_absolute_url()
    pairs = list(preference_set.pairs.select_related("chosen__arm", "rejected__arm"))
    assert len(pairs) == 8
    assert all(p.chosen.arm.arm == "values_targeted" for p in pairs)
    assert all((p.votes_for, p.votes_total) == (3, 3) for p in pairs)


def test_review_freeze_and_download(closed_pairwise, curator):
    preference_set = preferences.preference_set_build(
        study=closed_pairwise.study, source="pairwise", user=curator
    )
    client = client_for(curator)
    dropped = preference_set.pairs.first()
    client.post(reverse("evaluation:preference-pair-drop", args=[dropped.pk]), {"dropped": "1"})
    assert PreferencePair.objects.get(pk=dropped.pk).dropped
    client.post(reverse("evaluation:preference-set-freeze", args=[preference_set.pk]))
    snapshot = PreferenceSnapshot.objects.get()
    assert snapshot.pair_count == 7
    assert snapshot.content_hash == hashlib.sha256(snapshot.content.encode()).hexdigest()
    content = json.loads(snapshot.content)
    provenance = content["provenance"]
    assert provenance["study"]["id"] == closed_pairwise.study.pk
    assert provenance["built_by"] == provenance["frozen_by"] == curator.username
    assert provenance["dropped"] == 1 and provenance["positions"]
    # Dropping after the freeze changes the set, never the snapshot.
    client.post(reverse("evaluation:preference-pair-drop", args=[dropped.pk]), {"dropped": "0"})
    assert PreferenceSnapshot.objects.get().content == snapshot.content
    with pytest.raises(ImmutableError):
        snapshot.save()
    with pytest.raises(ImmutableError):
        PreferenceSnapshot.objects.all().update(pair_count=0)

    download = reverse("evaluation:preference-snapshot-download", args=[snapshot.pk])
    openai = client.get(download, {"kind": "openai"})
    rows = [json.loads(line) for line in openai.content.decode().splitlines()]
    assert len(rows) == 7 and openai["X-Content-SHA256"] == snapshot.content_hash
    assert set(rows[0]) == {"input", "preferred_output", "non_preferred_output"}
    assert rows[0]["input"]["messages"][0]["role"] == "user"
    assert rows[0]["preferred_output"][0]["content"] == content["pairs"][0]["chosen"]
    trl = client.get(download, {"kind": "trl"}).content.decode().splitlines()
    assert set(json.loads(trl[0])) == {"prompt", "chosen", "rejected"}
    assert client.get(download, {"kind": "csv"}).status_code == 400

    archive = zipfile.ZipFile(io.BytesIO(client.get(download, {"kind": "zip"}).content))
    names = {"README.md", "snapshot.json", "preferences.jsonl", "preferences-openai.jsonl"}
    assert set(archive.namelist()) == names | {"preferences.parquet"}
    assert archive.read("snapshot.json").decode() == snapshot.content
    card = archive.read("README.md").decode()
    assert snapshot.content_hash in card and "more than half" in card
    table = pq.read_table(io.BytesIO(archive.read("preferences.parquet")))
    assert table.column_names == ["prompt", "chosen", "rejected"] and table.num_rows == 7
    assert table.column("chosen").to_pylist()[0] == content["pairs"][0]["chosen"]


def test_ratings_with_a_margin(closed_scale, curator):
    study = closed_scale.study
    found = preferences.preference_candidates(study, source="ratings", margin=1.0)
    # Per prompt: vt (5) beats base (2) and control (2); base vs control differ by 0.
    assert (found.kept, found.considered) == (8, 12)
    assert preferences.preference_candidates(study, source="ratings", margin=3.5).kept == 0
    client = client_for(curator)
    url = reverse("evaluation:study-preferences", args=[study.pk])
    for margin in ("0", "x", "9"):
        assert client.post(url, {"source": "ratings", "margin": margin}).status_code == 400
    assert client.post(url, {"source": "pairwise"}).status_code == 400  # a 1–5 study
    assert not PreferenceSet.objects.exists()
    client.post(url, {"source": "ratings", "margin": "1"})
    pair = PreferenceSet.objects.get().pairs.select_related("chosen__arm").first()
    assert (pair.chosen_mean, pair.rejected_mean) == (5.0, 2.0)
    assert pair.chosen.arm.arm == "values_targeted"


def test_an_open_study_gives_no_preference_set(no_queue, curator):
    setup = build_study(mode="pairwise")
    response = client_for(curator).post(
        reverse("evaluation:study-preferences", args=[setup.study.pk]), {"source": "pairwise"}
    )
    assert response.status_code == 400 and "closed study" in response.content.decode()
    assert not PreferenceSet.objects.exists()


def test_only_the_profiles_curators_and_admins(closed_pairwise, curator):
    study = closed_pairwise.study
    url = reverse("evaluation:study-preferences", args=[study.pk])
    assert client_for(closed_pairwise.admin).get(url).status_code == 200
    assert client_for(make_user("pref-researcher", Role.RESEARCHER)).get(url).status_code == 403
    assert client_for(closed_pairwise.raters[0]).get(url).status_code == 403
    elsewhere = Profile.objects.create(name="Elsewhere", slug="elsewhere-pref")
    stranger = make_user("pref-stranger")
    Membership.objects.create(profile=elsewhere, user=stranger, role=Role.CURATOR.value)
    assert client_for(stranger).get(url).status_code == 404
    index = client_for(curator).get(reverse("evaluation:preference-index")).content.decode()
    assert study.name in index


def test_the_api_previews_builds_reviews_freezes_and_downloads(closed_pairwise, curator):
    from rest_framework.test import APIClient

    from tests.conftest import api_token

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(curator)}")
    study = closed_pairwise.study.pk
    preview = api.post("/api/preference-sets/preview/", {"study": study, "source": "pairwise"},
                       format="json").json()  # fmt: skip
    assert (preview["kept"], preview["considered"]) == (8, 12)
    assert not PreferenceSet.objects.exists()
    bad = api.post("/api/preference-sets/", {"study": study, "source": "ratings", "margin": 1},
                   format="json")  # fmt: skip
    assert bad.status_code == 400 and not PreferenceSet.objects.exists()
    built = api.post("/api/preference-sets/", {"study": study, "source": "pairwise"}, format="json")
    assert built.status_code == 201 and len(built.json()["pairs"]) == 8
    pair = built.json()["pairs"][0]["id"]
    dropped = api.post(f"/api/preference-pairs/{pair}/drop/", {"dropped": True}, format="json")
    assert dropped.json()["dropped"] is True
    frozen = api.post(f"/api/preference-sets/{built.json()['id']}/freeze/")
    assert frozen.status_code == 201 and frozen.json()["pair_count"] == 7
    assert frozen.json()["provenance"]["source"] == "pairwise"
    lines = api.get(f"/api/preference-snapshots/{frozen.json()['id']}/download/?kind=trl")
    assert len(lines.content.decode().splitlines()) == 7
    wrong = api.get(f"/api/preference-snapshots/{frozen.json()['id']}/download/?kind=xml")
    assert wrong.status_code == 400
