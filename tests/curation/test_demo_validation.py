"""The demo's held-out validation set: 2 samples per PALMS category, within the PALMS word
limits, and sharing no question with the training datasets or the evaluation prompts."""

from __future__ import annotations

import json

import pytest

from curation.demo import (
    CONTROL,
    EVAL_PROMPTS_FILE,
    VALIDATION,
    VALUES_TARGETED,
    load_demo_validation,
)
from curation.models import Dataset
from curation.services import PALMS_CATEGORIES_FILE

from .test_demo_content import content_words, read_jsonl

CATEGORY_NAMES = [c["name"] for c in json.loads(PALMS_CATEGORIES_FILE.read_text())]
ROWS = read_jsonl(VALIDATION.file)
ELSEWHERE = read_jsonl(VALUES_TARGETED.file) + read_jsonl(CONTROL.file)
PROMPTS = read_jsonl(EVAL_PROMPTS_FILE)


def test_two_samples_per_palms_category():
    assert len(ROWS) == 16
    assert {name: sum(r["category"] == name for r in ROWS) for name in CATEGORY_NAMES} == (
        dict.fromkeys(CATEGORY_NAMES, 2)
    )
    assert {tuple(sorted(r)) for r in ROWS} == {("category", "completion", "prompt")}


def test_answers_are_within_the_palms_word_limits():
    assert all(40 <= len(r["completion"].split()) <= 340 for r in ROWS)


def test_no_question_or_answer_is_shared_with_training_or_evaluation():
    mine = {r["prompt"].strip().lower() for r in ROWS}
    others = {r["prompt"].strip().lower() for r in ELSEWHERE + PROMPTS}
    assert len(mine) == 16 and not mine & others
    answers = {r["completion"] for r in ELSEWHERE}
    assert not {r["completion"] for r in ROWS} & answers


def test_no_validation_question_shares_half_its_content_words_with_another_question():
    questions = [content_words(r["prompt"]) for r in ELSEWHERE + PROMPTS]
    for row in ROWS:
        words = content_words(row["prompt"])
        worst = max(len(words & other) / len(words) for other in questions)
        assert worst <= 0.5, row["prompt"]


@pytest.mark.django_db
def test_it_loads_as_a_validation_dataset_and_is_snapshotted_once(admin_user):
    snapshot = load_demo_validation(user=admin_user)
    assert snapshot.sample_count == 16 and snapshot.hash_matches_content()
    assert snapshot.dataset.kind == Dataset.Kind.VALIDATION
    assert load_demo_validation(user=admin_user) is None


@pytest.mark.django_db
def test_seed_demo_loads_it(settings):
    from django.core.management import call_command

    call_command("seed_demo", "--no-accounts")
    assert Dataset.objects.get(name=VALIDATION.name).snapshots.get().sample_count == 16
