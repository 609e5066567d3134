"""Two curators save the same version of a sample at the same moment: exactly one wins,
and the other's text is kept. Real threads, real connections, real transactions."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from curation import services
from curation.models import Sample, StaleEdit
from curation.services import StaleEditError
from tests.factories import words

RACERS = 2


def race(sample_id: int, base_version: int, users, category) -> list:
    """Run one save per user, all released at once; return each result or exception."""
    barrier = threading.Barrier(len(users))
    results: list = [None] * len(users)

    def save(index: int, user) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = services.sample_update(
                sample_id=sample_id, base_version=base_version,
                question=f"Question by {user.username}", answer=f"Answer by {user.username}",
                category=category, user=user,
            )
        except Exception as exc:  # noqa: BLE001 - the test inspects whatever happened
            results[index] = exc
        finally:
            connections.close_all()  # each thread opened its own connection

    threads = [threading.Thread(target=save, args=(i, u)) for i, u in enumerate(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(3))
def test_concurrent_saves_exactly_one_wins_and_the_other_is_kept(curator, curator2, round_):
    dataset = services.dataset_create(name="Race")
    category = services.category_create(name="Race category", position="x")
    sample = services.sample_create(
        dataset=dataset, question="Original?", answer=words(50), category=category,
        user=curator,
    )

    results = race(sample.pk, sample.version, [curator, curator2], category)

    winners = [r for r in results if isinstance(r, Sample)]
    losers = [r for r in results if isinstance(r, StaleEditError)]
    assert len(winners) == 1 and len(losers) == 1, results
    winner, loser = winners[0], losers[0]

    sample.refresh_from_db()
    assert sample.version == 2
    assert sample.question == winner.question
    assert loser.current.version == 2
    assert loser.current.question == winner.question

    kept = StaleEdit.objects.get()
    assert kept == loser.stale_edit
    assert kept.base_version == 1
    assert {kept.question, winner.question} == {"Question by carol", "Question by dave"}
    assert kept.answer == kept.question.replace("Question", "Answer")

    revisions = list(sample.revisions.order_by("number").values_list("number", "question"))
    assert revisions == [(1, "Original?"), (2, winner.question)]


@pytest.mark.django_db(transaction=True)
def test_many_racers_produce_one_revision_each_round(curator, curator2, curator3):
    dataset = services.dataset_create(name="Race")
    sample = services.sample_create(dataset=dataset, question="Q?", answer="A", user=curator)
    users = [curator, curator2, curator3]
    for version in (1, 2, 3):
        results = race(sample.pk, version, users, None)
        assert sum(isinstance(r, Sample) for r in results) == 1, results
        assert sum(isinstance(r, StaleEditError) for r in results) == 2, results
    sample.refresh_from_db()
    assert sample.version == 4
    assert list(sample.revisions.order_by("number").values_list("number", flat=True)) == [
        1, 2, 3, 4,
    ]
    assert StaleEdit.objects.filter(sample=sample).count() == 6
