"""The Django admin (staff) keeps the profile and versioning rules of the app's pages: a
category's, dataset's or prompt set's profile is chosen on add and fixed after, a saved
position becomes a numbered version, a prompt set offers only its profile's categories,
and a study's design (prompt set, frozen positions, and raters once open) is read-only."""

from __future__ import annotations

import re

import pytest
from django.forms import MultiWidget

from curation import services as curation
from curation.models import Category, Dataset, PositionVersion
from evaluation.models import PromptSet, Study
from palmsweb.models import Profile
from palmsweb.roles import Role
from tests.conftest import client_for, make_user
from tests.evaluation.conftest import build_study, no_queue  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    user = make_user("root", Role.ADMIN, staff=True)
    user.is_superuser = True
    user.save(update_fields=["is_superuser"])
    return user


@pytest.fixture
def other_profile():
    return Profile.objects.create(name="Clinical triage", slug="triage")


def change_form(client, url: str) -> dict:
    """The admin form of ``url`` as the browser would post it back unchanged."""
    form = client.get(url).context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if isinstance(field.widget, MultiWidget):  # a date and a time
            parts = field.widget.decompress(value)
            data |= {f"{name}_{n}": "" if part is None else part for n, part in enumerate(parts)}
        elif value is not None and value is not False:
            data[name] = value
    return data


def test_a_category_saved_in_the_admin_versions_its_position_and_keeps_its_profile(
    staff, other_profile
):
    category = curation.category_create(name="Health", position="Be careful.")
    client = client_for(staff)
    url = f"/admin/curation/category/{category.pk}/change/"
    assert 'name="profile"' not in client.get(url).content.decode()
    edit = {"position": "Refer to a doctor.", "profile": other_profile.pk}
    data = change_form(client, url) | edit
    assert client.post(url, data).status_code == 302
    category.refresh_from_db()
    assert category.profile_id == Profile.objects.default().pk
    versions = PositionVersion.objects.filter(category=category).order_by("number")
    assert [(v.number, v.position, v.author) for v in versions] == [
        (1, "Be careful.", None), (2, "Refer to a doctor.", staff),
    ]  # fmt: skip
    assert client.post(url, data).status_code == 302 and versions.count() == 2  # unchanged

    curation.category_create(name="Sexual activity", position="Decline.")
    clash = client.post(url, data | {"name": "sexual ACTIVITY"})
    assert clash.status_code == 200 and "already has one with this name" in clash.content.decode()
    assert Category.objects.get(pk=category.pk).name == "Health"


def test_a_category_added_in_the_admin_goes_to_the_chosen_profile_with_version_1(
    staff, other_profile
):
    client = client_for(staff)
    assert 'name="profile"' in client.get("/admin/curation/category/add/").content.decode()
    body = {"profile": other_profile.pk, "name": "Health", "slug": "health", "order": 0,
            "position": "Triage by urgency.", "guidance": "", "target_count": 10,
            "archived_at_0": "", "archived_at_1": ""}  # fmt: skip
    assert client.post("/admin/curation/category/add/", body).status_code == 302
    added = Category.objects.get(profile=other_profile)
    assert list(added.position_versions.values_list("number", "position")) == [
        (1, "Triage by urgency.")
    ]


def test_a_dataset_never_changes_profile_in_the_admin(staff, other_profile):
    dataset = curation.dataset_create(name="Answers", user=staff)
    client = client_for(staff)
    url = f"/admin/curation/dataset/{dataset.pk}/change/"
    data = change_form(client, url) | {"profile": other_profile.pk, "description": "Edited."}
    assert client.post(url, data).status_code == 302
    dataset.refresh_from_db()
    assert (dataset.profile_id, dataset.description) == (Profile.objects.default().pk, "Edited.")
    assert 'name="profile"' in client.get("/admin/curation/dataset/add/").content.decode()
    assert Dataset.objects.count() == 1


def test_a_prompt_set_keeps_its_profile_and_offers_only_its_categories(staff, other_profile):
    mine = curation.category_create(name="Health", position="Be careful.")
    theirs = curation.category_create(name="Triage", position="Urgency.", profile=other_profile)
    prompt_set = PromptSet.objects.create(name="Prompts")
    client = client_for(staff)
    html = client.get(f"/admin/evaluation/promptset/{prompt_set.pk}/change/").content.decode()
    assert 'name="profile"' not in html
    select = re.search(r'<select name="prompts-__prefix__-category".*?</select>', html, re.S)
    offered = set(re.findall(r'<option value="(\d+)"', select.group()))
    assert str(mine.pk) in offered and str(theirs.pk) not in offered
    add_page = client.get("/admin/evaluation/promptset/add/").content.decode()
    assert 'name="profile"' in add_page and "prompts-TOTAL_FORMS" not in add_page


@pytest.mark.usefixtures("no_queue")
def test_a_studys_design_is_read_only_in_the_admin_and_its_raters_once_open(staff):

    study = build_study(open_rating=False).study
    client = client_for(staff)
    url = f"/admin/evaluation/study/{study.pk}/change/"
    draft = client.get(url).content.decode()
    assert 'name="raters"' in draft
    assert 'name="prompt_set"' not in draft and 'name="position_versions"' not in draft
    Study.objects.filter(pk=study.pk).update(status=Study.Status.RATING)
    rating = client.get(url).content.decode()
    assert 'name="raters"' not in rating and 'name="prompt_set"' not in rating
    assert client.get("/admin/evaluation/study/add/").status_code == 403


def test_a_draft_studys_raters_in_the_admin_are_its_profiles_raters_only(staff, other_profile):
    setup = build_study(open_rating=False)
    study = setup.study
    outsider = make_user("triage-rater")
    other_profile.memberships.create(user=outsider, role=Role.RATER.value)
    client = client_for(staff)
    url = f"/admin/evaluation/study/{study.pk}/change/"
    offered = client.get(url).context["adminform"].form.fields["raters"].queryset
    assert set(offered) == set(setup.raters) and outsider not in offered and staff not in offered
    data = change_form(client, url) | {"raters": [outsider.pk]}
    refused = client.post(url, data)
    assert refused.status_code == 200  # the form again, with its error
    assert "Select a valid choice" in refused.content.decode()
    assert set(study.raters.all()) == set(setup.raters)
