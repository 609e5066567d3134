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

DEMO_PROMPT_SET_NAME = "PALMS demo evaluation prompts"


def _clean_prompt_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise EvaluationError("A prompt needs some text.")
    if len(text) > MAX_PROMPT_CHARS:
        raise EvaluationError(f"A prompt may have at most {MAX_PROMPT_CHARS} characters.")
    return text


def _unique_set_name(base: str) -> str:
    base = base.strip()[:180]
    if not PromptSet.objects.filter(name=base).exists():
        return base
    number = 2
    while PromptSet.objects.filter(name=f"{base} (v{number})").exists():
        number += 1
    return f"{base} (v{number})"


@transaction.atomic
def prompt_set_create(*, name: str, description: str = "", user=None) -> PromptSet:
    """Create an empty, editable prompt set."""
    name = (name or "").strip()
    if not name:
        raise EvaluationError("A prompt set needs a name.")
    if PromptSet.objects.filter(name=name).exists():
        raise EvaluationError(f"A prompt set named {name!r} already exists.")
    return PromptSet.objects.create(name=name, description=description.strip(), created_by=user)


@transaction.atomic
def prompt_set_update(*, prompt_set: PromptSet, name: str, description: str = "") -> PromptSet:
    """Rename or redescribe a set. Allowed when locked: studies depend on the prompts only."""
    name = (name or "").strip()
    if not name:
        raise EvaluationError("A prompt set needs a name.")
    if PromptSet.objects.filter(name=name).exclude(pk=prompt_set.pk).exists():
        raise EvaluationError(f"A prompt set named {name!r} already exists.")
    prompt_set.name = name
    prompt_set.description = description.strip()
    prompt_set.save(update_fields=["name", "description"])
    return prompt_set


@transaction.atomic
def prompt_set_copy(*, prompt_set: PromptSet, user=None, name: str = "") -> PromptSet:
    """An unlocked copy of a set with all its prompts, in order."""
    copy = PromptSet.objects.create(
        name=_unique_set_name(name or prompt_set.name),
        description=prompt_set.description,
        copied_from=prompt_set,
        created_by=user,
    )
    Prompt.objects.bulk_create(
        Prompt(prompt_set=copy, order=p.order, category_id=p.category_id, text=p.text)
        for p in prompt_set.prompts.all()
    )
    return copy


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
def load_demo_prompt_set() -> PromptSet:
    """The 40 PALMS demo evaluation prompts as a locked set (idempotent: an existing set of
    that name is returned unchanged). Loads the PALMS categories first if missing."""
    import json

    from curation.demo import EVAL_PROMPTS_FILE
    from curation.services import load_palms_preset

    existing = PromptSet.objects.filter(name=DEMO_PROMPT_SET_NAME).first()
    if existing is not None:
        return existing
    load_palms_preset()
    categories = {c.name: c for c in Category.objects.all()}
    rows = [
        json.loads(line)
        for line in EVAL_PROMPTS_FILE.read_text("utf-8").splitlines()
        if line.strip()
    ]
    prompt_set = PromptSet.objects.create(
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
