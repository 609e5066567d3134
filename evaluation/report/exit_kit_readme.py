"""The words inside an exit kit: ``README.txt`` and the note on each study in the manifest.

A kit outlives the app that wrote it and the person who asked for it, so it says itself
what it holds and, above all, what it leaves out and why.
"""

from __future__ import annotations

from django.utils import timezone

from evaluation.models import Study

LAYOUT = """\
What is here
  finetune-<id>/          one hosted fine-tune: job.json (provider, base model,
                          hyperparameters, remote ids, the validation share or snapshot
                          and the held-out items), events.log, metrics.json (losses, the
                          provider's checkpoints), snapshot.jsonl (the training file
                          exactly as uploaded: without the held-out examples),
                          validation.jsonl (only for a job with validation: the validation
                          file as uploaded), result.json (the model id and its shutdown
                          date), outputs.jsonl (every output sampled from it, with the
                          ratings of each closed study)
  model-version-<id>/     one hosted model sampled as is (a base arm such as plain
                          gpt-4o-mini, which shuts down too): version.json, outputs.jsonl
  studies/study-<id>.zip  the bundle of each closed study with an arm on one of these
                          models: ratings, the HTML report, the analysis settings
  exit-kit.json           all of the above with SHA-256 sums

Replay every study's report from its ratings:
  python manage.py replay_report <this kit>.zip

The folders name the model of every output they hold: keep the kit with the admins, away
from raters.
"""


def study_note(study: Study) -> str:
    """Why a study's bundle is, or is not, complete (the manifest and the README say it)."""
    if study.status != Study.Status.CLOSED:
        return (
            "Open: no bundle, and its outputs come without ratings (ratings leave the app once "
            "rating is over). Close it and write the kit again."
        )
    if not study.is_unblinded:
        return (
            "Closed but not unblinded: its bundle leaves out arms, model versions and "
            "snapshot hashes (blinding holds until a researcher unblinds it), so it does not "
            "say which model wrote which output. Unblind it and write the kit again to keep "
            "that."
        )
    return "Closed and unblinded: the bundle has arms and model versions."


def kit_readme(scope, studies: dict[str, list[Study]]) -> str:
    """README.txt: what the kit holds, how to replay it, and each study's state."""
    lines = [
        f"palmsweb hosted exit kit, written {timezone.now():%Y-%m-%d %H:%M} UTC.",
        f"{len(scope.finetunes)} hosted fine-tune(s), {len(scope.base_versions)} hosted "
        "model(s) sampled as is.",
        "",
        LAYOUT,
        "Studies",
    ]
    everyone = sorted(studies["closed"] + studies["open"], key=lambda s: s.pk)
    for study in everyone:
        lines.append(f"  study {study.pk} ({study.name}): {study_note(study)}")
    if not everyone:
        lines.append("  No study has an arm on these models.")
    return "\n".join(lines) + "\n"
