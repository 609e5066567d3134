"""A curator's own better answer as the chosen side of a preference pair: revisions with
their authors, a stale save refused with both texts and nothing changed, the snapshot's
chosen side and provenance, the API, and who may write one."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from evaluation.models import PreferenceAnswerRevision, PreferencePair, PreferenceSnapshot
from evaluation.report import preference_answers, preferences
from palmsweb.roles import Role
from tests.conftest import api_token, client_for, make_user
from tests.evaluation.test_preferences import closed_pairwise, curator  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


@pytest.fixture
def built(closed_pairwise, curator):  # noqa: F811
    return preferences.preference_set_build(
        study=closed_pairwise.study, source="pairwise", user=curator
    )


def test_answers_are_kept_with_authors_and_revisions(built, curator):  # noqa: F811
    pair = built.pairs.first()
    other = make_user("pref-curator-2", Role.CURATOR)
    url = reverse("evaluation:preference-pair-answer", args=[pair.pk])
    page = client_for(curator).get(url).content.decode()
    assert pair.chosen.text in page and "No answer written yet" in page
    saved = client_for(curator).post(url, {"answer": "  A better answer.  ", "base_version": "0"})
    assert saved.status_code == 302
    client_for(other).post(url, {"answer": "Better still.", "base_version": "1"})
    pair.refresh_from_db()
    assert (pair.answer, pair.answer_version, pair.answer_by) == ("Better still.", 2, other)
    history = list(pair.revisions.values_list("number", "answer", "author__username"))
    assert history == [(2, "Better still.", other.username),
                       (1, "A better answer.", curator.username)]  # fmt: skip
    page = client_for(curator).get(url).content.decode()
    assert "A better answer." in page and "Restore r1" in page
    # The same text again is no new revision.
    client_for(other).post(url, {"answer": "Better still.", "base_version": "2"})
    assert pair.revisions.count() == 2
    # Restoring brings r1 back as r3.
    restore = reverse("evaluation:preference-answer-restore", args=[pair.pk])
    missing = client_for(curator).post(restore, {"number": "9", "base_version": "2"})
    assert missing.status_code == 400
    client_for(curator).post(restore, {"number": "1", "base_version": "2"})
    pair.refresh_from_db()
    assert (pair.answer, pair.answer_version) == ("A better answer.", 3)
    assert pair.revisions.get(number=3).note == "restored revision 1"


def test_a_stale_save_is_refused_with_both_texts_and_changes_nothing(built, curator):  # noqa: F811
    pair = built.pairs.first()
    preference_answers.preference_answer_save(
        pair=pair, answer="Theirs.", base_version=0, user=make_user("pref-first", Role.CURATOR)
    )
    url = reverse("evaluation:preference-pair-answer", args=[pair.pk])
    stale = client_for(curator).post(url, {"answer": "Mine.", "base_version": "0"})
    assert stale.status_code == 409
    page = stale.content.decode()
    assert "Theirs." in page and "Mine." in page and "pref-first saved an answer" in page
    pair.refresh_from_db()
    assert (pair.answer, pair.answer_version) == ("Theirs.", 1)
    assert PreferenceAnswerRevision.objects.filter(pair=pair).count() == 1
    # Bad input: 400, nothing changes.
    assert client_for(curator).post(url, {"answer": "x", "base_version": "?"}).status_code == 400
    too_long = client_for(curator).post(url, {"answer": "x" * 20_001, "base_version": "1"})
    assert too_long.status_code == 400
    assert PreferencePair.objects.get(pk=pair.pk).answer_version == 1


def test_the_snapshot_uses_the_curators_answer_and_says_so(built, curator):  # noqa: F811
    pair = built.pairs.select_related("chosen", "rejected").first()
    preference_answers.preference_answer_save(
        pair=pair, answer="Written by a curator.", base_version=0, user=curator
    )
    snapshot = preferences.preference_snapshot_freeze(preference_set=built, user=curator)
    content = json.loads(snapshot.content)
    assert content["provenance"]["curator_answers"] == 1
    written = [p for p in content["pairs"] if p["chosen_by"] == "curator"]
    assert len(written) == 1
    assert written[0]["chosen"] == "Written by a curator."
    assert written[0]["rejected"] == pair.rejected.text
    assert (written[0]["answer_author"], written[0]["answer_revision"]) == (curator.username, 1)
    others = [p for p in content["pairs"] if p["chosen_by"] == "raters"]
    assert len(others) == len(content["pairs"]) - 1
    # What the DPO reader takes (snapshot_jsonl) keeps its keys and carries the answer.
    trl = [json.loads(line) for line in preferences.snapshot_jsonl(snapshot, "trl").splitlines()]
    assert all(set(row) == {"prompt", "chosen", "rejected"} for row in trl)
    assert "Written by a curator." in {row["chosen"] for row in trl}
    assert "1 (marked `chosen_by: curator`)" in preferences._card(snapshot, content["provenance"])
    # A blank answer hands the chosen side back to the raters; the frozen one stays.
    preference_answers.preference_answer_save(pair=pair, answer="", base_version=1, user=curator)
    again = preferences.preference_snapshot_freeze(preference_set=built, user=curator)
    assert json.loads(again.content)["provenance"]["curator_answers"] == 0
    assert PreferenceSnapshot.objects.get(pk=snapshot.pk).content == snapshot.content


def test_the_api_writes_answers_and_lists_revisions(built, curator):  # noqa: F811
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(curator)}")
    pair = built.pairs.first().pk
    url = f"/api/preference-pairs/{pair}/answer/"
    saved = api.post(url, {"answer": "Via the API.", "base_version": 0}, format="json")
    assert saved.status_code == 200
    body = saved.json()
    assert (body["answer"], body["answer_version"], body["answer_by"]) == (
        "Via the API.", 1, curator.username)  # fmt: skip
    stale = api.post(url, {"answer": "Late.", "base_version": 0}, format="json")
    assert stale.status_code == 409 and "first" in stale.json()["detail"]
    unknown = api.post(url, {"answer": "x", "base_version": 1, "author": "me"}, format="json")
    assert unknown.status_code == 400
    assert PreferencePair.objects.get(pk=pair).answer == "Via the API."
    revisions = api.get(f"/api/preference-pairs/{pair}/revisions/").json()["results"]
    assert [(r["number"], r["author"]) for r in revisions] == [(1, curator.username)]


def test_only_the_profiles_curators_write_answers(built, closed_pairwise):  # noqa: F811
    pair = built.pairs.first()
    url = reverse("evaluation:preference-pair-answer", args=[pair.pk])
    for user in (closed_pairwise.raters[0], make_user("pref-res", Role.RESEARCHER)):
        response = client_for(user).post(url, {"answer": "x", "base_version": "0"})
        assert response.status_code == 403
    assert PreferencePair.objects.get(pk=pair.pk).answer == ""
