"""Studies ready to rate, built through the real services with a fake sampling run.

Internal ids start at distinctive values (``IDS``) so the blinding tests can look for them
in pages: a leaked ``770002`` is unmistakable, a leaked ``2`` is not.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import pytest
from django.db import connection
from django.utils import timezone

from evaluation.models import Prompt, PromptSet, Study, StudyArm, StudyOutput, StudyPair
from evaluation.studies import lifecycle
from tests.conftest import make_user
from tests.factories import CategoryFactory
from training.models import BaseModel, Generation, JobStatus, ModelVersion, SamplingJob

IDS = {
    BaseModel: 330_001,
    ModelVersion: 770_001,
    SamplingJob: 880_001,
    Generation: 990_001,
    StudyArm: 440_001,
    StudyOutput: 660_001,
    StudyPair: 550_001,
}

# Names a rater must never meet. The model names are made up so that they cannot occur
# in a page by accident.
BASE_MODEL_NAME = "Quokkalith-77M-Instruct"
VERSION_NAMES = {
    "base": "Quokkalith-77M-Instruct (base)",
    "control": "Quokkalith ctl-ft-4417",
    "values_targeted": "Quokkalith vt-ft-5523",
}
SIZE_TAG = "Tiny-77M"
LABELLED_VERSION_NAME = "Quokkalith vt-dpo-6631"  # build_study(labelled=...)


def start_ids_at(model, value: int) -> None:
    """Make the next auto id of ``model`` equal ``value`` (PostgreSQL or SQLite)."""
    table = model._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, false)", [table, value]
            )
        else:
            cursor.execute("DELETE FROM sqlite_sequence WHERE name = %s", [table])
            cursor.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %s)", [table, value - 1]
            )


def distinctive_ids() -> None:
    for model, value in IDS.items():
        highest = model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        start_ids_at(model, max(value, highest + 1))


@pytest.fixture
def no_queue(monkeypatch, no_training_queue):
    """Opening a study queues a sampling job and a sync task; tests run them by hand."""
    monkeypatch.setattr(
        "evaluation.tasks.sync_study_sampling.apply_async", lambda *args, **kwargs: None
    )


def make_versions() -> dict[str, ModelVersion]:
    base, _ = BaseModel.objects.get_or_create(
        name=BASE_MODEL_NAME,
        defaults={
            "kind": BaseModel.Kind.LOCAL_DIR,
            "path": "/nonexistent/quokka",
            "parameter_count": 77_000_000,
        },
    )
    return {
        arm: ModelVersion.objects.get_or_create(
            base_model=base, name=name, arm=arm, defaults={"parameter_count": 77_000_000}
        )[0]
        for arm, name in VERSION_NAMES.items()
    }


def make_prompt_set(n_categories: int = 2, per_category: int = 2) -> PromptSet:
    prompt_set = PromptSet.objects.create(name=f"Eval prompts {PromptSet.objects.count()}")
    order = 0
    for c in range(n_categories):
        category = CategoryFactory(position=f"Position text for category {c}: be careful.")
        for p in range(per_category):
            order += 1
            Prompt.objects.create(
                prompt_set=prompt_set,
                order=order,
                category=category,
                text=f"Evaluation prompt {c}-{p}: what should one do?",
            )
    return prompt_set


def fake_sampling_run(study: Study, text=None) -> None:
    """What a sampling worker would store, then mark the job succeeded."""
    job = study.sampling_job
    text = text or (
        lambda version, prompt_index, sample_index: (
            f"A careful answer ({secrets.token_hex(3)}) to prompt {prompt_index}."
        )
    )
    rows = [
        Generation(
            job=job,
            model_version=version,
            prompt_index=p,
            sample_index=s,
            prompt_text=prompt["text"],
            text=text(version, p, s),
            temperature=0.7,
            top_p=0.9,
            max_new_tokens=50,
            seed=s,
        )
        for version in job.model_versions.order_by("pk")
        for p, prompt in enumerate(job.prompts)
        for s in range(job.n_samples)
    ]
    Generation.objects.bulk_create(rows)
    SamplingJob.objects.filter(pk=job.pk).update(
        status=JobStatus.SUCCEEDED, progress_done=len(rows), finished_at=timezone.now()
    )


@dataclass
class Setup:
    study: Study
    raters: list
    admin: object
    versions: dict[str, ModelVersion] = field(default_factory=dict)


def build_study(
    *,
    raters: int = 3,
    raters_per_output: int = 3,
    samples: int = 1,
    n_categories: int = 2,
    per_category: int = 2,
    arms=("base", "control", "values_targeted"),
    lease_minutes=10,
    open_rating: bool = True,
    text=None,
    rater_prefix: str = "rater",
    mode: str = Study.Mode.SCALE,
    labelled: str = "",
    prompt_set: PromptSet | None = None,
    versions: dict[str, ModelVersion] | None = None,
) -> Setup:
    """``labelled``: add a second values-targeted arm at the same size with this free label
    (its model version is ``versions["labelled"]``, as a DPO'd successor would be).
    ``prompt_set``: rate this set (its profile's raters) instead of a new one; ``versions``:
    model versions that replace the usual ones, by arm."""
    distinctive_ids()
    from palmsweb.roles import Role, grant_role

    prompt_set = prompt_set or make_prompt_set(n_categories, per_category)
    admin = make_user(f"admin-{rater_prefix}", Role.ADMIN, staff=True)
    people = [make_user(f"{rater_prefix}{i}", Role.RATER) for i in range(raters)]
    for person in people:
        grant_role(person, Role.RATER, prompt_set.profile_id)
    versions = make_versions() | (versions or {})
    specs = [lifecycle.ArmSpec(arm=a, model_version=versions[a], size_tag=SIZE_TAG) for a in arms]
    if labelled:
        versions["labelled"] = ModelVersion.objects.create(
            base_model=versions["values_targeted"].base_model, name=LABELLED_VERSION_NAME,
            arm="values_targeted", parameter_count=77_000_000,
        )  # fmt: skip
        specs.append(lifecycle.ArmSpec(arm="values_targeted", model_version=versions["labelled"],
                                       size_tag=SIZE_TAG, label=labelled))  # fmt: skip
    study = lifecycle.study_create(
        name="Kindness study",
        prompt_set=prompt_set,
        arms=specs,
        raters=people,
        samples_per_prompt=samples,
        raters_per_output=raters_per_output,
        lease_minutes=lease_minutes,
        mode=mode,
        user=admin,
    )
    if open_rating:
        study = lifecycle.study_open(study=study, user=admin)
        fake_sampling_run(study, text)
        study = lifecycle.study_sync_sampling(study_id=study.pk)
        assert study.status == Study.Status.RATING
    return Setup(study=study, raters=people, admin=admin, versions=versions)


@pytest.fixture
def rating_study(db, no_queue) -> Setup:
    """3 arms × 4 prompts × 1 sample = 12 outputs, 3 raters, 3 ratings each."""
    return build_study()


@pytest.fixture
def pairwise_study(db, no_queue) -> Setup:
    """3 arms × 4 prompts × 1 sample = 12 outputs, 3 arm pairs per prompt = 12 pairs,
    3 raters, 3 judgments each."""
    return build_study(mode=Study.Mode.PAIRWISE)
