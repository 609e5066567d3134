"""Evaluation workflows: prompt sets, the study lifecycle and blinded rating assignment.

Study lifecycle: draft → sampling → rating → closed. Opening asks ``training.services`` for
one sampling job over every arm; :func:`study_sync_sampling` (idempotent; called by a Celery
task, a periodic sweep and the study page's polling) turns the finished job's generations
into outputs, holds the ones that could unblind a rater, and opens rating.

Assignment. Every change that can fill an output (claim, submit, skip, flag) first locks
that output's row, so a check made after the lock ("is there still room?") cannot be
invalidated before commit; closing a study only ends claims, which frees room. Claiming
is one short transaction: on PostgreSQL ``SELECT … FOR UPDATE SKIP LOCKED`` takes the
rater's next candidate that nobody else is claiming right now; on SQLite the transaction is
``BEGIN IMMEDIATE`` (see ``palmsweb.lib.dburl``), which serialises writers, so the same
query without row locks is already exclusive. The database backs the rules up with a unique
(output, rater) pair, one open claim per rater and study, and ``completed_count <= quota``.
A claim does not scan the study: it looks at the prompt the rater is on first, then at
widening windows of their personal prompt order (see :func:`_prompt_windows`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Q, When
from django.utils import timezone

from curation.models import Category
from evaluation.access import can_see_generations, has_rater_role
from evaluation.errors import (
    EvaluationError,
    NotARater,
    OutputNotFound,
    RatingError,
    StudyStateError,
)
from evaluation.models import (
    MAX_COMMENT_CHARS,
    MAX_PROMPT_CHARS,
    SCORES,
    Prompt,
    PromptSet,
    Rating,
    Study,
    StudyArm,
    StudyEvent,
    StudyOutput,
)
from evaluation.studies.screening import find_identifying, study_terms
from palmsweb.roles import Role, has_role
from training.models import Generation, JobStatus, ModelVersion

DEMO_PROMPT_SET_NAME = "PALMS demo evaluation prompts"
MAX_RATERS_PER_OUTPUT = 50
MAX_SAMPLES_PER_PROMPT = 20
MAX_LEASE_MINUTES = 24 * 60
MAX_SEED = 2**63 - 1  # Study.seed is a 64-bit column
CLAIM_ATTEMPTS = 20  # candidates found full on re-check before giving up (contention only)


# --- prompt sets ---------------------------------------------------------------------------


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


def _lock_prompt_set(prompt_set: PromptSet) -> None:
    PromptSet.objects.filter(pk=prompt_set.pk, locked_at__isnull=True).update(
        locked_at=timezone.now()
    )


def _release_prompt_set(prompt_set_id: int) -> None:
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


# --- studies: create and edit ---------------------------------------------------------------


@dataclass(frozen=True)
class ArmSpec:
    """One study arm. An empty ``arm`` takes the arm the version's training data gives
    it; a different label needs ``allow_arm_mismatch`` (recorded as ``arm_override``)."""

    arm: str
    model_version: ModelVersion
    size_tag: str = ""
    allow_arm_mismatch: bool = False


def study_arm_mismatch(arm: str, version: ModelVersion) -> str:
    """Why labelling ``version`` as ``arm`` in a study needs a confirmation, or "" when the
    label follows the data the version was trained on."""
    expected = version.trained_arm
    if arm == expected:
        return ""
    labels = dict(ModelVersion.Arm.choices)
    if expected is None:
        return (
            f"{version.name} was trained on a validation dataset, which gives it no arm: "
            f"confirm the {labels.get(arm, arm)} label (it is recorded on the study arm)."
        )
    return (
        f"{version.name} is a {labels[expected]} model (from the data it was trained on); "
        f"labelled {labels.get(arm, arm)} it would be compared as the wrong arm. Label it "
        f"{labels[expected]}, or confirm the mismatch (it is recorded on the study arm)."
    )


def _following_arms(arms: list[ArmSpec]) -> list[ArmSpec]:
    """Fill in the arm of specs that left it out: the one the version's data gives."""
    return [
        spec if spec.arm else replace(spec, arm=spec.model_version.trained_arm or "")
        for spec in arms
    ]


def _clean_rubric(rubric: list[str]) -> list[str]:
    rubric = [str(text or "").strip() for text in (rubric or [])]
    if len(rubric) != len(SCORES) or not all(rubric):
        raise EvaluationError("The rubric needs an anchor text for each score, 1 to 5.")
    if any(len(text) > MAX_COMMENT_CHARS for text in rubric):
        raise EvaluationError(f"Rubric anchors have at most {MAX_COMMENT_CHARS} characters.")
    return rubric


def _clean_raters(raters: Iterable) -> list:
    raters = list(raters)
    not_raters = [u.get_username() for u in raters if not has_rater_role(u)]
    if not_raters:
        raise EvaluationError(
            f"Only users in the rater group can be in the pool: {', '.join(not_raters)}."
        )
    sighted = [u.get_username() for u in raters if can_see_generations(u)]
    if sighted:
        raise EvaluationError(
            f"Admins can see which model wrote each output, so they cannot rate: "
            f"{', '.join(sighted)}. Take them out of the pool (or out of the admins)."
        )
    return raters


def _validate_study(
    *,
    name: str,
    prompt_set: PromptSet,
    arms: list[ArmSpec],
    samples_per_prompt: int,
    raters_per_output: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    lease_minutes: int,
    seed: int = 0,
) -> None:
    if not (name or "").strip():
        raise EvaluationError("A study needs a name.")
    if not arms:
        raise EvaluationError("A study needs at least one arm.")
    versions = [spec.model_version.pk for spec in arms]
    if len(set(versions)) != len(versions):
        raise EvaluationError("Each model version can be in a study only once.")
    valid_arms = set(ModelVersion.Arm.values)
    for spec in arms:
        if not spec.arm:
            raise EvaluationError(
                f"{spec.model_version.name} was trained on a validation dataset, which gives "
                "it no arm: choose its arm and confirm it."
            )
    if any(spec.arm not in valid_arms for spec in arms):
        raise EvaluationError(f"Arms are one of: {', '.join(sorted(valid_arms))}.")
    for spec in arms:
        why = study_arm_mismatch(spec.arm, spec.model_version)
        if why and not spec.allow_arm_mismatch:
            raise EvaluationError(why)
    if not 1 <= samples_per_prompt <= MAX_SAMPLES_PER_PROMPT:
        raise EvaluationError(f"Samples per prompt must be 1–{MAX_SAMPLES_PER_PROMPT}.")
    if not 1 <= raters_per_output <= MAX_RATERS_PER_OUTPUT:
        raise EvaluationError(f"Raters per output must be 1–{MAX_RATERS_PER_OUTPUT}.")
    if not (0 <= temperature <= 2 and 0 < top_p <= 1 and 1 <= max_new_tokens <= 4096):
        raise EvaluationError("Need 0 ≤ temperature ≤ 2, 0 < top_p ≤ 1, 1 ≤ max new tokens ≤ 4096.")
    if not 1 <= lease_minutes <= MAX_LEASE_MINUTES:
        raise EvaluationError(f"The claim lease must be 1–{MAX_LEASE_MINUTES} minutes.")
    if not 0 <= seed <= MAX_SEED:
        raise EvaluationError(f"The seed must be 0–{MAX_SEED}.")
    if prompt_set is None:
        raise EvaluationError("Choose a prompt set.")


def _set_arms(study: Study, arms: list[ArmSpec]) -> None:
    study.arms.all().delete()
    StudyArm.objects.bulk_create(
        StudyArm(
            study=study,
            arm=spec.arm,
            arm_override=spec.arm != spec.model_version.trained_arm,
            model_version=spec.model_version,
            order=i,
            size_tag=(spec.size_tag or "").strip() or spec.model_version.size_label,
        )
        for i, spec in enumerate(arms)
    )


def _event(study: Study, kind: str, actor=None, detail: str = "") -> StudyEvent:
    return StudyEvent.objects.create(study=study, kind=kind, actor=actor, detail=detail)


@transaction.atomic
def study_create(
    *,
    name: str,
    prompt_set: PromptSet,
    arms: list[ArmSpec],
    raters: Iterable = (),
    description: str = "",
    samples_per_prompt: int = 3,
    raters_per_output: int = 3,
    temperature: float = 0.7,
    top_p: float = 0.9,
    max_new_tokens: int = 200,
    seed: int = 0,
    lease_minutes: int = 10,
    rubric: list[str] | None = None,
    user=None,
) -> Study:
    """Create a draft study. Its prompt set locks now: the study depends on those prompts.
    Each arm's label follows the data its model was trained on (see :class:`ArmSpec`)."""
    from evaluation.models import default_rubric

    arms = _following_arms(arms)
    _validate_study(
        name=name,
        prompt_set=prompt_set,
        arms=arms,
        samples_per_prompt=samples_per_prompt,
        raters_per_output=raters_per_output,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        lease_minutes=lease_minutes,
        seed=seed,
    )
    study = Study.objects.create(
        name=name.strip(),
        description=description.strip(),
        prompt_set=prompt_set,
        samples_per_prompt=samples_per_prompt,
        raters_per_output=raters_per_output,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        lease_minutes=lease_minutes,
        rubric=_clean_rubric(rubric if rubric is not None else default_rubric()),
        created_by=user,
    )
    _set_arms(study, arms)
    study.raters.set(_clean_raters(raters))
    _lock_prompt_set(prompt_set)
    _event(study, StudyEvent.Kind.CREATED, user)
    return study


@transaction.atomic
def study_update(
    *,
    study: Study,
    name: str,
    prompt_set: PromptSet,
    arms: list[ArmSpec],
    raters: Iterable,
    description: str = "",
    samples_per_prompt: int,
    raters_per_output: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    lease_minutes: int,
    rubric: list[str],
    user=None,
) -> Study:
    """Change a draft study. Once open, only the rubric and the rater pool can change
    (:func:`study_update_live`): everything else shapes outputs that already exist."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.status != Study.Status.DRAFT:
        raise StudyStateError("Only a draft study can change its design.")
    arms = _following_arms(arms)
    _validate_study(
        name=name,
        prompt_set=prompt_set,
        arms=arms,
        samples_per_prompt=samples_per_prompt,
        raters_per_output=raters_per_output,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        lease_minutes=lease_minutes,
        seed=seed,
    )
    fields = dict(
        name=name.strip(),
        description=description.strip(),
        prompt_set=prompt_set,
        samples_per_prompt=samples_per_prompt,
        raters_per_output=raters_per_output,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        lease_minutes=lease_minutes,
        rubric=_clean_rubric(rubric),
    )
    previous_set = study.prompt_set_id
    for key, value in fields.items():
        setattr(study, key, value)
    study.save(update_fields=list(fields))
    _set_arms(study, arms)
    study.raters.set(_clean_raters(raters))
    _lock_prompt_set(prompt_set)
    if previous_set != prompt_set.pk:
        _release_prompt_set(previous_set)
    _event(study, StudyEvent.Kind.UPDATED, user)
    return study


@transaction.atomic
def study_update_live(*, study: Study, rubric: list[str], raters: Iterable, user=None) -> Study:
    """Edit what may change while a study runs: the rubric wording and the rater pool."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.status == Study.Status.CLOSED:
        raise StudyStateError("A closed study cannot change.")
    study.rubric = _clean_rubric(rubric)
    study.save(update_fields=["rubric"])
    study.raters.set(_clean_raters(raters))
    _event(study, StudyEvent.Kind.UPDATED, user, "rubric / rater pool")
    return study


@transaction.atomic
def study_delete(*, study: Study) -> None:
    """Delete a draft study (nothing was sampled or rated yet). Its prompt set unlocks if
    no other study uses it."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.status != Study.Status.DRAFT or study.sampling_job_id is not None:
        raise StudyStateError("Only a draft study that never sampled can be deleted.")
    study.delete()
    _release_prompt_set(study.prompt_set_id)


# --- studies: lifecycle ---------------------------------------------------------------------


@transaction.atomic
def study_open(*, study: Study, user=None) -> Study:
    """Launch sampling for every arm (one job) and move the study to "sampling"."""
    from training.services import TrainingError, sampling_launch

    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.status != Study.Status.DRAFT:
        raise StudyStateError(f"The study is already {study.get_status_display().lower()}.")
    prompts = list(study.prompt_set.prompts.select_related("category"))
    arms = list(study.arms.select_related("model_version"))
    if not prompts:
        raise EvaluationError("The prompt set has no prompts.")
    if not arms:
        raise EvaluationError("The study has no arms.")
    pool = study.raters.count()
    if pool < study.raters_per_output:
        raise EvaluationError(
            f"The rater pool has {pool} rater{'s' if pool != 1 else ''}; each output needs "
            f"{study.raters_per_output} distinct raters."
        )
    try:
        job = sampling_launch(
            prompts=[{"text": p.text, "category": p.category.name} for p in prompts],
            model_versions=[arm.model_version for arm in arms],
            n_samples=study.samples_per_prompt,
            temperature=study.temperature,
            top_p=study.top_p,
            max_new_tokens=study.max_new_tokens,
            seed=study.seed,
            name=f"Study #{study.pk}: {study.name}"[:200],
            # Its outputs carry their model: admins only, until the study is unblinded.
            restricted=True,
            user=user,
        )
    except TrainingError as error:
        raise EvaluationError(str(error)) from error
    _lock_prompt_set(study.prompt_set)
    now = timezone.now()
    study.status = Study.Status.SAMPLING
    study.sampling_job = job
    study.prompt_ids = [p.pk for p in prompts]
    study.sampling_error = ""
    study.opened_at = now
    study.save(
        update_fields=["status", "sampling_job", "prompt_ids", "sampling_error", "opened_at"]
    )
    _event(
        study,
        StudyEvent.Kind.OPENED,
        user,
        f"{len(prompts)} prompts × {len(arms)} arms × {study.samples_per_prompt} samples",
    )
    from evaluation import tasks

    transaction.on_commit(
        lambda: tasks.sync_study_sampling.apply_async((study.pk,), countdown=tasks.POLL_SECONDS)
    )
    return study


def study_sync_sampling(*, study_id: int) -> Study | None:
    """Move a sampling study on if its job has finished. Idempotent and safe to call from
    any number of places at once: the study row is locked, and outputs are unique per
    generation. A succeeded job → outputs (identifying ones held) → rating opens. A failed
    or cancelled job → back to draft with the reason kept. Returns the study, or None if
    it does not exist."""
    with transaction.atomic():
        study = Study.objects.select_for_update().filter(pk=study_id).first()
        if study is None or study.status != Study.Status.SAMPLING:
            return study
        job = study.sampling_job
        if job is None or job.status in {JobStatus.QUEUED, JobStatus.RUNNING}:
            return study
        if job.status != JobStatus.SUCCEEDED:
            study.status = Study.Status.DRAFT
            study.sampling_error = job.error or f"The sampling job was {job.status}."
            study.save(update_fields=["status", "sampling_error"])
            _event(study, StudyEvent.Kind.SAMPLING_FAILED, None, study.sampling_error)
            return study
        created, held = _import_generations(study)
        study.status = Study.Status.RATING
        study.rating_opened_at = timezone.now()
        study.save(update_fields=["status", "rating_opened_at"])
        _event(
            study, StudyEvent.Kind.RATING_OPENED, None, f"{created} outputs, {held} held for review"
        )
        return study


def _import_generations(study: Study) -> tuple[int, int]:
    arms = {arm.model_version_id: arm for arm in study.arms.select_related("model_version")}
    terms = _identifying_terms(arms.values())
    prompt_ids = list(study.prompt_ids)
    rows = []
    for gen in Generation.objects.filter(job=study.sampling_job).order_by("pk"):
        arm = arms.get(gen.model_version_id)
        if arm is None or gen.prompt_index >= len(prompt_ids):
            continue  # not something this study asked for
        hits = find_identifying(gen.text, terms)
        rows.append(
            StudyOutput(
                study=study,
                arm=arm,
                prompt_id=prompt_ids[gen.prompt_index],
                sample_index=gen.sample_index,
                generation=gen,
                text=gen.text,
                quota=study.raters_per_output,
                screening=StudyOutput.Screening.HELD if hits else StudyOutput.Screening.ACTIVE,
                flag_reasons=("Names: " + ", ".join(hits)) if hits else "",
            )
        )
    StudyOutput.objects.bulk_create(rows, ignore_conflicts=True)
    held = sum(1 for row in rows if row.screening == StudyOutput.Screening.HELD)
    return len(rows), held


def _identifying_terms(arms: Iterable[StudyArm]) -> list[str]:
    names: list[str] = []
    for arm in arms:
        version = arm.model_version
        names += [
            version.name,
            version.remote_model_id,
            version.base_model.name,
            version.base_model.model_id,
            arm.size_tag,
        ]
    return study_terms(names)


def studies_sync_sampling() -> int:
    """The periodic sweep: sync every study still sampling. Returns how many moved on."""
    moved = 0
    for study_id in Study.objects.filter(status=Study.Status.SAMPLING).values_list("pk", flat=True):
        study = study_sync_sampling(study_id=study_id)
        moved += bool(study and study.status != Study.Status.SAMPLING)
    return moved


@transaction.atomic
def output_clear(*, output: StudyOutput, user=None) -> StudyOutput:
    """An admin lets a held output into the rating pool."""
    output = StudyOutput.objects.select_for_update().get(pk=output.pk)
    if output.screening != StudyOutput.Screening.HELD:
        raise EvaluationError("Only a held output can be cleared.")
    output.screening = StudyOutput.Screening.ACTIVE
    output.save(update_fields=["screening"])
    _event(output.study, StudyEvent.Kind.OUTPUT_CLEARED, user, output.public_id)
    return output


@transaction.atomic
def study_arms_reveal(*, study: Study, user, reveal: bool) -> StudyEvent:
    """An admin shows (or hides again) the arm of each output on the triage page before
    the study is unblinded; either way it goes into the study's log, with who and when."""
    kind = StudyEvent.Kind.ARMS_REVEALED if reveal else StudyEvent.Kind.ARMS_HIDDEN
    return _event(study, kind, user)


@transaction.atomic
def output_exclude(*, output: StudyOutput, user=None, reason: str = "") -> StudyOutput:
    """An admin takes an output out of the study: no further claims, results ignore it."""
    output = StudyOutput.objects.select_for_update().get(pk=output.pk)
    if output.screening == StudyOutput.Screening.EXCLUDED:
        return output
    output.screening = StudyOutput.Screening.EXCLUDED
    if reason.strip():
        output.flag_reasons = "\n".join(
            filter(None, [output.flag_reasons, f"Excluded: {reason.strip()}"])
        )
    output.save(update_fields=["screening", "flag_reasons"])
    _event(
        output.study,
        StudyEvent.Kind.OUTPUT_EXCLUDED,
        user,
        f"{output.public_id} {reason.strip()}".strip(),
    )
    return output


@transaction.atomic
def study_close(*, study: Study, user=None) -> Study:
    """Stop rating. Open claims die with it; completed ratings stay."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.status == Study.Status.CLOSED:
        raise StudyStateError("The study is already closed.")
    if study.status == Study.Status.DRAFT:
        raise StudyStateError("A draft study has nothing to close; open it first.")
    study.status = Study.Status.CLOSED
    study.closed_at = timezone.now()
    study.save(update_fields=["status", "closed_at"])
    study.ratings.filter(status=Rating.Status.CLAIMED).update(status=Rating.Status.EXPIRED)
    _event(study, StudyEvent.Kind.CLOSED, user)
    return study


@transaction.atomic
def study_unblind(*, study: Study, user) -> Study:
    """A researcher (or admin) reveals arms and per-arm results of a closed study. The
    first unblinding is stamped on the study; every request is logged."""
    if not has_role(user, Role.RESEARCHER):
        raise EvaluationError("Only researchers and admins can unblind a study.")
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.status != Study.Status.CLOSED:
        raise StudyStateError("Close the study before unblinding it.")
    if study.unblinded_at is None:
        study.unblinded_at = timezone.now()
        study.unblinded_by = user
        study.save(update_fields=["unblinded_at", "unblinded_by"])
    if study.sampling_job_id is not None:
        from training.services import sampling_job_release

        sampling_job_release(job=study.sampling_job)
    _event(study, StudyEvent.Kind.UNBLINDED, user)
    return study


# --- rating --------------------------------------------------------------------------------


def check_can_rate(study: Study, user) -> None:
    """Raise unless ``user`` is a rater in ``study``'s pool and the study is rating now
    (read from the database: one query, whatever the caller holds in memory)."""
    status = None
    if has_rater_role(user):
        status = (
            Study.objects.filter(pk=study.pk, raters=user).values_list("status", flat=True).first()
        )
    if status is None:
        raise NotARater("You are not in this study's rater pool.")
    if can_see_generations(user):  # made an admin after joining the pool
        raise NotARater("Admins can see which model wrote each output, so they cannot rate.")
    if status != Study.Status.RATING:
        raise StudyStateError("This study is not open for rating.")


def _live_claims(now: datetime):
    return Q(status=Rating.Status.CLAIMED, expires_at__gt=now)


# The rater's next output. Prompts come in a per-rater random order, and within a prompt its
# outputs (every arm) in a per-rater random order: both keys hash server-side ids with a
# per-rater salt, so nothing in the order depends on the arm. The query is written out in
# SQL because it is the hot path of every claim: built through the ORM it cost more CPU
# than the rest of the request. It runs on PostgreSQL and SQLite alike, and reads what the
# task shows along with the lock (PostgreSQL returns a locked row's latest version).
_CANDIDATE_SQL = """
SELECT {columns}
FROM {output} o
JOIN {prompt} p ON p.id = o.prompt_id
JOIN {category} c ON c.id = p.category_id
WHERE o.study_id = %s AND o.screening = %s AND o.completed_count < o.quota{where}
  AND NOT EXISTS (SELECT 1 FROM {rating} r WHERE r.output_id = o.id AND r.rater_id = %s)
  AND o.completed_count + (
    SELECT COUNT(*) FROM {rating} live
    WHERE live.output_id = o.id AND live.status = %s AND live.expires_at > %s
  ) < o.quota
ORDER BY MD5(%s || CAST(o.prompt_id AS TEXT)), MD5(%s || o.public_id)
LIMIT 1{lock}
"""

# The columns it reads, per model and table alias: what the services and the task (API
# payload, rating page) use. Other fields load on access, as deferred fields do.
_TASK_FIELDS = (
    (
        StudyOutput,
        "o",
        {"id", "study", "prompt", "public_id", "text", "screening", "quota", "completed_count"},
    ),
    (Prompt, "p", {"id", "category", "text"}),
    (Category, "c", {"id", "name", "position"}),
)


def _task_columns() -> tuple[str, list[tuple[type, list[str]]]]:
    """The SELECT list for :data:`_TASK_FIELDS`, and per model the attribute names in the
    order ``Model.from_db`` wants them (its concrete fields' order)."""
    columns, layout = [], []
    for model, alias, names in _TASK_FIELDS:
        fields = [f for f in model._meta.concrete_fields if f.name in names]
        columns += [f"{alias}.{connection.ops.quote_name(f.column)}" for f in fields]
        layout.append((model, [f.attname for f in fields]))
    return ", ".join(columns), layout


def _order_salt(study: Study, rater) -> str:
    return f"{study.order_salt}:{rater.pk}:"


def _prompt_order(study: Study, rater) -> list[int]:
    """The study's prompts in this rater's order: the key :data:`_CANDIDATE_SQL` sorts by,
    computed here (hex digests compare alike in Python and in SQL)."""
    salt = _order_salt(study, rater)
    return sorted(
        study.prompt_ids,
        key=lambda pk: hashlib.md5(f"{salt}{pk}".encode(), usedforsecurity=False).hexdigest(),
    )


def _prompt_windows(order: list[int], start: int) -> Iterator[tuple[list[int], bool]]:
    """Where to look for the rater's next output, nearest first, so that a claim reads a
    prompt's outputs rather than the whole study's: the rater's prompt order from
    ``start`` (the prompt of their latest claim) to the end, then from the beginning, in
    windows of 1, 2, 4, … prompts. Yields ``(prompt ids, inside)``; the last window is
    "every prompt not looked at yet" (``inside`` false), which also finds an output whose
    prompt is missing from ``order``."""
    windows: list[list[int]] = []
    size = 1
    for segment in (order[start:], order[:start]):  # a window never spans the wrap
        while segment:
            windows.append(segment[:size])
            segment = segment[size:]
            size *= 2
    for window in windows[:-1]:
        yield window, True
    yield [pk for window in windows[:-1] for pk in window], False


def _first_candidate(
    study: Study,
    rater,
    now: datetime,
    prompts: list[int],
    *,
    inside: bool,
    skip: list[int],
    wait: bool,
) -> StudyOutput | None:
    """The rater's first output in ``prompts`` (or outside them) that still has room and
    that they have not had, locked, with its prompt and category; None if there is none."""
    where, where_params = "", []
    if prompts:
        marks = ", ".join(["%s"] * len(prompts))
        where += f"\n  AND o.prompt_id {'IN' if inside else 'NOT IN'} ({marks})"
        where_params += prompts
    if skip:
        where += f"\n  AND o.id NOT IN ({', '.join(['%s'] * len(skip))})"
        where_params += skip
    lock = ""
    if connection.features.has_select_for_update_skip_locked:
        lock = " FOR UPDATE OF o" if wait else " FOR UPDATE OF o SKIP LOCKED"
    # SQLite: BEGIN IMMEDIATE already made this transaction the only writer.
    columns, layout = _task_columns()
    sql = _CANDIDATE_SQL.format(
        columns=columns,
        output=StudyOutput._meta.db_table,
        prompt=Prompt._meta.db_table,
        category=Category._meta.db_table,
        rating=Rating._meta.db_table,
        where=where,
        lock=lock,
    )
    salt = _order_salt(study, rater)
    params = [
        study.pk,
        StudyOutput.Screening.ACTIVE.value,
        *where_params,
        rater.pk,
        Rating.Status.CLAIMED.value,
        connection.ops.adapt_datetimefield_value(now),
        salt,
        salt,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    values = iter(row)
    output, prompt, category = (
        model.from_db(connection.alias, attnames, [next(values) for _ in attnames])
        for model, attnames in layout
    )
    prompt.category = category
    output.prompt = prompt
    return output


def _lock_next(
    study: Study,
    rater,
    now: datetime,
    skip: list[int],
    *,
    wait: bool = False,
    resume: int | None = None,
) -> StudyOutput | None:
    """Lock the rater's next candidate, walking :func:`_prompt_windows` from prompt
    ``resume`` (the prompt of their latest claim; None: from the start). First pass
    (``wait=False``) skips rows other transactions hold; the second waits for them (they
    are short), so a rater is told "nothing left" only when nothing is."""
    order = _prompt_order(study, rater)
    start = order.index(resume) if resume in order else 0
    for prompts, inside in _prompt_windows(order, start):
        output = _first_candidate(study, rater, now, prompts, inside=inside, skip=skip, wait=wait)
        if output is not None:
            return output
    return None


def _open_slots(output: StudyOutput, now: datetime, *, besides: int | None = None) -> int:
    """Room left on an output this transaction has locked: quota − completed − live claims
    (other than ``besides``). ``completed_count`` comes from the locked row, which
    PostgreSQL hands back in its latest committed version; the claims are counted in a
    fresh statement, so both are current."""
    live = Rating.objects.filter(_live_claims(now), output=output)
    if besides is not None:
        live = live.exclude(pk=besides)
    return output.quota - output.completed_count - live.count()


def current_claim(study: Study, rater, now: datetime | None = None) -> Rating | None:
    """The rater's live claim in this study, with what the rating page shows."""
    now = now or timezone.now()
    return (
        Rating.objects.filter(_live_claims(now), study=study, rater=rater)
        .select_related("output__prompt__category", "study")
        .first()
    )


class _Contended(Exception):
    """The candidate locked on the fast path filled up under us: retry the careful way."""


def rating_claim_next(*, study: Study, rater, now: datetime | None = None) -> Rating | None:
    """Give the rater their next output, leased for ``study.lease_minutes``; None when
    nothing is left for them. A rater with a live claim gets that claim back, so reloading
    the page never hands out a second output. Raters walk their own order: the next output
    is the first with room from the prompt of their latest claim on, wrapping round, so an
    output freed behind them (a lapsed lease, a skip) reaches them after the rest."""
    now = now or timezone.now()
    check_can_rate(study, rater)
    careful = False
    for _ in range(3):
        try:
            with transaction.atomic():
                return _claim(study, rater, now, careful=careful)
        except _Contended:
            careful = True  # the rollback released the full candidate's lock
        except IntegrityError:
            # The same rater claimed in another request a moment ago (double click, two
            # tabs): the one-open-claim constraint refused this one. Hand back that claim.
            claim = current_claim(study, rater, now)
            if claim is not None:
                return claim
    return None


def _claim(study: Study, rater, now: datetime, *, careful: bool) -> Rating | None:
    # The rater's open claim if they hold one, else their latest rating in the study: its
    # prompt is where the search for their next output starts.
    mine = (
        Rating.objects.filter(study=study, rater=rater)
        .order_by(Case(When(status=Rating.Status.CLAIMED, then=0), default=1), "-pk")
        .values_list("pk", "status", "expires_at", "output__prompt_id", "output__screening")
        .first()
    )
    held, resume = None, None
    if mine is not None:
        pk, status, expires_at, resume, screening = mine
        if status == Rating.Status.CLAIMED:
            held = pk
        if held is not None and screening == StudyOutput.Screening.EXCLUDED:
            # An admin took the held output out of the study: drop the claim, move on.
            Rating.objects.filter(pk=held).update(status=Rating.Status.EXPIRED)
            held = None
        if held is not None and expires_at > now:
            rating = Rating.objects.select_related("output__prompt__category").get(pk=held)
            rating.study = study
            return rating
    output = _lock_free_output(study, rater, now, careful=careful, resume=resume)
    if output is None:
        return None
    if held is not None:
        # The lapsed claim stops counting as open before the new one (one open claim per
        # rater and study). After the output lock, so that every transaction takes its
        # locks in one order — output row, then rating rows — as submit and skip do.
        Rating.objects.filter(pk=held, status=Rating.Status.CLAIMED).update(
            status=Rating.Status.EXPIRED
        )
    rating = Rating.objects.create(
        study=study,
        output=output,
        rater=rater,
        status=Rating.Status.CLAIMED,
        claimed_at=now,
        expires_at=now + timedelta(minutes=study.lease_minutes),
    )
    rating.output = output
    return rating


def _lock_free_output(
    study: Study, rater, now: datetime, *, careful: bool, resume: int | None = None
) -> StudyOutput | None:
    """Lock the rater's next output that still has room, or return None.

    SQLite: the transaction is the only writer, so the first candidate is the answer.
    PostgreSQL: first skip rows other claims hold; if that finds nothing, wait for them
    (they are short) so "nothing left" means nothing is left. A transaction must never
    wait while holding another output's lock (deadlock), so a candidate found full ends
    the fast path (:class:`_Contended`, rolled back, retried); the careful path wraps each
    try in a savepoint whose rollback releases the full candidate's lock at once."""
    if not connection.features.has_select_for_update_skip_locked:
        return _lock_next(study, rater, now, [], resume=resume)
    tried: list[int] = []
    for wait in (False, True):
        for _ in range(CLAIM_ATTEMPTS):
            savepoint = transaction.savepoint() if careful else None
            output = _lock_next(study, rater, now, tried, wait=wait, resume=resume)
            if output is not None and _open_slots(output, now) > 0:
                if savepoint:
                    transaction.savepoint_commit(savepoint)
                return output
            if output is not None and not careful:
                raise _Contended()
            if savepoint:
                transaction.savepoint_rollback(savepoint)
            if output is None:
                break
            tried.append(output.pk)  # filled between our snapshot and our lock
    return None


# What submit, skip and flag read from the output they lock (see _check_rating_open).
_ANSWER_FIELDS = (
    "public_id",
    "screening",
    "flag_reasons",
    "quota",
    "completed_count",
    "study__status",
)


def _locked_rating(public_id: str, rater) -> tuple[StudyOutput, Rating]:
    """Lock the output (first, always: see the module docstring), then the rater's row.
    The output comes with the columns the answer needs, not the text."""
    try:
        output = (
            StudyOutput.objects.select_for_update(of=("self",))
            .select_related("study")
            .only(*_ANSWER_FIELDS)
            .get(public_id=public_id)
        )
    except StudyOutput.DoesNotExist:
        raise OutputNotFound("No such output.") from None
    try:
        rating = Rating.objects.select_for_update().get(output=output, rater=rater)
    except Rating.DoesNotExist:
        raise RatingError("You have not claimed this output.") from None
    rating.output = output
    return output, rating


def _check_rating_open(output: StudyOutput, rater) -> None:
    """The study (read with the locked output, so current) must still be rating. A claim
    the rater already holds may be answered even if an admin has since changed the pool."""
    if not has_rater_role(rater):
        raise NotARater("Only raters rate.")
    if output.study.status != Study.Status.RATING:
        raise StudyStateError("This study is not open for rating.")
    if output.screening == StudyOutput.Screening.EXCLUDED:
        raise RatingError("An admin took this output out of the study.")


@transaction.atomic
def rating_submit(
    *, public_id: str, rater, score: int, comment: str = "", now: datetime | None = None
) -> Rating:
    """Record the rater's score. A lapsed lease is still honoured while the output has room
    (nobody took the slot); otherwise the score is refused. Submitting the same score again
    returns the stored rating (a retried request is harmless)."""
    now = now or timezone.now()
    if score not in SCORES:
        raise RatingError("The score must be 1, 2, 3, 4 or 5.")
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT_CHARS:
        raise RatingError(f"Comments have at most {MAX_COMMENT_CHARS} characters.")
    output, rating = _locked_rating(public_id, rater)
    if rating.status == Rating.Status.COMPLETED:
        if rating.score == score:
            return rating
        raise RatingError("You already rated this output.")
    _check_rating_open(output, rater)
    if rating.status in {Rating.Status.SKIPPED, Rating.Status.FLAGGED}:
        raise RatingError("You skipped or flagged this output; it has gone to other raters.")
    if not rating.is_live(now) and _open_slots(output, now, besides=rating.pk) <= 0:
        raise RatingError("Your claim on this output expired and other raters took it.")
    rating.status = Rating.Status.COMPLETED
    rating.score = score
    rating.comment = comment
    rating.completed_at = now
    rating.save(update_fields=["status", "score", "comment", "completed_at"])
    StudyOutput.objects.filter(pk=output.pk).update(completed_count=F("completed_count") + 1)
    return rating


def _release(
    public_id: str, rater, now: datetime, *, status: str, reason: str = ""
) -> tuple[StudyOutput, Rating]:
    output, rating = _locked_rating(public_id, rater)
    if rating.status not in {Rating.Status.CLAIMED, Rating.Status.EXPIRED}:
        raise RatingError(f"This output is already {rating.get_status_display().lower()}.")
    _check_rating_open(output, rater)
    rating.status = status
    rating.flag_reason = reason
    rating.completed_at = now
    rating.save(update_fields=["status", "flag_reason", "completed_at"])
    return output, rating


@transaction.atomic
def rating_skip(*, public_id: str, rater, now: datetime | None = None) -> Rating:
    """Give the output back to the pool for other raters; this rater never gets it again."""
    _, rating = _release(public_id, rater, now or timezone.now(), status=Rating.Status.SKIPPED)
    return rating


@transaction.atomic
def rating_flag(*, public_id: str, rater, reason: str = "", now: datetime | None = None) -> Rating:
    """Report an output (it names a model, is broken, …): it leaves this rater's queue like
    a skip, and is held back from other raters until an admin clears or excludes it."""
    reason = (reason or "").strip()[:MAX_COMMENT_CHARS]
    output, rating = _release(
        public_id, rater, now or timezone.now(), status=Rating.Status.FLAGGED, reason=reason
    )
    note = f"Rater flag: {reason or '(no reason given)'}"
    output.flag_reasons = "\n".join(filter(None, [output.flag_reasons, note]))
    if output.screening == StudyOutput.Screening.ACTIVE:
        output.screening = StudyOutput.Screening.HELD
    output.save(update_fields=["flag_reasons", "screening"])
    return rating


def rater_pool_candidates():
    """Users who may join a rater pool: the members of the rater group who are not admins
    (see :func:`can_see_generations`)."""
    admins = get_user_model().objects.filter(
        Q(is_staff=True) | Q(is_superuser=True) | Q(groups__name=Role.ADMIN.value)
    )
    return (
        get_user_model()
        .objects.filter(groups__name=Role.RATER.value, is_active=True)
        .exclude(pk__in=admins.values("pk"))
        .order_by("username")
        .distinct()
    )
