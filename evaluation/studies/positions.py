"""The position versions a study freezes when it opens: what its raters read, what the
report, the HTML document and the exports record, and which were edited since.

A curator may edit a category's position while a study is rating; its raters keep judging
against the version frozen at opening, and the study page says a newer one exists. Position
text names no arm, so all of this is fine to show raters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Max

from curation.categories import current_position_version
from curation.models import Category, PositionVersion
from evaluation.models import Study


def freeze_positions(study: Study, categories: Iterable[Category]) -> None:
    """Record the current position version of each category (called at opening)."""
    versions = [current_position_version(category) for category in set(categories)]
    study.position_versions.set(versions)


def frozen_versions(study: Study) -> list[PositionVersion]:
    """The versions the study froze, in the categories' display order."""
    return list(
        study.position_versions.select_related("category").order_by(
            "category__order", "category__name"
        )
    )


def frozen_numbers(study: Study) -> dict[int, int]:
    """Category id → the number of the version the study froze (the exports' column)."""
    return dict(study.position_versions.values_list("category_id", "number"))


def position_text(study: Study, category: Category) -> str:
    """The position this study's raters judge ``category`` against: the frozen version's
    text, or the live text for a study that froze none (not opened yet)."""
    frozen = (
        study.position_versions.filter(category_id=category.pk)
        .values_list("position", flat=True)
        .first()
    )
    return category.position if frozen is None else frozen


def task_position(study: Study, output) -> str:
    """The position shown with a rating task. A claim's query reads it with the task
    (``output.task_position``: the rater's hot path pays no query for it); an output loaded
    any other way asks :func:`position_text`."""
    known = getattr(output, "task_position", None)
    return known if known is not None else position_text(study, output.prompt.category)


@dataclass(frozen=True)
class PositionEdit:
    """A category whose position has a newer version than the one the study froze."""

    category: str
    frozen: int
    latest: int

    def __str__(self) -> str:
        return (
            f"Position of {self.category} edited since this study opened: "
            f"v{self.frozen} → v{self.latest}"
        )


def positions_edited_since_opening(
    study: Study, frozen: list[PositionVersion] | None = None
) -> list[PositionEdit]:
    frozen = frozen_versions(study) if frozen is None else frozen
    latest = dict(
        PositionVersion.objects.filter(category_id__in=[v.category_id for v in frozen])
        .values("category_id")
        .annotate(latest=Max("number"))
        .values_list("category_id", "latest")
    )
    return [
        PositionEdit(version.category.name, version.number, latest[version.category_id])
        for version in frozen
        if latest.get(version.category_id, 0) > version.number
    ]


def position_records(study: Study, frozen: list[PositionVersion] | None = None) -> list[dict]:
    """The frozen versions as the bundle's positions.json and the manifest carry them
    (``frozen``: already read by the caller)."""
    return [
        {
            "category": version.category.name,
            "version": version.number,
            "position": version.position,
            "guidance": version.guidance,
            "sha256": version.position_sha256,
        }
        for version in (frozen_versions(study) if frozen is None else frozen)
    ]


def profile_record(study: Study) -> dict:
    """The study's value profile (its prompt set's) as the bundle manifest names it, so the
    positions in positions.json are tied to their application context."""
    profile = study.prompt_set.profile
    return {"id": profile.pk, "name": profile.name, "slug": profile.slug,
            "audience": profile.audience}  # fmt: skip
