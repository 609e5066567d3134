"""curation.access: the one policy the HTML views and the API's permission classes share.
The permissions matrix (tests/palmsweb) checks every URL against it end to end."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from curation import access, services
from curation.importing import pending_import_create


@pytest.fixture
def dataset(curator):
    return services.dataset_create(name="Values", user=curator)


@pytest.mark.parametrize(
    ("persona", "read", "write", "admin"),
    [
        ("curator", True, True, False),
        ("researcher", True, False, False),
        ("admin_user", True, True, True),
        ("rater", False, False, False),
        ("outsider", False, False, False),
    ],
)
def test_each_role_reads_and_writes_what_the_policy_says(request, persona, read, write, admin):
    user = request.getfixturevalue(persona)
    assert access.can_read(user) is read
    assert access.can_write(user) is write
    assert access.can_file_gap_ticket(user) is read
    assert access.can_resolve_gap_ticket(user) is write
    assert access.is_admin(user) is admin


def test_anonymous_users_get_nothing():
    anonymous = AnonymousUser()
    assert not access.can_read(anonymous) and not access.can_write(anonymous)


def test_a_researcher_reads_a_dataset_but_may_not_change_it(researcher, dataset):
    assert access.get_dataset_for_user(researcher, dataset.pk) == dataset
    with pytest.raises(PermissionDenied):
        access.get_dataset_for_user(researcher, dataset.pk, write=True)


def test_a_rater_is_refused_before_the_row_is_looked_up(rater):
    with pytest.raises(PermissionDenied):
        access.get_dataset_for_user(rater, 999_999)


def test_a_missing_row_is_404_for_a_reader(curator):
    with pytest.raises(Http404):
        access.get_sample_for_user(curator, 999_999)


def test_a_pending_import_is_its_uploaders_alone(curator, curator2, dataset):
    pending = pending_import_create(
        dataset=dataset,
        data=b'{"prompt": "P?", "completion": "C."}\n',
        filename="p.jsonl",
        user=curator,
    )
    assert access.get_pending_import_for_user(curator, pending.pk) == pending
    with pytest.raises(Http404):
        access.get_pending_import_for_user(curator2, pending.pk)
