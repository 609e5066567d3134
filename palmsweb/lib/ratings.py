"""The tidy table of ratings every prompt-level analysis starts from.

One row per completed rating: ``output_id, prompt_id, arm, category, size_tag,
sample_index, rater, score``. ``arm`` is the arm kind (``base``, ``control``,
``values_targeted``); an arm of the study is the pair ``(arm, size_tag)``, written
:data:`ArmKey`. Ids may be ints or strings (an export's public ids, a pseudonym).

**Row order contract.** :class:`RatingTable` sorts its rows by :data:`SORT_KEY` before
anything else happens, so every result (the seeded bootstraps included) depends only on
the *set* of rows, never on the order a query or a CSV file delivered them in. Within a
field numbers sort before strings, numbers by value and strings by code point.

Django-free: the report and ``replay_report`` both build the rows, from the database and
from an export bundle.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from numbers import Real
from typing import Any

ArmKey = tuple[str, str]  # (arm kind, size tag)

SORT_KEY = (
    "category",
    "size_tag",
    "arm",
    "prompt_id",
    "sample_index",
    "output_id",
    "rater",
    "score",
)


@dataclass(frozen=True)
class RatingRow:
    output_id: Hashable
    prompt_id: Hashable
    arm: str
    category: Hashable
    size_tag: str
    sample_index: int
    rater: Hashable
    score: float


FIELDS = tuple(f.name for f in fields(RatingRow))


def sort_value(x: Any) -> tuple[int, Any]:
    """A key that orders a mix of numbers and strings: numbers first, by value."""
    if isinstance(x, Real) and not isinstance(x, bool):
        return (0, float(x))
    return (1, str(x))


def _row_key(row: RatingRow) -> tuple:
    return tuple(sort_value(getattr(row, name)) for name in SORT_KEY)


def _as_row(row: RatingRow | Mapping[str, Any], scale: tuple[float, float]) -> RatingRow:
    if not isinstance(row, RatingRow):
        missing = [name for name in FIELDS if name not in row]
        if missing:
            raise ValueError(f"a rating row needs {', '.join(missing)}")
        row = RatingRow(**{name: row[name] for name in FIELDS})
    score = row.score
    if score is None or isinstance(score, bool) or not isinstance(score, Real):
        raise ValueError(f"output {row.output_id!r}: the score must be a number, got {score!r}")
    score = float(score)
    if not math.isfinite(score) or not scale[0] <= score <= scale[1]:
        raise ValueError(f"output {row.output_id!r}: score {score} is outside {scale}")
    return RatingRow(
        output_id=row.output_id,
        prompt_id=row.prompt_id,
        arm=str(row.arm),
        category=row.category,
        size_tag=str(row.size_tag or ""),
        sample_index=int(row.sample_index),
        rater=row.rater,
        score=score,
    )


@dataclass(frozen=True)
class OutputMean:
    """One output: the mean of its ratings and how many there were."""

    output_id: Hashable
    prompt_id: Hashable
    arm: ArmKey
    category: Hashable
    mean: float
    n_ratings: int


class RatingTable:
    """Validated, sorted ratings with the aggregates the analyses share.

    Refuses (ValueError) a score off the scale or missing, a rater rating one output
    twice, an output whose prompt, arm, category, size or sample changes between rows,
    and a prompt that sits in two categories.
    """

    def __init__(
        self,
        rows: Iterable[RatingRow | Mapping[str, Any]],
        *,
        scale: tuple[float, float] = (1, 5),
    ):
        clean = sorted((_as_row(r, scale) for r in rows), key=_row_key)
        self.scale = scale
        self.rows: tuple[RatingRow, ...] = tuple(clean)
        self._check()

    def _check(self) -> None:
        seen: set[tuple[Hashable, Hashable]] = set()
        where: dict[Hashable, tuple] = {}
        prompt_category: dict[Hashable, Hashable] = {}
        for r in self.rows:
            if (r.output_id, r.rater) in seen:
                raise ValueError(f"rater {r.rater!r} rated output {r.output_id!r} more than once")
            seen.add((r.output_id, r.rater))
            place = (r.prompt_id, r.arm, r.category, r.size_tag, r.sample_index)
            if where.setdefault(r.output_id, place) != place:
                raise ValueError(f"output {r.output_id!r} appears with two different designs")
            if prompt_category.setdefault(r.prompt_id, r.category) != r.category:
                raise ValueError(f"prompt {r.prompt_id!r} appears in two categories")

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, **where: Any) -> RatingTable:
        """The rows whose fields equal the given values, e.g. ``subset(category=3)``."""
        unknown = set(where) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        rows = [r for r in self.rows if all(getattr(r, k) == v for k, v in where.items())]
        return RatingTable(rows, scale=self.scale)

    # ------------------------------------------------------------------ labels

    @cached_property
    def categories(self) -> list[Hashable]:
        return _sorted_unique(r.category for r in self.rows)

    @cached_property
    def arms(self) -> list[ArmKey]:
        return sorted({(r.arm, r.size_tag) for r in self.rows}, key=lambda a: (a[1], a[0]))

    @cached_property
    def size_tags(self) -> list[str]:
        return sorted({r.size_tag for r in self.rows})

    @cached_property
    def raters(self) -> list[Hashable]:
        return _sorted_unique(r.rater for r in self.rows)

    @cached_property
    def prompt_category(self) -> dict[Hashable, Hashable]:
        return {r.prompt_id: r.category for r in self.rows}

    # ------------------------------------------------------------------ aggregates

    @cached_property
    def output_means(self) -> list[OutputMean]:
        """One entry per output, in the table's order."""
        scores: dict[Hashable, list[float]] = defaultdict(list)
        first: dict[Hashable, RatingRow] = {}
        for r in self.rows:
            scores[r.output_id].append(r.score)
            first.setdefault(r.output_id, r)
        return [
            OutputMean(
                output_id=o,
                prompt_id=r.prompt_id,
                arm=(r.arm, r.size_tag),
                category=r.category,
                mean=sum(scores[o]) / len(scores[o]),
                n_ratings=len(scores[o]),
            )
            for o, r in first.items()
        ]

    @cached_property
    def prompt_means(self) -> dict[tuple[Hashable, ArmKey], float]:
        """(prompt, arm) → the mean over that prompt's outputs of their mean ratings:
        the one number per prompt and arm that the prompt-level tests use."""
        cells: dict[tuple[Hashable, ArmKey], list[float]] = defaultdict(list)
        for o in self.output_means:
            cells[(o.prompt_id, o.arm)].append(o.mean)
        return {key: sum(v) / len(v) for key, v in cells.items()}

    def prompts(self, category: Hashable | None = None) -> list[Hashable]:
        """The prompts (of one category, or all), sorted."""
        return _sorted_unique(
            p for p, c in self.prompt_category.items() if category is None or c == category
        )

    def paired(
        self, a: ArmKey, b: ArmKey, category: Hashable | None = None
    ) -> tuple[list[Hashable], list[float], list[float], int]:
        """Prompt means of arms a and b over the prompts rated in both.

        Returns (prompts, a's means, b's means, number of prompts with only one of the
        two arms, which the paired test cannot use)."""
        means = self.prompt_means
        prompts, xs, ys, unpaired = [], [], [], 0
        for p in self.prompts(category):
            x, y = means.get((p, a)), means.get((p, b))
            if x is not None and y is not None:
                prompts.append(p)
                xs.append(x)
                ys.append(y)
            elif x is not None or y is not None:
                unpaired += 1
        return prompts, xs, ys, unpaired


def _sorted_unique(values: Iterable[Hashable]) -> list[Hashable]:
    return sorted(set(values), key=sort_value)
