"""palmsweb.lib.ratings: the tidy table's validation, row-order contract and aggregates."""

from __future__ import annotations

import random

import pytest

from palmsweb.lib.ratings import SORT_KEY, RatingRow, RatingTable


def row(output, prompt, arm, score, rater="R1", category="Health", size="", sample=0):
    return {
        "output_id": output,
        "prompt_id": prompt,
        "arm": arm,
        "category": category,
        "size_tag": size,
        "sample_index": sample,
        "rater": rater,
        "score": score,
    }


# Prompt p1: base outputs 2, 4 (means 2 and 4 -> 3); targeted one output rated 5 and 4.
# Prompt p2: only base.
ROWS = [
    row("o1", "p1", "base", 2, sample=0),
    row("o2", "p1", "base", 4, sample=1),
    row("o3", "p1", "values_targeted", 5, rater="R1"),
    row("o3", "p1", "values_targeted", 4, rater="R2"),
    row("o4", "p2", "base", 3),
]


def test_prompt_means_average_output_means_not_ratings():
    t = RatingTable(ROWS)
    assert t.prompt_means[("p1", ("base", ""))] == 3.0
    assert t.prompt_means[("p1", ("values_targeted", ""))] == 4.5
    # sorted by category, size, arm, prompt, sample: base o1, o2, o4, then targeted o3
    assert [(o.output_id, o.n_ratings) for o in t.output_means] == [
        ("o1", 1),
        ("o2", 1),
        ("o4", 1),
        ("o3", 2),
    ]
    prompts, a, b, unpaired = t.paired(("values_targeted", ""), ("base", ""))
    assert (prompts, a, b, unpaired) == (["p1"], [4.5], [3.0], 1)


def test_rows_are_sorted_by_the_documented_key_whatever_order_they_arrive_in():
    shuffled = ROWS[:]
    random.Random(3).shuffle(shuffled)
    a, b = RatingTable(ROWS), RatingTable(shuffled)
    assert a.rows == b.rows
    keys = [tuple(getattr(r, k) for k in SORT_KEY) for r in a.rows]
    assert keys == sorted(keys)


def test_numbers_sort_before_strings_and_numbers_by_value():
    rows = [row(o, p, "base", 3, category=c) for o, p, c in [(1, 1, "b"), (2, 2, 10), (3, 3, 9)]]
    assert RatingTable(rows).categories == [9, 10, "b"]


def test_accepts_rating_rows_and_labels_arms_by_size():
    rows = [
        RatingRow("o1", "p1", "base", 1, "1B", 0, "R", 3.0),
        RatingRow("o2", "p1", "base", 1, "", 0, "R", 4),
    ]
    t = RatingTable(rows)
    assert t.arms == [("base", ""), ("base", "1B")]
    assert t.size_tags == ["", "1B"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (row("o9", "p9", "base", 6), "outside"),
        (row("o9", "p9", "base", None), "must be a number"),
        (row("o9", "p9", "base", float("nan")), "outside"),
        (row("o9", "p9", "base", True), "must be a number"),
        (row("o1", "p1", "base", 3), "more than once"),
        (row("o1", "p1", "control", 3, rater="R9"), "two different designs"),
        (row("o9", "p1", "base", 3, category="Violence"), "two categories"),
    ],
)
def test_bad_rows_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        RatingTable([*ROWS, bad])


def test_missing_fields_are_named():
    incomplete = dict(ROWS[0])
    del incomplete["prompt_id"]
    with pytest.raises(ValueError, match="prompt_id"):
        RatingTable([incomplete])


def test_subset_filters_by_field_and_refuses_unknown_ones():
    t = RatingTable(ROWS)
    assert len(t.subset(arm="base")) == 3
    with pytest.raises(ValueError, match="unknown"):
        t.subset(colour="red")
