"""The study lifecycle: create and edit a study, then draft → sampling → rating → closed,
screening and unblinding.

Opening asks ``training.services`` for one sampling job over every arm;
:func:`study_sync_sampling` (idempotent; called by a Celery task, a periodic sweep and the
study page's polling) turns the finished job's generations into outputs, holds the ones that
could unblind a rater, and opens rating.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date

from django.db import transaction
from django.utils import timezone

from evaluation.errors import EvaluationError, StudyStateError
from evaluation.models import (
    MAX_COMMENT_CHARS,
    SCORES,
    PromptSet,
    Rating,
    Study,
    StudyArm,
    StudyEvent,
    StudyOutput,
)
from evaluation.rubric import default_rubric
from evaluation.studies.arm_keys import arm_size_tag, check_arms_stay_apart, clean_arm_label
from evaluation.studies.arm_pairs import clean_arm_pairs, set_compared_arm_pairs
from evaluation.studies.pairwise_queue import pairs_create
from evaluation.studies.positions import freeze_positions
from evaluation.studies.prompt_sets import prompt_set_lock, prompt_set_release
from evaluation.studies.rater_pool import clean_raters
from evaluation.studies.rating_close import UNCHANGED, check_rating_closes_on
from evaluation.studies.screening import find_identifying, study_terms
from palmsweb.roles import Role, has_role
from training.models import Generation, JobStatus, ModelVersion

MAX_RATERS_PER_OUTPUT = 50
MAX_SAMPLES_PER_PROMPT = 20
MAX_LEASE_MINUTES = 24 * 60
MAX_SEED = 2**63 - 1  # Study.seed is a 64-bit column


# --- studies: create and edit ---------------------------------------------------------------


@dataclass(frozen=True)
class ArmSpec:
    """One study arm. An empty ``arm`` takes the arm the version's training data gives
    it; a different label needs ``allow_arm_mismatch`` (recorded as ``arm_override``)."""

    arm: str
    model_version: ModelVersion
    size_tag: str = ""
    allow_arm_mismatch: bool = False
    label: str = ""  # free, beside the role: "values-targeted + DPO" (arm_keys)


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
    mode: str = Study.Mode.SCALE,
) -> None:
    if not (name or "").strip():
        raise EvaluationError("A study needs a name.")
    if not arms:
        raise EvaluationError("A study needs at least one arm.")
    if mode not in Study.Mode.values:
        raise EvaluationError(f"The mode is one of: {', '.join(Study.Mode.values)}.")
    if mode == Study.Mode.PAIRWISE and len(arms) < 2:
        raise EvaluationError("A pairwise study compares arms: it needs at least two.")
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
    check_arms_stay_apart(arms)
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
            size_tag=arm_size_tag(spec),
            label=clean_arm_label(spec),
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
    mode: str = Study.Mode.SCALE,
    arm_pairs: Iterable = (),
    rating_closes_on: date | None = None,
    user=None,
) -> Study:
    """Create a draft study. Its prompt set locks now: the study depends on those prompts.
    Each arm's label follows the data its model was trained on (see :class:`ArmSpec`).
    ``arm_pairs``: a pairwise study's chosen arm pairs (numbers from 1); none: every pair."""
    arms = _following_arms(arms)
    arm_pairs = clean_arm_pairs(arm_pairs, n_arms=len(arms), mode=mode)
    check_rating_closes_on(rating_closes_on)
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
        mode=mode,
    )
    study = Study.objects.create(
        name=name.strip(),
        mode=mode,
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
        rating_closes_on=rating_closes_on,
        created_by=user,
    )
    _set_arms(study, arms)
    set_compared_arm_pairs(study, arm_pairs)
    study.raters.set(clean_raters(raters, prompt_set.profile_id))
    prompt_set_lock(prompt_set)
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
    mode: str = Study.Mode.SCALE,
    arm_pairs: Iterable = (),
    rating_closes_on: date | None = None,
    user=None,
) -> Study:
    """Change a draft study. Once open, only the rubric and the rater pool can change
    (:func:`study_update_live`): everything else shapes outputs that already exist."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.status != Study.Status.DRAFT:
        raise StudyStateError("Only a draft study can change its design.")
    if prompt_set.profile_id != study.profile_id:
        raise EvaluationError(
            "A study stays in its value profile: choose a prompt set of the same profile."
        )
    arms = _following_arms(arms)
    arm_pairs = clean_arm_pairs(arm_pairs, n_arms=len(arms), mode=mode)
    check_rating_closes_on(rating_closes_on, previous=study.rating_closes_on)
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
        mode=mode,
    )
    fields = dict(
        name=name.strip(),
        mode=mode,
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
        rating_closes_on=rating_closes_on,
    )
    previous_set = study.prompt_set_id
    for key, value in fields.items():
        setattr(study, key, value)
    study.save(update_fields=list(fields))
    _set_arms(study, arms)
    set_compared_arm_pairs(study, arm_pairs)
    study.raters.set(clean_raters(raters, prompt_set.profile_id))
    prompt_set_lock(prompt_set)
    if previous_set != prompt_set.pk:
        prompt_set_release(previous_set)
    _event(study, StudyEvent.Kind.UPDATED, user)
    return study


@transaction.atomic
def study_update_live(
    *, study: Study, rubric: list[str], raters: Iterable, rating_closes_on=UNCHANGED, user=None
) -> Study:
    """Edit what may change while a study runs: rubric, rater pool, planned close date."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.status == Study.Status.CLOSED:
        raise StudyStateError("A closed study cannot change.")
    if rating_closes_on is not UNCHANGED:
        check_rating_closes_on(rating_closes_on, previous=study.rating_closes_on)
        study.rating_closes_on = rating_closes_on
    study.rubric = _clean_rubric(rubric)
    study.save(update_fields=["rubric", "rating_closes_on"])
    study.raters.set(clean_raters(raters, study.profile_id))
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
    prompt_set_release(study.prompt_set_id)


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
            profile_id=study.profile_id,
            user=user,
        )
    except TrainingError as error:
        raise EvaluationError(str(error)) from error
    prompt_set_lock(study.prompt_set)
    freeze_positions(study, [p.category for p in prompts])
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

    # Not delay_on_commit: the first look waits POLL_SECONDS (the job has only just queued).
    tasks.sync_study_sampling.apply_async_on_commit((study.pk,), countdown=tasks.POLL_SECONDS)
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
        detail = f"{created} outputs, {held} held for review"
        if study.mode == Study.Mode.PAIRWISE:
            detail += f", {pairs_create(study=study)} pairs"
        study.status = Study.Status.RATING
        study.rating_opened_at = timezone.now()
        study.save(update_fields=["status", "rating_opened_at"])
        _event(study, StudyEvent.Kind.RATING_OPENED, None, detail)
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
            arm.label,
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
