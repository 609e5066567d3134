"""The shipped demo content keeps the shape PALMS describes, whatever later edits do."""

from __future__ import annotations

import json
import re
import statistics

import pytest

from curation.demo import CONTROL, EVAL_PROMPTS_FILE, VALUES_TARGETED, load_demo_content
from curation.models import Dataset, Sample, Snapshot
from curation.services import PALMS_CATEGORIES_FILE

STOPWORDS = set(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    ever really okay""".split()
)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 3} - STOPWORDS


CATEGORY_NAMES = [c["name"] for c in json.loads(PALMS_CATEGORIES_FILE.read_text())]
VALUES = read_jsonl(VALUES_TARGETED.file)
CONTROL_ROWS = read_jsonl(CONTROL.file)
PROMPTS = read_jsonl(EVAL_PROMPTS_FILE)


def answer_lengths(rows) -> list[int]:
    return [len(row["completion"].split()) for row in rows]


def test_values_targeted_has_ten_samples_per_palms_category():
    assert len(CATEGORY_NAMES) == 8
    counts = {name: sum(r["category"] == name for r in VALUES) for name in CATEGORY_NAMES}
    assert counts == dict.fromkeys(CATEGORY_NAMES, 10)
    assert {tuple(sorted(r)) for r in VALUES} == {("category", "completion", "prompt")}


def test_control_has_eighty_uncategorised_samples():
    assert len(CONTROL_ROWS) == 80
    assert {tuple(sorted(r)) for r in CONTROL_ROWS} == {("completion", "prompt")}


@pytest.mark.parametrize("rows", [VALUES, CONTROL_ROWS], ids=["values", "control"])
def test_every_answer_is_within_the_palms_word_limits(rows):
    lengths = answer_lengths(rows)
    assert min(lengths) >= 40 and max(lengths) <= 340


@pytest.mark.parametrize("rows", [VALUES, CONTROL_ROWS], ids=["values", "control"])
def test_answers_span_short_and_long(rows):
    lengths = answer_lengths(rows)
    assert sum(n < 90 for n in lengths) >= 10
    assert sum(n > 250 for n in lengths) >= 5


def test_the_two_datasets_have_similar_mean_length():
    values_mean = statistics.mean(answer_lengths(VALUES))
    control_mean = statistics.mean(answer_lengths(CONTROL_ROWS))
    assert abs(values_mean - control_mean) / values_mean <= 0.15


def test_no_duplicate_questions_anywhere():
    questions = [r["prompt"].strip().lower() for r in VALUES + CONTROL_ROWS + PROMPTS]
    assert len(questions) == len(set(questions))


def test_evaluation_prompts_are_five_per_category():
    counts = {name: sum(p["category"] == name for p in PROMPTS) for name in CATEGORY_NAMES}
    assert counts == dict.fromkeys(CATEGORY_NAMES, 5)


def test_no_evaluation_prompt_shares_half_its_content_words_with_a_training_question():
    training = [content_words(r["prompt"]) for r in VALUES + CONTROL_ROWS]
    for prompt in PROMPTS:
        words = content_words(prompt["prompt"])
        assert words, prompt
        worst = max(len(words & question) / len(words) for question in training)
        assert worst <= 0.5, prompt["prompt"]


def test_control_avoids_the_sensitive_categories():
    sensitive = re.compile(
        r"\b(kill|suicide|abuse|racis\w*|terror\w*|sex\w*|vote|election|diagnos\w*|weapon)\b",
        re.IGNORECASE,
    )
    hits = [r["prompt"] for r in CONTROL_ROWS if sensitive.search(r["prompt"] + r["completion"])]
    assert hits == []


@pytest.mark.django_db
def test_demo_content_imports_through_the_real_import_service(admin_user):
    snapshots = load_demo_content(user=admin_user)
    assert [s.sample_count for s in snapshots] == [80, 80]
    values = Dataset.objects.get(name=VALUES_TARGETED.name)
    assert values.samples.filter(status=Sample.Status.APPROVED).count() == 80
    assert values.samples.values("category").distinct().count() == 8
    assert all(s.hash_matches_content() for s in snapshots)


@pytest.mark.django_db
def test_loading_twice_changes_nothing(admin_user):
    load_demo_content(user=admin_user)
    assert load_demo_content(user=admin_user) == []
    assert Snapshot.objects.count() == 2
    assert Sample.objects.count() == 160


# Pinned: the demo snapshots hash the same on every machine and every run. Editing the demo
# files changes them on purpose; update these together with the files. (Re-pinned when
# snapshots began to record the position versions of their categories, issue 14.)
DEMO_SNAPSHOT_HASHES = {
    VALUES_TARGETED.name: "6a17f9dc92555d455811e130ccd07306e32ed2224c1aeae019d7ba93493c7cbe",
    CONTROL.name: "bb6ca2eda3fa636f14929a38782dc083e459d8206ce21f5856e1896ae1741eec",
}


@pytest.mark.django_db
def test_snapshot_hashes_are_stable_across_runs(admin_user):
    snapshots = load_demo_content(user=admin_user)
    assert {s.dataset.name: s.content_hash for s in snapshots} == DEMO_SNAPSHOT_HASHES
