"""Export a study's ratings or its bundle synchronously (the same code the task runs)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evaluation.models import Study
from evaluation.report.exports import ExportError, write_export


class Command(BaseCommand):
    help = (
        "Write a study's ratings as CSV, JSON Lines or Parquet, or the study bundle (zip). "
        "Closed studies only; arms appear only when the study is unblinded."
    )

    def add_arguments(self, parser):
        parser.add_argument("study_id", type=int)
        parser.add_argument(
            "--format", choices=["csv", "jsonl", "parquet", "bundle"], default="csv"
        )
        parser.add_argument("--out", required=True, help="The file to write.")

    def handle(self, *args, study_id: int, format: str, out: str, **options):
        study = Study.objects.select_related("prompt_set").filter(pk=study_id).first()
        if study is None:
            raise CommandError(f"No study with id {study_id}.")
        if study.status != Study.Status.CLOSED:
            raise CommandError("Ratings can be exported once the study is closed.")
        path = Path(out).resolve()
        try:
            written = write_export(study, format, path, includes_arms=study.is_unblinded)
        except ExportError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{written.path}  {written.rows} rows  {written.size} bytes  sha256 {written.sha256}"
            + ("" if study.is_unblinded else "  (blinded: no arms)")
        )
