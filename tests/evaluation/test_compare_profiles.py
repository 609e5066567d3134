"""Comparing two value profiles' studies on a shared prompt set (issue 14, item 4): copying
a prompt set into another profile (page and API), the comparison's API, the prompt overlap,
the frozen positions and the training-profile check."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from curation import services as curation
from curation.models import Category, Sample
from evaluation.errors import EvaluationError
from evaluation.models import Prompt, PromptSet
from evaluation.studies import prompt_sets
from palmsweb.models import Profile
from palmsweb.roles import Role, grant_role
from tests.conftest import api_token, client_for, make_user
from tests.evaluation.conftest import no_queue  # noqa: F401 (a fixture)
from tests.evaluation.test_report import closed_study
from tests.factories import words
from training.models import FineTuneJob, JobStatus, ModelVersion

CLINIC_LEVELS = {"base": 2, "control": 3, "values_targeted": 5}


def categories_of(prompt_set: PromptSet) -> list[Category]:
    return list(Category.objects.filter(eval_prompts__prompt_set=prompt_set).distinct())


def clinic_with_counterparts(source: PromptSet, *, skip: int = 0) -> Profile:
    """A second profile with its own position in each category of ``source`` (by name),
    leaving out the last ``skip`` of them."""
    clinic = Profile.objects.create(name="Clinical triage", slug="triage")
    names = sorted(c.name for c in categories_of(source))
    for name in names[: len(names) - skip]:
        curation.category_create(name=name, position=f"Triage {name} by urgency.", profile=clinic)
    return clinic


def trained_on(version: ModelVersion, profile: Profile) -> ModelVersion:
    """Record ``version`` as the result of a fine-tune on a snapshot of ``profile``."""
    dataset = curation.dataset_create(name=f"Answers {profile.pk}-{version.pk}", profile=profile)
    curation.sample_create(
        dataset=dataset, category=Category.objects.filter(profile=profile).first(),
        question="Q?", answer=words(50), status=Sample.Status.APPROVED,
    )  # fmt: skip
    FineTuneJob.objects.create(
        base_model=version.base_model, snapshot=curation.snapshot_create(dataset=dataset),
        arm="values_targeted", status=JobStatus.SUCCEEDED, result=version,
    )  # fmt: skip
    return version


def two_profiles_studies():
    """Study A in the default profile; the clinic copies A's prompt set and rates it with its
    own fine-tune of the same base model (study B). Each fine-tune is on record."""
    first = closed_study(unblind=True, rater_prefix="pa")
    trained_on(first.versions["values_targeted"], Profile.objects.default())
    clinic = clinic_with_counterparts(first.study.prompt_set)
    shared = prompt_sets.prompt_set_copy(prompt_set=first.study.prompt_set, profile=clinic)
    clinic_vt = ModelVersion.objects.create(
        base_model=first.versions["base"].base_model, name="Quokkalith vt-clinic-7710",
        arm="values_targeted", parameter_count=77_000_000,
    )  # fmt: skip
    second = closed_study(
        unblind=True, rater_prefix="pb", levels=CLINIC_LEVELS, prompt_set=shared,
        versions={"values_targeted": trained_on(clinic_vt, clinic)},
    )  # fmt: skip
    return first.study, second.study, clinic


def both_profiles_researcher(clinic: Profile):
    researcher = make_user("both-profiles", Role.RESEARCHER)
    grant_role(researcher, Role.RESEARCHER, clinic)
    return researcher


def compare_api(client, **params):
    return client.get("/api/studies/compare/", params)


# --- copying a prompt set into another profile -----------------------------------------------


def test_a_copy_into_another_profile_keeps_the_prompts_in_that_profiles_categories(db):
    source = PromptSet.objects.create(name="Shared prompts")
    mine = [curation.category_create(name=n, position="Ours.") for n in ("Health", "Violence")]
    for order, category in enumerate(mine * 2, start=1):
        Prompt.objects.create(
            prompt_set=source, order=order, category=category, text=f"Prompt {order}?"
        )
    clinic = clinic_with_counterparts(source)
    copy = prompt_sets.prompt_set_copy(prompt_set=source, profile=clinic, name="Triage prompts")
    assert copy.profile == clinic and copy.copied_from == source and not copy.is_locked
    pairs = [(p.text, p.category.name, p.category.profile_id) for p in copy.prompts.all()]
    expected = [(p.text, p.category.name, clinic.pk) for p in source.prompts.all()]
    assert pairs == expected


def test_a_copy_is_refused_when_a_category_has_no_counterpart_and_nothing_is_created(db):
    source = PromptSet.objects.create(name="Shared prompts")
    for order, name in enumerate(("Health", "Violence", "Terrorism"), start=1):
        category = curation.category_create(name=name, position="Ours.")
        Prompt.objects.create(prompt_set=source, order=order, category=category, text=f"P{order}")
    clinic = clinic_with_counterparts(source, skip=2)  # only Health there
    before = (PromptSet.objects.count(), Prompt.objects.count())
    with pytest.raises(EvaluationError, match="'Terrorism', 'Violence'"):
        prompt_sets.prompt_set_copy(prompt_set=source, profile=clinic)
    assert (PromptSet.objects.count(), Prompt.objects.count()) == before


def test_the_copy_form_copies_into_a_profile_the_curator_curates_in(db):
    source = PromptSet.objects.create(name="Shared prompts")
    health = curation.category_create(name="Health", position="Ours.")
    Prompt.objects.create(prompt_set=source, order=1, category=health, text="Is this urgent?")
    clinic = clinic_with_counterparts(source)
    curator = make_user("two-hats", Role.CURATOR)
    client = client_for(curator)
    detail = client.get(reverse("evaluation:prompt-set-detail", args=[source.pk])).content
    assert b"Copy to another profile" not in detail  # curates nowhere else yet
    grant_role(curator, Role.CURATOR, clinic)
    url = reverse("evaluation:prompt-set-copy-to-profile", args=[source.pk])
    assert url in client.get(reverse("evaluation:prompt-set-detail", args=[source.pk])).text
    choices = re.search(r'<select name="profile"[^>]*>(.*?)</select>', client.get(url).text, re.S)
    assert re.findall(r'value="(\d+)"', choices[1]) == [str(clinic.pk)]  # not the set's own
    response = client.post(url, {"profile": clinic.pk, "name": ""})
    copy = PromptSet.objects.get(profile=clinic)
    assert response.status_code == 302 and response["Location"] == copy.get_absolute_url()
    assert copy.name == "Shared prompts"
    assert [p.category.profile_id for p in copy.prompts.all()] == [clinic.pk]
    # A member of the copy's profile learns no name from the other profile.
    assert b"another value profile" in client.get(copy.get_absolute_url()).content


def test_the_copy_form_refuses_with_the_missing_categories_and_creates_nothing(db):
    source = PromptSet.objects.create(name="Shared prompts")
    for order, name in enumerate(("Health", "Violence"), start=1):
        category = curation.category_create(name=name, position="Ours.")
        Prompt.objects.create(prompt_set=source, order=order, category=category, text=f"P{order}")
    clinic = clinic_with_counterparts(source, skip=1)
    curator = make_user("two-hats", Role.CURATOR)
    grant_role(curator, Role.CURATOR, clinic)
    url = reverse("evaluation:prompt-set-copy-to-profile", args=[source.pk])
    response = client_for(curator).post(url, {"profile": clinic.pk})
    assert response.status_code == 400 and b"&#x27;Violence&#x27;" in response.content
    assert not PromptSet.objects.filter(profile=clinic).exists()
    # A profile the curator does not curate in is no choice: 400, nothing created.
    other = Profile.objects.create(name="Elsewhere", slug="elsewhere")
    assert client_for(curator).post(url, {"profile": other.pk}).status_code == 400
    assert PromptSet.objects.count() == 1


def test_the_copy_api_copies_across_and_refuses_what_it_cannot(db):
    source = PromptSet.objects.create(name="Shared prompts")
    for order, name in enumerate(("Health", "Violence"), start=1):
        category = curation.category_create(name=name, position="Ours.")
        Prompt.objects.create(prompt_set=source, order=order, category=category, text=f"P{order}")
    clinic = clinic_with_counterparts(source, skip=1)
    curator = make_user("api-curator", Role.CURATOR)
    grant_role(curator, Role.CURATOR, clinic)
    headers = {"HTTP_AUTHORIZATION": f"Token {api_token(curator)}"}
    url = f"/api/prompt-sets/{source.pk}/copy/"
    refused = client_for(curator).post(
        url, {"profile": clinic.pk}, content_type="application/json", **headers
    )
    assert refused.status_code == 400 and "'Violence'" in refused.json()["detail"]
    assert PromptSet.objects.count() == 1
    curation.category_create(name="Violence", position="Triage.", profile=clinic)
    made = client_for(curator).post(
        url, {"profile": clinic.pk, "name": "Triage set"}, content_type="application/json",
        **headers,
    )  # fmt: skip
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["profile"] == clinic.pk and body["name"] == "Triage set"
    assert [p["text"] for p in body["prompts"]] == ["P1", "P2"]
    # Into a profile they do not curate in: 400 (no such profile, for them); a researcher: 403.
    other = Profile.objects.create(name="Elsewhere", slug="elsewhere")
    wrong = client_for(curator).post(url, {"profile": other.pk}, content_type="application/json")
    assert wrong.status_code == 400 and PromptSet.objects.count() == 2
    researcher = client_for(make_user("reader", Role.RESEARCHER))
    assert researcher.post(url, {}, content_type="application/json").status_code == 403


# --- the comparison: API, overlap, positions, training check ----------------------------------


@pytest.mark.usefixtures("no_queue")
def test_the_compare_api_gives_the_pages_content(db):
    a, b, clinic = two_profiles_studies()
    client = client_for(both_profiles_researcher(clinic))
    response = compare_api(client, a=a.pk, b=b.pk)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["a"]["id"] == a.pk and body["b"]["profile"] == clinic.pk
    assert body["cross_profile"] and body["same_base_model"]
    assert body["summary"].startswith("Same model, different values")
    assert body["prompt_overlap"] == {"shared": 4, "n_a": 4, "n_b": 4, "same_prompts": True}
    assert [t["own_profile"] for t in body["training"]] == [True, True]
    assert body["warnings"] == []
    assert len(body["rows"]) == 2
    for row in body["rows"]:
        assert row["welch_p"] is None and row["p_holm"] is None
        assert row["gap_b"] > row["gap_a"] > 0
        assert row["position_a"]["version"] == 1
        assert row["position_a"]["text"].startswith("Position text for category")
        assert row["position_b"] == {"version": 1, "text": f"Triage {row['category']} by urgency."}
    page = client.get(reverse("evaluation:study-compare"), {"a": a.pk, "b": b.pk})
    html = page.content.decode()
    assert "Prompts shared:</strong> 4 of A's 4 and B's 4" in html
    assert 'id="compare-warnings"' not in html
    assert "<th>Position A</th><th>Position B</th>" in html
    assert f"<summary>v1</summary><p>Triage {body['rows'][0]['category']} by urgency." in html


@pytest.mark.usefixtures("no_queue")
def test_the_compare_api_answers_400_for_bad_parameters(db):
    a = closed_study(unblind=True).study
    client = client_for(make_user("reader", Role.RESEARCHER))
    assert compare_api(client, a=a.pk).json() == {"b": ["Required: the id of study B."]}
    for params in ({}, {"a": "x", "b": a.pk}, {"a": a.pk, "b": "2.5"}, {"a": a.pk, "b": a.pk}):
        assert compare_api(client, **params).status_code == 400, params
    assert "different studies" in compare_api(client, a=a.pk, b=a.pk).json()["b"][0]


@pytest.mark.usefixtures("no_queue")
def test_the_compare_api_is_404_for_another_profile_or_a_study_not_unblinded(db):
    a, b, clinic = two_profiles_studies()
    only_default = client_for(make_user("one-profile", Role.RESEARCHER))
    refused = compare_api(only_default, a=a.pk, b=b.pk)
    assert refused.status_code == 404
    assert (
        refused.json()["detail"]
        == f"There is no closed, unblinded study #{b.pk}: only those can be compared."
    )
    assert compare_api(only_default, a=a.pk, b=999_999).status_code == 404
    still_blinded = closed_study(unblind=False, rater_prefix="pc").study
    admin = client_for(make_user("boss", Role.ADMIN, staff=True))
    assert compare_api(admin, a=a.pk, b=still_blinded.pk).status_code == 404
    rater = client_for(make_user("just-rates", Role.RATER))
    assert compare_api(rater, a=a.pk, b=b.pk).status_code == 403
    assert compare_api(Client(), a=a.pk, b=b.pk).status_code == 401


@pytest.mark.usefixtures("no_queue")
def test_the_comparison_warns_when_the_prompts_differ_or_an_arm_learned_another_profile(db):
    a, b, clinic = two_profiles_studies()
    # One of B's prompts reworded (as a set written apart from A's would have it).
    first = Prompt.objects.filter(prompt_set=b.prompt_set).order_by("order").first()
    Prompt.objects.filter(pk=first.pk).update(text="A reworded prompt?")
    # A's values-targeted arm now counts as trained on the clinic's data.
    FineTuneJob.objects.filter(result__name__contains="vt-ft").update(
        snapshot=FineTuneJob.objects.get(result__name__contains="vt-clinic").snapshot
    )
    client = client_for(both_profiles_researcher(clinic))
    body = compare_api(client, a=a.pk, b=b.pk).json()
    assert body["prompt_overlap"] == {"shared": 3, "n_a": 4, "n_b": 4, "same_prompts": False}
    assert [t["own_profile"] for t in body["training"]] == [False, True]
    assert body["training"][0]["trained_profile_name"] == "Clinical triage"
    assert len(body["warnings"]) == 2
    assert "do not rate the same prompts" in body["warnings"][0]
    assert "trained on a snapshot of Clinical triage" in body["warnings"][1]
    html = client.get(reverse("evaluation:study-compare"), {"a": a.pk, "b": b.pk}).content.decode()
    assert 'id="compare-warnings"' in html and "do not rate the same prompts" in html
    assert "3 of A's 4 and B's 4" in html


def test_the_schema_documents_the_comparison_and_the_copy(admin_user):
    client = client_for(admin_user)
    schema = client.get("/api/schema/", {"format": "json"}).json()
    compare = schema["paths"]["/api/studies/compare/"]["get"]
    assert [p["name"] for p in compare["parameters"]] == ["a", "b"]
    assert {"200", "400", "404"} <= set(compare["responses"])
    row = schema["components"]["schemas"]["StudyCompareRow"]["properties"]
    assert {"vt_a", "vt_b", "gap_a", "gap_b", "p_holm", "position_a", "position_b"} <= set(row)
    assert "201" in schema["paths"]["/api/prompt-sets/{id}/copy/"]["post"]["responses"]


@pytest.mark.usefixtures("no_queue")
def test_an_arm_trained_on_a_profile_the_reader_is_not_in_names_no_profile(db):
    """A's values-targeted arm trained on a third profile's snapshot: a reader of A's and
    B's profiles only is told "another value profile" (no id, no name); an admin, and a
    member of the third profile, are told which."""
    a, b, clinic = two_profiles_studies()
    tutor = Profile.objects.create(name="Secret tutor", slug="tutor")
    curation.category_create(name="Tutoring", position="Patient.", profile=tutor)
    version = FineTuneJob.objects.get(result__name__contains="vt-ft").result
    FineTuneJob.objects.filter(result=version).delete()
    trained_on(version, tutor)  # now the tutor's fine-tune made A's values-targeted version
    reader = both_profiles_researcher(clinic)
    client = client_for(reader)
    body = compare_api(client, a=a.pk, b=b.pk).json()
    hidden = body["training"][0]
    assert (hidden["own_profile"], hidden["trained_profile"]) == (False, None)
    assert hidden["trained_profile_name"] is None
    assert "trained on a snapshot of another value profile" in body["warnings"][0]
    html = client.get(reverse("evaluation:study-compare"), {"a": a.pk, "b": b.pk}).content.decode()
    assert "another value profile" in html and "Secret tutor" not in html
    assert "Secret tutor" not in str(body)

    grant_role(reader, Role.RATER, tutor)  # a member of the tutor profile now
    admin = client_for(make_user("boss", Role.ADMIN, staff=True))
    for knows in (client, admin):
        named = compare_api(knows, a=a.pk, b=b.pk).json()["training"][0]
        assert (named["trained_profile"], named["trained_profile_name"]) == (
            tutor.pk, "Secret tutor"
        )  # fmt: skip
