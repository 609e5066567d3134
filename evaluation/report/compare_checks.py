"""What a comparison of two studies must say besides its numbers: whether the two rated the
same prompts, which position each study's raters judged each category against, and whether
each values-targeted arm was trained on its own study's value profile.

"Same model, different values" holds only when both studies asked the same questions (a
prompt set copied from one profile into the other keeps every prompt word for word) and each
profile's fine-tune learned from that profile's own data; otherwise the page says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import ObjectDoesNotExist

from evaluation.models import Prompt, Study
from evaluation.studies.positions import frozen_versions
from palmsweb.models import Profile
from training.models import FineTuneJob, ModelVersion


@dataclass(frozen=True)
class PromptOverlap:
    """Distinct prompt texts of each study's prompt set, and how many both have (exact
    text)."""

    shared: int
    n_a: int
    n_b: int

    @property
    def same_prompts(self) -> bool:
        return self.shared == self.n_a == self.n_b

    @property
    def warning(self) -> str:
        if self.same_prompts:
            return ""
        return (
            f"The two studies do not rate the same prompts: they share {self.shared} prompts "
            f"(same text) of A's {self.n_a} and B's {self.n_b}. Differences per category may "
            "come from the questions, not the models; copy one study's prompt set into the "
            "other profile to compare on the same prompts."
        )


def prompt_overlap(a: Study, b: Study) -> PromptOverlap:
    """How many prompts the two studies' sets share by exact text, of how many each has."""
    texts_a, texts_b = _prompt_texts(a), _prompt_texts(b)
    return PromptOverlap(shared=len(texts_a & texts_b), n_a=len(texts_a), n_b=len(texts_b))


def _prompt_texts(study: Study) -> set[str]:
    prompts = Prompt.objects.filter(prompt_set_id=study.prompt_set_id)
    return set(prompts.values_list("text", flat=True))


@dataclass(frozen=True)
class FrozenPosition:
    """The version of a category's position a study froze when it opened."""

    version: int
    text: str


def frozen_positions(study: Study) -> dict[int, FrozenPosition]:
    """{category id: the position version the study froze}; empty for a study that froze
    none (it opened before positions were versioned)."""
    return {
        v.category_id: FrozenPosition(version=v.number, text=v.position)
        for v in frozen_versions(study)
    }


@dataclass(frozen=True)
class TrainingCheck:
    """Which profile's snapshot trained one values-targeted arm of a study."""

    study: Study
    arm: str
    model_version: str
    # None: no fine-tune of this version is on record, or the reader is no member of the
    # profile that trained it (its name is not theirs to read: "another value profile").
    trained_profile_id: int | None
    trained_profile: str | None  # its name
    own_profile: bool
    on_record: bool = True

    @property
    def warning(self) -> str:
        if self.own_profile:
            return ""
        where = f"“{self.study.name}” ({self.study.prompt_set.profile.name})"
        if not self.on_record:
            return (
                f"The values-targeted arm {self.arm} of {where} ({self.model_version}) has no "
                "fine-tune on record, so nothing shows it learned this profile's values."
            )
        return (
            f"The values-targeted arm {self.arm} of {where} ({self.model_version}) was "
            f"trained on a snapshot of {self.trained_profile or 'another value profile'}, not "
            "of its own profile: its lead is not that profile's values at work."
        )


def training_checks(
    study: Study, readable_profiles: Iterable[int] | None = None
) -> list[TrainingCheck]:
    """One check per values-targeted arm: the profile of the fine-tune that made its model
    version (through the version's fine-tune or checkpoint), by name, named only when it
    is among ``readable_profiles`` (the reader's; None: every profile)."""
    readable = None if readable_profiles is None else set(readable_profiles)
    arms = study.arms.filter(arm=ModelVersion.Arm.VALUES_TARGETED).select_related("model_version")
    checks = []
    for arm in arms.order_by("pk"):
        job = _training_job(arm.model_version)
        profile_id = job.profile_id if job is not None else None
        own = profile_id == study.prompt_set.profile_id
        if profile_id is not None and readable is not None and profile_id not in readable:
            profile_id = None  # a profile the reader is no member of stays unnamed
        name = (
            Profile.objects.filter(pk=profile_id).values_list("name", flat=True).first()
            if profile_id is not None
            else None
        )
        checks.append(
            TrainingCheck(
                study, str(arm), arm.model_version.name, profile_id, name,
                own_profile=own, on_record=job is not None,
            )
        )  # fmt: skip
    return checks


def _training_job(version: ModelVersion) -> FineTuneJob | None:
    """The fine-tune whose result (or checkpoint) ``version`` is, or None."""
    for path in ("finetune", "checkpoint"):
        try:
            found = getattr(version, path)
        except ObjectDoesNotExist:
            continue
        return found if path == "finetune" else found.job
    return None
