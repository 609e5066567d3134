"""Recompute a study report's numbers from its export bundle alone and list every number
that differs from the one the report recorded (none, on an unchanged bundle)."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evaluation.report.exit_kit import is_exit_kit, replay_exit_kit
from evaluation.report.replay import BundleError, replay_bundle


def _show(value) -> str:
    return json.dumps(value, ensure_ascii=False)


class Command(BaseCommand):
    help = (
        "Replay a study bundle: rerun the report's analysis on its ratings.csv with the seed "
        "and settings of its manifest, and print every number that differs. A hosted exit "
        "kit replays each study bundle it holds."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "bundle", type=Path, help="The study bundle (.zip), or a hosted exit kit, to replay."
        )

    def handle(self, *args, bundle: Path, **options):
        if not bundle.is_file():
            raise CommandError(f"No such file: {bundle}")
        if is_exit_kit(bundle):
            return self._replay_kit(bundle)
        try:
            recorded, replayed, differing = replay_bundle(bundle)
        except BundleError as exc:
            raise CommandError(str(exc)) from exc
        self._report(recorded, replayed, differing)

    def _replay_kit(self, kit: Path) -> None:
        try:
            results = replay_exit_kit(kit)
        except BundleError as exc:
            raise CommandError(str(exc)) from exc
        if not results:
            self.stdout.write("The exit kit holds no closed study's bundle: nothing to replay.")
        for name, recorded, replayed, differing in results:
            self.stdout.write(f"{name}:")
            self._report(recorded, replayed, differing)

    def _report(self, recorded: dict, replayed: dict, differing: list) -> None:
        for key, old, new in differing:
            self.stdout.write(f"{key}: report {_show(old)} → replay {_show(new)}")
        summary = f"{len(differing)} of {len(recorded)} numbers differ."
        if differing:
            raise CommandError(summary)
        self.stdout.write(self.style.SUCCESS(f"Replayed {len(replayed)} numbers: none differ."))
