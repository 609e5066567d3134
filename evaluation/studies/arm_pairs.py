"""Which arm pairs a pairwise study compares: every pair of its arms (the default), or a
chosen subset (issue 18, item 1: "all arm pairs … or a chosen subset"). Arms are numbered
from 1 in the order the study lists them, in the form, the API and the study page alike;
the database keeps their ``StudyArm.order`` (from 0) in :class:`ComparedArmPair`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import combinations

from evaluation.errors import EvaluationError
from evaluation.models import ComparedArmPair, Study

_PAIR = re.compile(r"^\s*(\d+)\s*[-–—/]\s*(\d+)\s*$")
FORMAT_HELP = "Arm numbers in the order listed, from 1: “1-2, 1-3”. Blank: every pair."


def parse_arm_pairs(text: str) -> list[tuple[int, int]]:
    """``"1-2, 1-3"`` → ``[(1, 2), (1, 3)]`` (numbers as written, from 1); blank → []."""
    pairs = []
    for part in filter(str.strip, re.split(r"[,;\n]", text or "")):
        match = _PAIR.match(part)
        if not match:
            raise EvaluationError(f"“{part.strip()}” is not an arm pair. {FORMAT_HELP}")
        pairs.append((int(match[1]), int(match[2])))
    return pairs


def format_arm_pairs(pairs: Iterable[tuple[int, int]]) -> str:
    return ", ".join(f"{first}-{second}" for first, second in pairs)


def clean_arm_pairs(pairs: Iterable, *, n_arms: int, mode: str) -> list[tuple[int, int]]:
    """The chosen pairs as sorted ``(first, second)`` arm orders from 0, checked: two
    different arms of the study each, no pair twice. [] means every pair."""
    pairs = [tuple(pair) for pair in pairs or ()]
    if not pairs:
        return []
    if mode != Study.Mode.PAIRWISE:
        raise EvaluationError("Only a pairwise study compares arm pairs.")
    cleaned = set()
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(n, int) for n in pair):
            raise EvaluationError(f"An arm pair is two arm numbers. {FORMAT_HELP}")
        first, second = sorted(pair)
        if first == second:
            raise EvaluationError(f"An arm pair compares two different arms, not {first}-{first}.")
        if first < 1 or second > n_arms:
            raise EvaluationError(f"The study has arms 1 to {n_arms}: {first}-{second} is not.")
        cleaned.add((first - 1, second - 1))
    if len(cleaned) == len(list(combinations(range(n_arms), 2))):
        return []  # every pair: stored as the default
    return sorted(cleaned)


def set_compared_arm_pairs(study: Study, pairs: list[tuple[int, int]]) -> None:
    """Store the cleaned pairs (orders from 0), replacing any before."""
    ComparedArmPair.objects.filter(study=study).delete()
    ComparedArmPair.objects.bulk_create(
        ComparedArmPair(study=study, first=first, second=second) for first, second in pairs
    )


def compared_orders(study: Study) -> set[tuple[int, int]] | None:
    """The compared pairs as arm orders from 0, or None when the study compares every pair."""
    rows = set(study.compared_arm_pairs.values_list("first", "second"))
    return rows or None


def compared_numbers(study: Study) -> list[tuple[int, int]]:
    """The chosen pairs as arm numbers from 1 ([] for every pair), for forms and the API."""
    return [(first + 1, second + 1) for first, second in sorted(compared_orders(study) or ())]


def arm_pair_count(study: Study, n_arms: int | None = None) -> int:
    """How many arm pairs each prompt × sample is judged on."""
    n_arms = study.arms.count() if n_arms is None else n_arms
    chosen = compared_orders(study)
    return len(chosen) if chosen else n_arms * (n_arms - 1) // 2
