"""Value profiles (issue 14): per-profile categories and roles, the active profile, scoping,
creation through the API, management by admins, the migration, and the cross-profile
comparison."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from curation import services as curation
from curation.errors import CurationError
from curation.models import Category, Dataset, Sample
from evaluation.errors import EvaluationError
from evaluation.report.compare import compare_studies
from evaluation.studies import lifecycle
from evaluation.studies.rater_pool import rater_pool_candidates
from palmsweb.models import Membership, Profile
from palmsweb.roles import Role, grant_role, has_role, user_roles
from tests.conftest import api_token, client_for, make_user
from tests.evaluation.conftest import no_queue  # noqa: F401 (a fixture)
from tests.evaluation.test_compare_profiles import two_profiles_studies
from tests.factories import words


@pytest.fixture
def tutor(db):
    return Profile.objects.create(name="Children's tutor", slug="tutor", audience="Ages 8–12")


@pytest.fixture
def triage(db):
    return Profile.objects.create(name="Clinical triage", slug="triage")


def member(username: str, *grants: tuple[Role, Profile]):
    user = make_user(username)
    for role, profile in grants:
        grant_role(user, role, profile)
    return user


def test_category_names_are_unique_within_a_profile_not_across(tutor, triage):
    kids = curation.category_create(
        name="Health, Physical and Mental", position="Say: ask a grown-up.", profile=tutor
    )
    clinic = curation.category_create(
        name="Health, Physical and Mental", position="Triage by urgency.", profile=triage
    )
    assert kids.slug == clinic.slug == "health-physical-and-mental" and kids.pk != clinic.pk
    with pytest.raises(CurationError, match="already exists in this profile"):
        curation.category_create(
            name="health, physical and mental", position="Again.", profile=tutor
        )
    assert curation.load_palms_preset(profile=triage) == (7, 1)  # its own Health stays


def test_roles_hold_per_profile(tutor, triage):
    user = member("ana", (Role.CURATOR, tutor), (Role.RATER, triage))
    assert has_role(user, Role.CURATOR, profile=tutor)
    assert not has_role(user, Role.CURATOR, profile=triage)
    assert user_roles(user) == {Role.CURATOR, Role.RATER}
    mine = curation.dataset_create(name="Tutor answers", profile=tutor)
    theirs = curation.dataset_create(name="Triage answers", profile=triage)
    client = client_for(user)
    assert client.get(reverse("curation:dataset-edit", args=[mine.pk])).status_code == 200
    # A member of the other profile, but not its curator: refused, with the reason.
    assert client.get(reverse("curation:dataset-edit", args=[theirs.pk])).status_code == 403


def test_a_sample_keeps_to_its_datasets_profile(tutor, triage):
    curator = member("bo", (Role.CURATOR, tutor))
    dataset = curation.dataset_create(name="Tutor answers", profile=tutor)
    foreign = curation.category_create(
        name="Health, Physical and Mental", position="Triage.", profile=triage
    )
    with pytest.raises(CurationError, match="another value profile"):
        curation.sample_create(dataset=dataset, category=foreign, question="Q?", answer="A.")
    client = client_for(curator)
    body = {"dataset": dataset.pk, "category": foreign.pk, "question": "Q?", "answer": "A."}
    response = client.post("/api/samples/", body, content_type="application/json")
    assert response.status_code == 400 and "category" in response.json()
    assert not Sample.objects.exists()


def test_the_rater_pool_takes_raters_of_the_studys_profile_only(db, triage):
    from tests.evaluation.conftest import build_study

    setup = build_study(raters=1, raters_per_output=1, rater_prefix="pool")
    outsider_rater = member("cy", (Role.RATER, triage))
    with pytest.raises(EvaluationError, match="Only raters of this study's value profile"):
        lifecycle.study_update_live(
            study=setup.study, rubric=setup.study.rubric,
            raters=[*setup.raters, outsider_rater],
        )  # fmt: skip
    assert outsider_rater not in rater_pool_candidates(setup.study.profile_id)


def test_pages_work_in_the_active_profile_and_switch(tutor, triage):
    user = member("di", (Role.CURATOR, tutor), (Role.CURATOR, triage))
    curation.category_create(name="Kindness", position="Be kind.", profile=tutor)
    curation.category_create(name="Urgency", position="Triage.", profile=triage)
    client = client_for(user)
    first = client.get(reverse("curation:category-list")).content.decode()
    assert "Kindness" in first and "Urgency" not in first  # "Children's tutor" sorts first
    response = client.post(
        reverse("profile-switch"), {"profile": triage.pk, "next": "/curation/categories/"}
    )
    assert response.status_code == 302 and response["Location"] == "/curation/categories/"
    after = client.get(reverse("curation:category-list")).content.decode()
    assert "Urgency" in after and "Kindness" not in after
    created = client.post(
        reverse("curation:category-create"),
        {"name": "Dosage", "position": "Never guess.", "target_count": 10},
    )
    assert created.status_code == 302
    assert Category.objects.get(name="Dosage").profile == triage
    # A profile the user is not in cannot be switched to.
    stranger = Profile.objects.create(name="Elsewhere", slug="elsewhere")
    assert client.post(reverse("profile-switch"), {"profile": stranger.pk}).status_code == 404


def test_api_creation_names_its_profile_when_the_user_curates_in_several(tutor, triage):
    user = member(
        "ed", (Role.CURATOR, tutor), (Role.CURATOR, triage), (Role.RATER, Profile.objects.default())
    )
    headers = {"HTTP_AUTHORIZATION": f"Token {api_token(user)}"}
    client = client_for(user)
    body = {"name": "Honesty", "position": "Do not lie."}
    vague = client.post("/api/categories/", body, content_type="application/json", **headers)
    assert vague.status_code == 400 and "profile" in vague.json()
    named = client.post(
        "/api/categories/", {**body, "profile": triage.pk}, content_type="application/json"
    )
    assert named.status_code == 201 and named.json()["profile"] == triage.pk
    # A profile where the user only rates is not one they can write to.
    rater_only = client.post(
        "/api/categories/", {**body, "profile": Profile.objects.default().pk},
        content_type="application/json",
    )  # fmt: skip
    assert rater_only.status_code == 400
    listed = client.get("/api/categories/", {"profile": tutor.pk}).json()
    assert listed["count"] == 0
    assert client.get("/api/categories/").json()["count"] == 1


def test_admins_manage_profiles_and_members_from_pages_and_api(db):
    admin = make_user("root", Role.ADMIN, staff=True)
    make_user("fay")
    client = client_for(admin)
    created = client.post(reverse("profile-new"), {"name": "Clinical triage", "audience": "Nurses"})
    profile = Profile.objects.get(name="Clinical triage")
    assert created.status_code == 302 and profile.slug == "clinical-triage"
    added = client.post(
        reverse("profile-membership-add", args=[profile.pk]), {"username": "fay", "role": "rater"}
    )
    assert added.status_code == 302
    membership = Membership.objects.get(profile=profile, user__username="fay")
    unknown = client.post(
        reverse("profile-membership-add", args=[profile.pk]),
        {"username": "nobody", "role": "rater"},
    )
    assert unknown.status_code == 400 and b"No user named" in unknown.content
    page = client.get(reverse("profile-edit", args=[profile.pk])).content.decode()
    assert "fay" in page and "Nurses" in page
    client.post(reverse("profile-membership-remove", args=[membership.pk]))
    assert not Membership.objects.filter(pk=membership.pk).exists()
    # The same through the API.
    api = client.post("/api/profiles/", {"name": "Tutor"}, content_type="application/json")
    assert api.status_code == 201
    pk = api.json()["id"]
    members = f"/api/profiles/{pk}/members/"
    joined = client.post(
        members, {"username": "fay", "role": "curator"}, content_type="application/json"
    )
    assert joined.status_code == 201
    assert client.get(members).json()["results"] == [joined.json()]
    assert client.delete(f"{members}{joined.json()['id']}/").status_code == 204
    admin_role = client.post(
        members, {"username": "fay", "role": "admin"}, content_type="application/json"
    )
    assert admin_role.status_code == 400  # admin is site-wide, not a membership
    # Non-admins may list their own profiles, not manage any.
    fay = client_for(make_user("gus", Role.CURATOR))
    assert [p["slug"] for p in fay.get("/api/profiles/").json()["results"]] == ["default"]
    assert (
        fay.post("/api/profiles/", {"name": "X"}, content_type="application/json").status_code
        == 403
    )
    assert fay.get(reverse("profile-new")).status_code == 403


def test_create_user_puts_roles_in_the_named_profile(triage):
    out = io.StringIO()
    call_command(
        "create_user",
        "hal",
        "--role",
        "rater",
        "--profile",
        "triage",
        "--password",
        "x-Long-enough-9",
        stdout=out,
    )
    assert "rater in Clinical triage" in out.getvalue()
    assert Membership.objects.filter(user__username="hal", profile=triage, role="rater").exists()
    with pytest.raises(Exception, match="No profile 'nowhere'"):
        call_command("create_user", "ivy", "--role", "rater", "--profile", "nowhere", stdout=out)


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_group_roles_into_the_default_profile():
    """Roles were site-wide groups before profiles: every holder keeps the role, in the
    default profile, and every existing category moves there."""
    before = [("palmsweb", None), ("curation", "0004_position_versions")]
    after = [("palmsweb", "0002_default_profile_memberships"), ("curation", "0005_profiles")]
    executor = MigrationExecutor(connection)
    try:
        executor.migrate(before)
        old = executor.loader.project_state(before[1:]).apps
        Group, User = old.get_model("auth", "Group"), old.get_model("auth", "User")
        user = User.objects.create(username="old-curator")
        Group.objects.get_or_create(name="curator")[0].user_set.add(user)
        old.get_model("curation", "Category").objects.create(name="Old", slug="old", position="P.")
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        new = executor.loader.project_state(after).apps
        default = new.get_model("palmsweb", "Profile").objects.get(slug="default")
        memberships = new.get_model("palmsweb", "Membership").objects.filter(
            user__username="old-curator"
        )
        assert [(m.profile_id, m.role) for m in memberships] == [(default.pk, "curator")]
        assert (
            new.get_model("curation", "Category").objects.get(name="Old").profile_id == default.pk
        )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def test_two_profiles_studies_compare_by_category_name_and_by_lead_only(db, no_queue):  # noqa: F811
    """The clinic copies study A's prompt set into its own profile (each prompt into its
    category of the same name) and rates it with its own fine-tune of the same base model."""
    first, second, clinic = two_profiles_studies()
    assert second.prompt_set.copied_from == first.prompt_set
    assert second.prompt_set.profile == clinic != first.prompt_set.profile
    names = sorted(
        c.name
        for c in Category.objects.filter(eval_prompts__prompt_set=first.prompt_set).distinct()
    )
    comparison = compare_studies(first, second)
    assert comparison.cross_profile and comparison.same_base_model
    assert sorted(r.category.name for r in comparison.rows) == names
    assert comparison.overlap.same_prompts and comparison.warnings == []
    for row in comparison.rows:
        assert row.test is None and row.p_holm is None  # different positions: no raw test
        # each side is that study's own lead over its base, as its own report gives it
        assert row.gap_a == pytest.approx(row.lead_a.mean_diff)
        assert row.gap_b == pytest.approx(row.lead_b.mean_diff)
        assert row.gap_b > row.gap_a > 0
        assert row.position_b.text == f"Triage {row.category.name} by urgency."
    assert "Same model, different values" in comparison.summary
    researcher = make_user("both-profiles", Role.RESEARCHER)
    grant_role(researcher, Role.RESEARCHER, clinic)
    page = client_for(researcher).get(
        reverse("evaluation:study-compare"), {"a": first.pk, "b": second.pk}
    )
    assert page.status_code == 200 and b"Two value profiles" in page.content
    # A researcher of one profile only cannot pick the other's study.
    single = client_for(make_user("one-profile", Role.RESEARCHER)).get(
        reverse("evaluation:study-compare"), {"a": first.pk, "b": second.pk}
    )
    assert single.status_code == 404
    assert f'value="{second.pk}"'.encode() not in single.content


def test_a_finetune_records_its_snapshots_profile(tutor, no_training_queue, tmp_path):
    from training import services as training
    from training.models import BaseModel

    admin = make_user("root", Role.ADMIN, staff=True)
    dataset = curation.dataset_create(name="Tutor answers", profile=tutor)
    category = curation.category_create(name="Kindness", position="Be kind.", profile=tutor)
    curation.sample_create(
        dataset=dataset, category=category, question="Q?", answer=words(50),
        status=Sample.Status.APPROVED,
    )  # fmt: skip
    (tmp_path / "config.json").write_text("{}")
    base = training.base_model_create(
        name="tiny-dir", kind=BaseModel.Kind.LOCAL_DIR, path=str(tmp_path), parameter_count=10
    )
    job = training.finetune_launch(
        base_model=base, snapshot=curation.snapshot_create(dataset=dataset)
    )
    client = client_for(admin)
    assert client.get(f"/api/finetunes/{job.pk}/").json()["profile"] == tutor.pk
    page = client.get(reverse("training:finetune-detail", args=[job.pk])).content.decode()
    assert "Children&#x27;s tutor" in page or "Children's tutor" in page


def test_another_profiles_fine_tunes_and_sweeps_do_not_exist_for_a_member(
    tutor, triage, no_training_queue, tmp_path
):
    """A job trained on a snapshot names its dataset: it is the snapshot's profile's, so a
    curator of another profile sees it in no list and gets 404 for it, page and API."""
    from training import services as training
    from training.models import BaseModel

    dataset = curation.dataset_create(name="Tutor answers", profile=tutor)
    category = curation.category_create(name="Kindness", position="Be kind.", profile=tutor)
    curation.sample_create(
        dataset=dataset, category=category, question="Q?", answer=words(50),
        status=Sample.Status.APPROVED,
    )  # fmt: skip
    (tmp_path / "config.json").write_text("{}")
    base = training.base_model_create(
        name="tiny-dir", kind=BaseModel.Kind.LOCAL_DIR, path=str(tmp_path), parameter_count=10
    )
    snapshot = curation.snapshot_create(dataset=dataset)
    curation.sample_create(
        dataset=dataset, category=category, question="Q2?", answer=words(60),
        status=Sample.Status.APPROVED,
    )  # fmt: skip
    held_out = curation.snapshot_create(dataset=dataset)
    job = training.finetune_launch(base_model=base, snapshot=snapshot)
    sweep = training.sweep_launch(
        base_model=base, snapshot=snapshot, grid={"learning_rate": [1e-4], "epochs": [1],
                                                  "method": ["full"]}, max_runs=1,
        validation_snapshot=held_out,
    )  # fmt: skip
    insider = member("tia", (Role.CURATOR, tutor))
    outsider = member("oli", (Role.CURATOR, triage))
    for user, visible in ((insider, True), (outsider, False)):
        client = client_for(user)
        token = {"HTTP_AUTHORIZATION": f"Token {api_token(user)}"}
        listed = client.get(reverse("training:finetune-list")).content.decode()
        assert ("Tutor answers" in listed) is visible
        sweeps = client.get(reverse("training:sweep-list")).content.decode()
        assert ("Tutor answers" in sweeps) is visible
        api_jobs = {row["id"] for row in client.get("/api/finetunes/", **token).json()["results"]}
        assert (job.pk in api_jobs) is visible
        api_sweeps = {row["id"] for row in client.get("/api/sweeps/", **token).json()["results"]}
        assert (sweep.pk in api_sweeps) is visible
        expected = 200 if visible else 404
        for name, pk in (("training:finetune-detail", job.pk), ("training:sweep-detail", sweep.pk)):
            assert client.get(reverse(name, args=[pk])).status_code == expected
        assert client.get(f"/api/finetunes/{job.pk}/", **token).status_code == expected
        assert client.get(f"/api/sweeps/{sweep.pk}/", **token).status_code == expected



@pytest.mark.parametrize("upgraded", [False, True])
def test_seed_demo_loads_one_copy_of_the_demo_and_its_accounts_belong_where_it_is(
    db, settings, tmp_path, upgraded
):
    """A fresh install gets the demo in "PALMS demo"; an install upgraded from before
    profiles, whose demo datasets the upgrade moved into Default, keeps it there rather than
    load a second copy, so the demo accounts hold roles in one profile only."""
    from curation.demo import DEMO_PROFILE_SLUG, VALUES_TARGETED, load_demo_content
    from palmsweb.roles import memberships

    settings.VAR_DIR = tmp_path  # where demo-accounts.json goes
    settings.EMBEDDED = True  # demo accounts exist only there (this also runs on PostgreSQL)
    default = Profile.objects.default()
    if upgraded:  # as the upgrade left it: datasets older than the profile they moved into
        load_demo_content(user=None, profile=default)
        Dataset.objects.filter(profile=default).update(
            created_at=default.created_at - timedelta(days=30)
        )
    call_command("seed_demo", stdout=io.StringIO())
    home = default if upgraded else Profile.objects.get(slug=DEMO_PROFILE_SLUG)
    assert Profile.objects.filter(slug=DEMO_PROFILE_SLUG).exists() is not upgraded
    copies = Dataset.objects.filter(name=VALUES_TARGETED.name)
    assert list(copies.values_list("profile", flat=True)) == [home.pk]
    for username in ("curator", "rater1", "researcher"):
        user = get_user_model().objects.get(username=username)
        assert set(memberships(user)) == {home.pk}, username
