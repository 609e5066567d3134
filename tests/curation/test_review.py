"""Honest review: approval needs a reviewer who neither wrote the sample nor revised it
since it was submitted, no unmerged edit waiting, and the version the reviewer read; the
review page shows what changed since submission."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from curation import services
from curation.models import Dataset, Sample
from curation.selectors import review_base_version, review_changes
from curation.services import TransitionError
from tests.conftest import client_for
from tests.factories import words

pytestmark = pytest.mark.django_db

S = Sample.Status


@pytest.fixture
def category():
    return services.category_create(name="Health", position="Suggest seeing a professional.")


@pytest.fixture
def dataset(curator):
    return services.dataset_create(name="Values", user=curator)


def submitted(dataset, author, category, *, answer=None):
    sample = services.sample_create(
        dataset=dataset, question="How do I cope?", answer=answer or words(60, "first"),
        category=category, user=author,
    )
    return services.sample_submit(sample=sample, user=author)


def edit(sample, user, *, answer=None, category="same"):
    sample = Sample.objects.get(pk=sample.pk)
    return services.sample_update(
        sample_id=sample.pk, base_version=sample.version, question=sample.question,
        answer=answer or sample.answer + " more", user=user,
        category=sample.category if category == "same" else category,
    )


# --- services ----------------------------------------------------------------------------


def test_a_curator_who_revised_since_submission_cannot_approve(
    dataset, category, curator, curator2, curator3
):
    sample = submitted(dataset, curator, category)
    edit(sample, curator2, answer=words(62, "rewritten"))
    with pytest.raises(TransitionError, match=r"You saved revision 2 after it was submitted"):
        services.sample_approve(sample=sample, user=curator2)
    assert Sample.objects.get(pk=sample.pk).status == S.IN_REVIEW
    approved = services.sample_approve(sample=sample, user=curator3)
    assert approved.status == S.APPROVED


def test_revisions_before_submission_do_not_disqualify_a_reviewer(
    dataset, category, curator, curator2
):
    sample = services.sample_create(
        dataset=dataset, question="Q?", answer=words(60), category=category, user=curator
    )
    edit(sample, curator2)  # a colleague's help on the draft
    sample = services.sample_submit(sample=Sample.objects.get(pk=sample.pk), user=curator)
    assert review_base_version(sample) == 2
    assert services.sample_approve(sample=sample, user=curator2).status == S.APPROVED


def test_an_approved_sample_edited_is_reviewed_from_the_approved_version(
    dataset, category, curator, curator2, curator3
):
    sample = submitted(dataset, curator, category)
    services.sample_approve(sample=sample, user=curator2)
    edited = edit(sample, curator3)
    assert edited.status == S.IN_REVIEW
    assert review_base_version(edited) == 1
    with pytest.raises(TransitionError, match="after it was submitted"):
        services.sample_approve(sample=edited, user=curator3)
    assert services.sample_approve(sample=edited, user=curator2).status == S.APPROVED


def test_a_new_category_sends_an_approved_sample_back_to_review(
    dataset, category, curator, curator2
):
    other = services.category_create(name="Violence", position="De-escalate.")
    sample = submitted(dataset, curator, category)
    services.sample_approve(sample=sample, user=curator2)
    moved = edit(sample, curator, answer=Sample.objects.get(pk=sample.pk).answer, category=other)
    assert moved.status == S.IN_REVIEW


def test_an_unmerged_edit_blocks_approval_until_resolved(dataset, category, curator, curator2):
    sample = submitted(dataset, curator, category)
    edit(sample, curator)
    with pytest.raises(services.StaleEditError):  # started from version 1, now 2
        services.sample_update(
            sample_id=sample.pk, base_version=1, question="Q?", answer=words(50),
            category=category, user=curator2,
        )
    with pytest.raises(TransitionError, match="1 unmerged edit waits on this sample"):
        services.sample_approve(sample=sample, user=curator2)
    stale = sample.stale_edits.get()
    services.stale_edit_resolve(stale_edit=stale)
    assert services.sample_approve(sample=sample, user=curator2).status == S.APPROVED


def test_approving_a_version_that_changed_meanwhile_is_refused(
    dataset, category, curator, curator2
):
    sample = submitted(dataset, curator, category)
    read = sample.version
    edit(sample, curator)  # the author changes it while curator2 reads version 1
    with pytest.raises(TransitionError, match="you read version 1, it is now version 2"):
        services.sample_approve(sample=sample, user=curator2, version=read)
    approved = services.sample_approve(sample=sample, user=curator2, version=2)
    assert approved.status == S.APPROVED


def test_self_approval_datasets_waive_the_independent_reviewer_rules(dataset, category, curator):
    services.dataset_update(dataset=dataset, allow_self_approval=True)
    sample = submitted(dataset, curator, category)
    edit(sample, curator)
    assert services.sample_approve(sample=sample, user=curator).status == S.APPROVED


def test_content_problems_list_what_approval_refuses_whoever_reviews(dataset, curator):
    sample = services.sample_create(
        dataset=dataset, question="Q?", answer=words(12), category=None, user=curator
    )
    problems = services.content_problems(sample)
    assert problems == [
        "The answer has 12 words; this dataset needs 40–340.",
        "A values-targeted sample needs a category.",
    ]
    control = services.dataset_create(name="Control", kind=Dataset.Kind.CONTROL)
    fine = services.sample_create(dataset=control, question="Q?", answer=words(50), user=curator)
    assert services.content_problems(fine) == []


def test_review_changes_diff_from_the_submitted_version(dataset, category, curator, curator2):
    sample = submitted(dataset, curator, category, answer=words(60, "old"))
    assert not review_changes(sample).changed
    edit(sample, curator2, answer=words(60, "new"))
    changes = review_changes(Sample.objects.get(pk=sample.pk))
    assert (changes.base_version, changes.current_version) == (1, 2)
    assert changes.reviser_ids == {curator2.pk}
    kinds = {part.kind for part in changes.diff.answer}
    assert {"insert", "delete"} <= kinds


# --- pages ---------------------------------------------------------------------------------


def url(name, *args):
    return reverse(f"curation:{name}", args=args)


def test_review_page_shows_what_changed_since_submitted(
    dataset, category, curator, curator2, curator3
):
    sample = submitted(dataset, curator, category, answer=words(60, "old"))
    edit(sample, curator2, answer=words(60, "new"))
    html = client_for(curator3).get(url("sample-detail", sample.pk)).content.decode()
    assert 'id="changed-since-submitted"' in html
    assert "Submitted as version 1; now version 2." in html
    assert "<del>old" in html and "<ins>new" in html
    assert f"revision 2 by <strong>{curator2.username}</strong>" in html
    # The reviser sees why they may not approve, and the button is disabled.
    html = client_for(curator2).get(url("sample-detail", sample.pk)).content.decode()
    assert "You saved revision 2 after it was submitted" in html
    assert '<button type="submit" class="primary" disabled>Approve</button>' in html


def test_review_page_says_when_nothing_changed(dataset, category, curator, curator2):
    sample = submitted(dataset, curator, category)
    html = client_for(curator2).get(url("sample-detail", sample.pk)).content.decode()
    assert "Unchanged since it was submitted (version 1)." in html
    assert '<input type="hidden" name="version" value="1">' in html


def test_approving_from_a_stale_page_is_refused(dataset, category, curator, curator2):
    sample = submitted(dataset, curator, category)
    edit(sample, curator)
    response = client_for(curator2).post(
        url("sample-approve", sample.pk), {"version": 1}, follow=True
    )
    assert "you read version 1, it is now version 2" in response.content.decode()
    assert Sample.objects.get(pk=sample.pk).status == S.IN_REVIEW


def test_draft_page_lists_what_approval_will_refuse(dataset, curator):
    sample = services.sample_create(
        dataset=dataset, question="Q?", answer=words(12), category=None, user=curator
    )
    html = client_for(curator).get(url("sample-detail", sample.pk)).content.decode()
    assert 'id="submit-problems"' in html
    assert "The answer has 12 words; this dataset needs 40–340." in html
    assert "Submit anyway" in html


def test_draft_page_says_ready_when_nothing_would_be_refused(dataset, category, curator):
    sample = services.sample_create(
        dataset=dataset, question="Q?", answer=words(50), category=category, user=curator
    )
    html = client_for(curator).get(url("sample-detail", sample.pk)).content.decode()
    assert 'id="submit-ready"' in html and 'id="submit-problems"' not in html


# --- API -----------------------------------------------------------------------------------


def api(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def test_api_approval_check_and_versioned_approve(dataset, category, curator, curator2, curator3):
    sample = submitted(dataset, curator, category)
    edit(sample, curator2)
    check = api(curator2).get(f"/api/samples/{sample.pk}/approval-check/").json()
    assert check["can_approve"] is False
    assert check["changed_since_submitted"] is True
    assert check["revised_since_submitted_by"] == [curator2.username]
    assert "You saved revision 2" in check["reviewer_problems"][0]
    assert check["content_problems"] == []

    check = api(curator3).get(f"/api/samples/{sample.pk}/approval-check/").json()
    assert (check["can_approve"], check["review_base_version"], check["version"]) == (True, 1, 2)

    stale = api(curator3).post(f"/api/samples/{sample.pk}/approve/", {"version": 1},
                               format="json")
    assert stale.status_code == 400
    assert "it is now version 2" in stale.json()["detail"]
    done = api(curator3).post(f"/api/samples/{sample.pk}/approve/", {"version": 2},
                              format="json")
    assert done.status_code == 200 and done.json()["status"] == "approved"


def test_api_reviser_cannot_approve(dataset, category, curator, curator2):
    sample = submitted(dataset, curator, category)
    edit(sample, curator2)
    response = api(curator2).post(f"/api/samples/{sample.pk}/approve/", {}, format="json")
    assert response.status_code == 400
    assert "after it was submitted" in response.json()["detail"]
