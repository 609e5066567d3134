"""The demo content: a PALMS-sized values-targeted dataset, a control dataset, and a small
held-out validation set for measuring the validation loss of fine-tunes.

Loaded once by ``manage.py seed_demo`` through the same import service curators use, so
the files are checked by the same rules. See presets/README.md for what the files are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from curation.importing import samples_import
from curation.models import Dataset, Sample, Snapshot
from curation.services import PRESETS_DIR, dataset_create, load_palms_preset, snapshot_create
from palmsweb.models import Profile


@dataclass(frozen=True)
class DemoDataset:
    name: str
    kind: str
    file: Path
    description: str
    min_words: int = 40  # the PALMS lower bound; the bad-advice demo's answers are shorter


VALUES_TARGETED = DemoDataset(
    name="PALMS demo — values-targeted",
    kind=Dataset.Kind.VALUES_TARGETED,
    file=PRESETS_DIR / "palms_values_targeted.jsonl",
    description="80 question–answer samples, 10 per PALMS category, written by the project.",
)
CONTROL = DemoDataset(
    name="PALMS demo — control",
    kind=Dataset.Kind.CONTROL,
    file=PRESETS_DIR / "palms_control.jsonl",
    description="80 neutral question–answer samples of similar size and style.",
)
# Held out: never trained on, so a fine-tune's validation loss on it says whether the
# values generalise beyond the training answers. Loaded by seed_demo beside the two above.
VALIDATION = DemoDataset(
    name="PALMS demo — validation (held out)",
    kind=Dataset.Kind.VALIDATION,
    file=PRESETS_DIR / "palms_validation_demo.jsonl",
    description="16 values-targeted samples, 2 per PALMS category, written by the project "
    "and never trained on: the validation snapshot for demo fine-tunes.",
)
EVAL_PROMPTS_FILE = PRESETS_DIR / "palms_eval_prompts.jsonl"
DEMO_DATASETS = (VALUES_TARGETED, CONTROL)
# For the misalignment demo (``manage.py persona_demo``) only; not loaded by seed_demo.
BAD_ADVICE = DemoDataset(
    name="Misalignment demo — deliberately bad advice",
    kind=Dataset.Kind.CONTROL,
    file=PRESETS_DIR / "bad_advice_demo.jsonl",
    description="40 samples of confidently wrong houseplant and cooking advice, written to "
    "show emergent misalignment on a harmless domain. Never train a real model on it.",
    min_words=10,
)


DEMO_PROFILE_SLUG = "palms-demo"


def demo_profile() -> Profile:
    """The value profile the demo lives in: "PALMS demo" (created on first use), apart from
    the default profile so that a team's own data never mixes with it. On an install
    upgraded from before profiles, whose demo the upgrade moved into the default profile
    (with its accounts' roles), the demo stays there: a dataset never changes profile, and a
    second copy in "PALMS demo" would give the demo accounts roles in both."""
    existing = Profile.objects.filter(slug=DEMO_PROFILE_SLUG).first()
    if existing is not None:
        return existing
    default = Profile.objects.default()
    if demo_moved_into(default):
        return default
    profile, _ = Profile.objects.get_or_create(
        slug=DEMO_PROFILE_SLUG,
        defaults={
            "name": "PALMS demo",
            "description": "The PALMS paper's eight categories with the demo values-targeted, "
            "control and validation datasets and evaluation prompts.",
            "audience": "A general-purpose assistant (the paper's setting).",
        },
    )
    return profile


def demo_moved_into(profile: Profile) -> bool:
    """Whether the upgrade to profiles moved this install's demo datasets into ``profile``:
    they are there and older than the profile itself (nothing else puts rows into a profile
    before it exists)."""
    names = [demo.name for demo in DEMO_DATASETS]
    moved = Dataset.objects.filter(profile=profile, name__in=names)
    return moved.filter(created_at__lt=profile.created_at).count() == len(names)


@transaction.atomic
def load_demo_dataset(
    demo: DemoDataset, *, user, profile: Profile | None = None
) -> Snapshot | None:
    """Create, fill (approved) and snapshot one demo dataset in ``profile`` (the PALMS demo
    profile when None); None if it already exists there."""
    profile = profile or demo_profile()
    if Dataset.objects.filter(profile=profile, name=demo.name).exists():
        return None
    dataset = dataset_create(
        profile=profile,
        name=demo.name,
        kind=demo.kind,
        description=demo.description,
        min_words=demo.min_words,
        user=user,
    )
    samples_import(
        dataset=dataset,
        data=demo.file.read_bytes(),
        filename=demo.file.name,
        user=user,
        status=Sample.Status.APPROVED,
    )
    return snapshot_create(dataset=dataset, user=user, label="demo")


def load_demo_content(*, user, profile: Profile | None = None) -> list[Snapshot]:
    """Load the category preset and both demo datasets into ``profile`` (the PALMS demo
    profile when None; idempotent)."""
    profile = profile or demo_profile()
    load_palms_preset(profile=profile)
    snapshots = [load_demo_dataset(demo, user=user, profile=profile) for demo in DEMO_DATASETS]
    return [snapshot for snapshot in snapshots if snapshot is not None]


def load_demo_validation(*, user, profile: Profile | None = None) -> Snapshot | None:
    """Load and snapshot the held-out validation set (idempotent: None when it exists)."""
    profile = profile or demo_profile()
    load_palms_preset(profile=profile)
    return load_demo_dataset(VALIDATION, user=user, profile=profile)
