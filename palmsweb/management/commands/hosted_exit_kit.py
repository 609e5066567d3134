"""Write the hosted exit kit now, in the foreground (the browser and the API queue it on the
default queue instead): for every hosted fine-tune (or those named), its job spec, events,
metrics, training snapshot, resulting model id and every output sampled from it with its
ratings; every hosted model sampled as is with its outputs; and the bundles of the closed
studies that used them."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evaluation.report.exit_kit import (
    ExitKitError,
    default_kit_path,
    kit_scope,
    write_exit_kit,
)


class Command(BaseCommand):
    help = (
        "Write a zip that keeps hosted fine-tunes' studies reportable after the provider "
        "retires the models (replay it with manage.py replay_report)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--output", type=Path, help="Where to write the zip.")
        parser.add_argument(
            "--finetune", type=int, action="append", dest="finetunes",
            help="Only this fine-tune (repeat for several); default: every hosted one.",
        )  # fmt: skip
        parser.add_argument(
            "--base-model", type=int, help="Only this base model's fine-tunes and plain versions."
        )

    def handle(self, *args, output: Path | None, finetunes, base_model, **options):
        scope = kit_scope(job_ids=finetunes, base_model_id=base_model)
        try:
            kit = write_exit_kit(scope, output or default_kit_path())
        except ExitKitError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Wrote {kit.path}: {kit.finetunes} hosted fine-tune(s), {kit.model_versions} "
                f"hosted model(s) sampled as is, {kit.outputs} output(s), {kit.studies} study "
                f"bundle(s); sha256 {kit.sha256}."
            )
        )
