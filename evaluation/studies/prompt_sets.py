"""Prompt sets: create, copy and edit them, prompt by prompt or many lines at once.

A set is locked while a study uses it (:func:`prompt_set_lock`, :func:`prompt_set_release`):
editing a locked set edits a copy, so a study's prompts never change under it.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from curation.models import Category
from evaluation.errors import EvaluationError
from evaluation.models import (
    MAX_PROMPT_CHARS,
    Prompt,
    PromptSet,
)
from palmsweb.models import Profile, profile_pk

DEMO_PROMPT_SET_NAME = "PALMS demo evaluation prompts"


def _clean_prompt_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise EvaluationError("A prompt needs some text.")
    if len(text) > MAX_PROMPT_CHARS:
        raise EvaluationError(f"A prompt may have at most {MAX_PROMPT_CHARS} characters.")
    return text


def _unique_set_name(base: str, profile_id: int) -> str:
    base = base.strip()[:180]
    in_profile = PromptSet.objects.filter(profile_id=profile_id)
    if not in_profile.filter(name=base).exists():
        return base
    number = 2
    while in_profile.filter(name=f"{base} (v{number})").exists():
        number += 1
    return f"{base} (v{number})"


def check_prompt_category(prompt_set: PromptSet, category: Category) -> None:
    """A prompt's category must be one of its set's profile: raters judge it against that
    profile's position."""
    if category.profile_id != prompt_set.profile_id:
        raise EvaluationError(
            f"The category {category.name!r} belongs to another value profile than this set."
        )


@transaction.atomic
def prompt_set_create(
    *, name: str, description: str = "", user=None, profile: Profile | int | None = None
) -> PromptSet:
    """Create an empty, editable prompt set in ``profile`` (the default profile when None)."""
    name = (name or "").strip()
    if not name:
        raise EvaluationError("A prompt set needs a name.")
    profile_id = profile_pk(profile)
    if PromptSet.objects.filter(profile_id=profile_id, name=name).exists():
        raise EvaluationError(f"A prompt set named {name!r} already exists in this profile.")
    return PromptSet.objects.create(
        profile_id=profile_id, name=name, description=description.strip(), created_by=user
    )


@transaction.atomic
def prompt_set_update(*, prompt_set: PromptSet, name: str, description: str = "") -> PromptSet:
    """Rename or redescribe a set. Allowed when locked: studies depend on the prompts only."""
    name = (name or "").strip()
    if not name:
        raise EvaluationError("A prompt set needs a name.")
    in_profile = PromptSet.objects.filter(profile_id=prompt_set.profile_id)
    if in_profile.filter(name=name).exclude(pk=prompt_set.pk).exists():
        raise EvaluationError(f"A prompt set named {name!r} already exists in this profile.")
    prompt_set.name = name
    prompt_set.description = description.strip()
    prompt_set.save(update_fields=["name", "description"])
    return prompt_set


@transaction.atomic
def prompt_set_copy(
    *, prompt_set: PromptSet, user=None, name: str = "", profile: Profile | int | None = None
) -> PromptSet:
    """An unlocked copy of a set with all its prompts, in order: in the set's own profile,
    or in ``profile``, where each prompt takes that profile's category of the same name
    (the access check on ``profile`` is the caller's). Refused, with nothing created, when
    a category has no active counterpart there."""
    target = prompt_set.profile_id if profile is None else profile_pk(profile)
    prompts = list(prompt_set.prompts.select_related("category"))
    across = target != prompt_set.profile_id
    categories = _counterpart_categories(prompts, target) if across else {}
    copy = PromptSet.objects.create(
        profile_id=target,
        name=_unique_set_name(name or prompt_set.name, target),
        description=prompt_set.description,
        copied_from=prompt_set,
        created_by=user,
    )
    Prompt.objects.bulk_create(
        Prompt(
            prompt_set=copy, order=p.order, text=p.text,
            category_id=categories.get(p.category_id, p.category_id),
        )
        for p in prompts
    )  # fmt: skip
    return copy


def _counterpart_categories(prompts: list[Prompt], profile_id: int) -> dict[int, int]:
    """{category id in the source profile: the active category of the same name (case
    aside) in ``profile_id``}: raters in the target profile judge each prompt against
    their own profile's position in that category."""
    theirs = {
        c.name.casefold(): c.pk for c in Category.objects.active().filter(profile_id=profile_id)
    }
    mine = {p.category_id: p.category.name for p in prompts}
    missing = sorted({name for name in mine.values() if name.casefold() not in theirs})
    if missing:
        raise EvaluationError(
            "The target value profile has no active category named "
            + ", ".join(repr(name) for name in missing)
            + ": add it there (with that profile's own position) before copying this set."
        )
    return {pk: theirs[name.casefold()] for pk, name in mine.items()}


def _writable(prompt_set: PromptSet, user) -> PromptSet:
    """The set itself if it is editable, else a fresh copy to take the edit."""
    locked = PromptSet.objects.select_for_update().get(pk=prompt_set.pk)
    if locked.is_locked:
        return prompt_set_copy(prompt_set=locked, user=user)
    return locked


def _counterpart(prompt: Prompt, target: PromptSet) -> Prompt:
    """The same prompt in ``target`` (itself, or its copy at the same place)."""
    if prompt.prompt_set_id == target.pk:
        return prompt
    index = list(prompt.prompt_set.prompts.values_list("pk", flat=True)).index(prompt.pk)
    return list(target.prompts.all())[index]


@transaction.atomic
def prompt_add(*, prompt_set: PromptSet, category: Category, text: str, user=None) -> Prompt:
    """Append a prompt. On a locked set this goes into a new copy (see ``prompt.prompt_set``)."""
    text = _clean_prompt_text(text)
    check_prompt_category(prompt_set, category)
    target = _writable(prompt_set, user)
    last = target.prompts.order_by("-order").values_list("order", flat=True).first()
    return Prompt.objects.create(
        prompt_set=target, category=category, text=text, order=(last or 0) + 1
    )


@transaction.atomic
def prompts_add_lines(
    *, prompt_set: PromptSet, category: Category, lines: str, user=None
) -> PromptSet:
    """Append one prompt per non-empty line, all in ``category``. Returns the set edited."""
    texts = [_clean_prompt_text(line) for line in lines.splitlines() if line.strip()]
    check_prompt_category(prompt_set, category)
    if not texts:
        raise EvaluationError("Write at least one prompt, one per line.")
    target = _writable(prompt_set, user)
    last = target.prompts.order_by("-order").values_list("order", flat=True).first() or 0
    Prompt.objects.bulk_create(
        Prompt(prompt_set=target, category=category, text=text, order=last + i)
        for i, text in enumerate(texts, start=1)
    )
    return target


@transaction.atomic
def prompt_update(*, prompt: Prompt, category: Category, text: str, user=None) -> Prompt:
    """Change a prompt; on a locked set the change lands in a new copy of the set."""
    text = _clean_prompt_text(text)
    check_prompt_category(prompt.prompt_set, category)
    target = _counterpart(prompt, _writable(prompt.prompt_set, user))
    target.category = category
    target.text = text
    target.save(update_fields=["category", "text"])
    return target


@transaction.atomic
def prompt_delete(*, prompt: Prompt, user=None) -> PromptSet:
    """Remove a prompt; returns the set it was removed from (a copy if the set was locked)."""
    target_set = _writable(prompt.prompt_set, user)
    _counterpart(prompt, target_set).delete()
    return target_set


@transaction.atomic
def prompt_move(*, prompt: Prompt, offset: int, user=None) -> PromptSet:
    """Move a prompt up (-1) or down (+1); renumbers the set 1..n."""
    target_set = _writable(prompt.prompt_set, user)
    target = _counterpart(prompt, target_set)
    prompts = list(target_set.prompts.all())
    index = prompts.index(target)
    new_index = max(0, min(len(prompts) - 1, index + offset))
    prompts.insert(new_index, prompts.pop(index))
    for number, item in enumerate(prompts, start=1):
        item.order = number
    Prompt.objects.bulk_update(prompts, ["order"])
    return target_set


def prompt_set_lock(prompt_set: PromptSet) -> None:
    """Lock the set: a study uses it now (edits go to a copy from here on)."""
    PromptSet.objects.filter(pk=prompt_set.pk, locked_at__isnull=True).update(
        locked_at=timezone.now()
    )


def prompt_set_release(prompt_set_id: int) -> None:
    """A set is locked exactly while a study uses it: when its last study goes (a draft
    deleted, or moved to another set before it ever sampled), it is editable again."""
    PromptSet.objects.filter(pk=prompt_set_id, studies__isnull=True).update(locked_at=None)


@transaction.atomic
def load_demo_prompt_set(profile: Profile | None = None) -> PromptSet:
    """The 40 PALMS demo evaluation prompts as a set in ``profile`` (the PALMS demo profile
    when None; idempotent: an existing set of that name there is returned unchanged). Loads
    the PALMS categories into the profile first if missing."""
    import json

    from curation.demo import EVAL_PROMPTS_FILE, demo_profile
    from curation.services import load_palms_preset

    profile = profile or demo_profile()
    existing = PromptSet.objects.filter(profile=profile, name=DEMO_PROMPT_SET_NAME).first()
    if existing is not None:
        return existing
    load_palms_preset(profile=profile)
    categories = {c.name: c for c in Category.objects.filter(profile=profile)}
    rows = [
        json.loads(line)
        for line in EVAL_PROMPTS_FILE.read_text("utf-8").splitlines()
        if line.strip()
    ]
    prompt_set = PromptSet.objects.create(
        profile=profile,
        name=DEMO_PROMPT_SET_NAME,
        description="Five prompts per PALMS category, 40 in all, as the PALMS evaluation used.",
    )  # it locks, like any set, when a study first uses it
    missing = {row["category"] for row in rows} - set(categories)
    if missing:
        raise EvaluationError(f"Unknown categories in the demo prompts: {sorted(missing)}")
    Prompt.objects.bulk_create(
        Prompt(
            prompt_set=prompt_set, order=i, category=categories[row["category"]], text=row["prompt"]
        )
        for i, row in enumerate(rows, start=1)
    )
    return prompt_set
