"""Issue 14, items 2–3, in headless Chromium: an admin makes a second value profile and
adds a curator to it; the curator, who also curates the default profile, switches profiles
from the top bar, sees only that profile's categories, loads the PALMS preset into it, and
never sees the other profile's category."""

from __future__ import annotations

import pytest

from curation import services as curation
from curation.models import Category
from palmsweb.models import Profile
from palmsweb.roles import Role
from tests.conftest import make_user

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_an_admin_adds_a_profile_and_its_curator_works_in_it(new_page, login, screenshot):
    expect = pytest.importorskip("playwright.sync_api").expect
    curation.category_create(name="Homework help", position="Hint, never solve.")
    admin = make_user("ada", Role.ADMIN, staff=True)
    curator = make_user("cleo", Role.CURATOR)

    desk = new_page()
    login(desk, admin)
    desk.goto("/profiles/")
    desk.get_by_role("link", name="New profile").click()
    desk.fill("input[name=name]", "Clinical triage")
    desk.fill("input[name=audience]", "Nurses on a night shift")
    desk.get_by_role("button", name="Create").click()
    expect(desk.locator("h1")).to_have_text("Clinical triage")
    desk.fill("input[name=username]", "cleo")
    desk.select_option("select[name=role]", "curator")
    desk.get_by_role("button", name="Add").click()
    expect(desk.locator("#members")).to_contain_text("cleo")
    screenshot(desk, "14-2-profile-members")

    page = new_page()
    login(page, curator)
    page.goto("/curation/categories/")
    page.select_option("#profile-switch-select", label="Default")
    page.wait_for_load_state()
    expect(page.locator("main")).to_contain_text("Homework help")
    page.select_option("#profile-switch-select", label="Clinical triage")
    page.wait_for_load_state()
    expect(page.locator("#profile-switch-select option:checked")).to_have_text("Clinical triage")
    expect(page.locator("main")).not_to_contain_text("Homework help")
    page.get_by_role("button", name="Load PALMS preset").click()
    expect(page.locator("main")).to_contain_text("Health, Physical and Mental")
    expect(page.locator("main")).not_to_contain_text("Homework help")
    screenshot(page, "14-2-profile-switched")
    triage = Profile.objects.get(name="Clinical triage")
    assert Category.objects.filter(profile=triage).count() == 8
    assert Category.objects.filter(profile=Profile.objects.default()).count() == 1
