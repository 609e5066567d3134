"""Value categories and their positions: create, edit, order, archive, the PALMS preset,
and the numbered versions every edit of a position or its guidance makes.

Snapshots and studies record a :class:`~curation.models.PositionVersion`, never the live
text: :func:`current_position_version` is the one way to get the version that matches what
a category says now (made on the spot for a category whose text changed outside these
workflows, e.g. in the Django admin, or that predates versioning).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.text import slugify

from curation.errors import CurationError
from curation.models import Category, PositionVersion
from palmsweb.models import Profile, profile_pk

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
PALMS_CATEGORIES_FILE = PRESETS_DIR / "palms_categories.json"


# --- categories ------------------------------------------------------------------------


def _unique_slug(name: str, profile_id: int, *, exclude_pk: int | None = None) -> str:
    base = slugify(name)[:100] or "category"
    slug, n = base, 2
    taken = Category.objects.filter(profile_id=profile_id).exclude(pk=exclude_pk)
    while taken.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


def _validate_category_fields(name: str, position: str) -> None:
    if not name.strip():
        raise CurationError("A category needs a name.")
    if not position.strip():
        raise CurationError("A category needs a position: the behaviour you want.")


@transaction.atomic
def category_create(
    *,
    name: str,
    position: str,
    guidance: str = "",
    target_count: int = 10,
    user=None,
    profile: Profile | int | None = None,
) -> Category:
    """Add a category at the end of its profile's order, with its position as version 1.
    Names are unique within a profile: two profiles may each have their own "Health"."""
    _validate_category_fields(name, position)
    profile_id = profile_pk(profile)
    in_profile = Category.objects.filter(profile_id=profile_id)
    if in_profile.filter(name__iexact=name.strip()).exists():
        raise CurationError(f"A category named {name.strip()!r} already exists in this profile.")
    last = in_profile.aggregate(m=Max("order"))["m"]
    category = Category.objects.create(
        profile_id=profile_id,
        name=name.strip(),
        slug=_unique_slug(name, profile_id),
        position=position.strip(),
        guidance=guidance.strip(),
        target_count=target_count,
        order=0 if last is None else last + 1,
    )
    current_position_version(category, user=user)
    return category


@transaction.atomic
def category_update(
    *, category: Category, name: str, position: str, guidance: str, target_count: int, user=None
) -> Category:
    """Save the category; a changed position or guidance becomes a new numbered version
    with ``user`` as its author (an unchanged text makes none)."""
    _validate_category_fields(name, position)
    in_profile = Category.objects.filter(profile_id=category.profile_id)
    if in_profile.filter(name__iexact=name.strip()).exclude(pk=category.pk).exists():
        raise CurationError(f"A category named {name.strip()!r} already exists in this profile.")
    category.name = name.strip()
    category.position = position.strip()
    category.guidance = guidance.strip()
    category.target_count = target_count
    category.save(update_fields=["name", "position", "guidance", "target_count", "updated_at"])
    current_position_version(category, user=user)
    return category


@transaction.atomic
def category_reorder(*, ordered_ids: list[int], profile: Profile | int | None = None) -> None:
    """Set the display order within a profile; ``ordered_ids`` must name every category of
    the profile exactly once."""
    in_profile = Category.objects.filter(profile_id=profile_pk(profile))
    existing = set(in_profile.values_list("pk", flat=True))
    if len(ordered_ids) != len(set(ordered_ids)) or set(ordered_ids) != existing:
        raise CurationError("The new order must list every category of the profile exactly once.")
    for position, pk in enumerate(ordered_ids):
        Category.objects.filter(pk=pk).update(order=position)


def category_move(*, category: Category, offset: int) -> None:
    """Move a category up (-1) or down (+1) among its profile's categories."""
    in_profile = Category.objects.filter(profile_id=category.profile_id)
    ids = list(in_profile.values_list("pk", flat=True))
    index = ids.index(category.pk)
    target = max(0, min(len(ids) - 1, index + offset))
    ids.insert(target, ids.pop(index))
    category_reorder(ordered_ids=ids, profile=category.profile_id)


def category_archive(*, category: Category) -> None:
    if category.archived_at is None:
        category.archived_at = timezone.now()
        category.save(update_fields=["archived_at", "updated_at"])


def category_restore(*, category: Category) -> None:
    if category.archived_at is not None:
        category.archived_at = None
        category.save(update_fields=["archived_at", "updated_at"])


@transaction.atomic
def load_palms_preset(*, user=None, profile: Profile | int | None = None) -> tuple[int, int]:
    """Create the eight PALMS categories missing from ``profile`` (the default profile when
    None). Returns (created, already there).

    Existing categories are never overwritten, so a curator's edits survive a reload.
    """
    presets = json.loads(PALMS_CATEGORIES_FILE.read_text(encoding="utf-8"))
    profile_id = profile_pk(profile)
    created = 0
    for preset in presets:
        if Category.objects.filter(profile_id=profile_id, name=preset["name"]).exists():
            continue
        category_create(
            name=preset["name"],
            position=preset["position"],
            guidance=preset.get("guidance", ""),
            target_count=preset.get("target_count", 10),
            user=user,
            profile=profile_id,
        )
        created += 1
    return created, len(presets) - created


# --- position versions -------------------------------------------------------------------


@transaction.atomic
def current_position_version(category: Category, *, user=None) -> PositionVersion:
    """The version holding the category's current position and guidance: its latest one
    when the text is unchanged since, else a new one numbered after it, by ``user``."""
    # The category's row lock makes two concurrent saves number their versions in turn.
    list(Category.objects.select_for_update().filter(pk=category.pk).values_list("pk"))
    latest = category.position_versions.order_by("-number").first()
    if latest is not None and (latest.position, latest.guidance) == (
        category.position,
        category.guidance,
    ):
        return latest
    return PositionVersion.objects.create(
        category=category,
        number=(latest.number if latest else 0) + 1,
        position=category.position,
        guidance=category.guidance,
        author=user,
        created_at=timezone.now(),
    )


def position_records(categories: Iterable[Category]) -> list[dict]:
    """The current position versions of these categories in display order, as a snapshot's
    canonical content records them: names and texts, no database ids."""
    ordered = sorted(set(categories), key=lambda category: (category.order, category.name))
    versions = [current_position_version(category) for category in ordered]
    return [
        {
            "category": version.category.name,
            "version": version.number,
            "position": version.position,
            "guidance": version.guidance,
        }
        for version in versions
    ]
