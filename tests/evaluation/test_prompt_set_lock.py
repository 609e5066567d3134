"""Issue 12, item 19: a prompt set is locked exactly while a study uses it, and its pages
say so in the same words."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.urls import reverse

from evaluation.models import PromptSet
from evaluation.studies import lifecycle
from tests.conftest import client_for
from tests.evaluation.conftest import build_study, make_prompt_set

pytestmark = pytest.mark.django_db


def locked(prompt_set) -> bool:
    return PromptSet.objects.get(pk=prompt_set.pk).is_locked


def test_the_lock_follows_the_studies_that_use_the_set(no_queue):
    setup = build_study(open_rating=False)
    first_set = setup.study.prompt_set
    assert locked(first_set)
    twin = lifecycle.study_create(name="Twin", prompt_set=first_set, arms=[
        lifecycle.ArmSpec(arm="base", model_version=setup.versions["base"])
    ], raters=setup.raters)  # fmt: skip
    lifecycle.study_delete(study=twin)
    assert locked(first_set)  # the first study still uses it

    other_set = make_prompt_set()
    assert not locked(other_set)
    study = setup.study
    lifecycle.study_update(
        study=study, name=study.name, description="", prompt_set=other_set,
        arms=[lifecycle.ArmSpec(arm="base", model_version=setup.versions["base"])],
        raters=setup.raters, samples_per_prompt=1, raters_per_output=3, temperature=0.7,
        top_p=0.9, max_new_tokens=50, seed=0, lease_minutes=10, rubric=study.rubric,
    )  # fmt: skip
    assert locked(other_set) and not locked(first_set)  # moved off: editable again
    lifecycle.study_delete(study=study)
    assert not locked(other_set)


def test_pages_call_a_set_locked_only_when_a_study_uses_it(no_queue):
    setup = build_study(open_rating=False)
    unused = make_prompt_set()
    admin = client_for(setup.admin)
    page = admin.get(reverse("evaluation:prompt-set-list")).content.decode()
    used_row = page.split(setup.study.prompt_set.name)[1].split("</tr>")[0]
    unused_row = page.split(unused.name)[1].split("</tr>")[0]
    assert ">locked</span>" in used_row and "Used by 1 study" in used_row
    assert ">editable</span>" in unused_row and "locked" not in unused_row
    detail = admin.get(setup.study.prompt_set.get_absolute_url()).content.decode()
    assert f"used by\n  {setup.study.name}." in detail
    assert "locked" not in admin.get(unused.get_absolute_url()).content.decode().split("<h1>")[1]


def test_the_migration_unlocks_sets_no_study_uses(no_queue):
    setup = build_study(open_rating=False)
    stale = make_prompt_set()
    PromptSet.objects.filter(pk=stale.pk).update(locked_at=setup.study.created_at)
    migration = importlib.import_module("evaluation.migrations.0010_unlock_unused_prompt_sets")
    migration.unlock_unused(apps, None)
    assert not locked(stale) and locked(setup.study.prompt_set)
