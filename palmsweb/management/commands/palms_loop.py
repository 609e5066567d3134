"""The PALMS loop, scripted on the demo content with the default model.

Fine-tunes a values-targeted and a control model, opens a blinded study of base / control /
values-targeted, samples every output, scores toxicity, capability and co-occurrence, and
writes the report (human ratings pending). Every stage goes through the same services the
web app and the workers use; each job runs in this process unless a worker claimed it first,
in which case the command waits for the worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from curation.demo import (
    CONTROL,
    VALUES_TARGETED,
    demo_profile,
    load_demo_content,
    load_demo_validation,
)
from curation.models import Snapshot
from training import services as training
from training.models import BaseModel, FineTuneJob, JobStatus, ModelVersion, SamplingJob

FINISHED = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


def adherence_cell(cell: dict | None) -> str:
    """"-12.3% [-20.1%, -4.0%]": the perplexity change against base and its interval."""
    if not cell or cell.get("change") is None:
        return "n/a"
    if cell.get("ci_low") is None or cell.get("ci_high") is None:
        return f"{cell['change']:+.1%}"
    return f"{cell['change']:+.1%} [{cell['ci_low']:+.1%}, {cell['ci_high']:+.1%}]"


class Command(BaseCommand):
    help = "Run the PALMS loop on the demo content with the default model and print timings."

    def add_arguments(self, parser):
        parser.add_argument(
            "--base-model",
            default="",
            help="Name of a registered local base model (default: SmolLM2).",
        )
        parser.add_argument("--epochs", type=int, default=3)
        parser.add_argument("--method", choices=["full", "lora"], default="full")
        parser.add_argument("--samples-per-prompt", type=int, default=3)
        parser.add_argument("--max-new-tokens", type=int, default=120)
        parser.add_argument(
            "--cooccurrence-n",
            type=int,
            default=4,
            help="Completions per co-occurrence template and arm (0 skips).",
        )
        parser.add_argument(
            "--report",
            type=Path,
            default=None,
            help="Where to write the HTML report (default: ARTIFACTS_DIR).",
        )

    def handle(self, *args, **options):
        self.timings: list[tuple[str, float]] = []
        admin = get_user_model().objects.filter(is_superuser=True).first()
        with self.stage("prepare demo content and the base model"):
            base_version = self.prepare(admin, options["base_model"])
        with self.stage("fine-tune values-targeted"):
            values = self.finetune(
                VALUES_TARGETED.name, ModelVersion.Arm.VALUES_TARGETED, options, admin
            )
        with self.stage("fine-tune control"):
            control = self.finetune(CONTROL.name, ModelVersion.Arm.CONTROL, options, admin)
        with self.stage("open the study and sample every output"):
            study = self.open_study(base_version, control, values, options, admin)
        with self.stage("toxicity (offline scorer)"):
            self.score(study, "toxicity", admin)
        with self.stage("capability (perplexity, multiple choice)"):
            self.score(study, "capability", admin)
        with self.stage("held-out adherence (the demo validation set)"):
            self.score(study, "adherence", admin)
            self.print_adherence(study)
        if options["cooccurrence_n"]:
            with self.stage("co-occurrence"):
                self.score(
                    study, "cooccurrence", admin, {"n_per_template": options["cooccurrence_n"]}
                )
        with self.stage("write the report"):
            path = self.write_report(study, options["report"])
        self.summary(study, path)

    # --- stages ------------------------------------------------------------------------

    @contextmanager
    def stage(self, name: str):
        self.stdout.write(self.style.MIGRATE_HEADING(f"▶ {name}"))
        started = time.monotonic()
        yield
        elapsed = time.monotonic() - started
        self.timings.append((name, elapsed))
        self.stdout.write(f"  done in {elapsed:.0f} s")

    def prepare(self, admin, base_model_name: str) -> ModelVersion:
        from evaluation.studies.prompt_sets import load_demo_prompt_set

        load_demo_content(user=admin)
        load_demo_validation(user=admin)  # the held-out set of the adherence stage
        load_demo_prompt_set()
        if base_model_name:
            base = BaseModel.objects.filter(name=base_model_name).first()
            if base is None or not base.is_local:
                raise CommandError(f"No local base model named {base_model_name!r}.")
        else:
            base = training.base_model_register_default()
        training.local_model_path(base)  # converts the packaged GGUF once
        self.base_model = base
        return training.base_version(base)

    def finetune(self, dataset_name: str, arm: str, options, admin) -> ModelVersion:
        snapshot = Snapshot.objects.filter(
            dataset__profile=demo_profile(), dataset__name=dataset_name
        ).first()
        if snapshot is None:
            raise CommandError(f"No snapshot of {dataset_name!r}.")
        job = training.finetune_launch(
            base_model=self.base_model,
            snapshot=snapshot,
            arm=arm,
            method=options["method"],
            hyperparameters={"epochs": options["epochs"]},
            user=admin,
        )
        self.stdout.write(f"  job #{job.pk}: ~{job.estimated_tokens:,} training tokens")
        job = self.run_here(training.finetune_execute, FineTuneJob, job.pk)
        self.stdout.write(f"  {job.tokens_per_second or 0:.0f} tokens/s → {job.result}")
        return job.result

    def open_study(self, base, control, values, options, admin):
        from evaluation.models import PromptSet, Study
        from evaluation.studies import lifecycle, prompt_sets
        from evaluation.studies.rater_pool import rater_pool_candidates

        raters = list(rater_pool_candidates(demo_profile().pk))  # not admins
        if len(raters) < 3:
            raise CommandError("The study needs 3 raters: run `manage.py seed_demo` first.")
        size = base.size_label
        study = lifecycle.study_create(
            name=f"PALMS loop {time.strftime('%Y-%m-%d %H:%M')}",
            prompt_set=PromptSet.objects.get(
                profile=demo_profile(), name=prompt_sets.DEMO_PROMPT_SET_NAME
            ),
            arms=[
                lifecycle.ArmSpec(arm=v.arm, model_version=v, size_tag=size)
                for v in (base, control, values)
            ],
            raters=raters,
            samples_per_prompt=options["samples_per_prompt"],
            max_new_tokens=options["max_new_tokens"],
            user=admin,
        )
        study = lifecycle.study_open(study=study, user=admin)
        self.run_here(training.sampling_execute, SamplingJob, study.sampling_job_id)
        study = lifecycle.study_sync_sampling(study_id=study.pk)
        if study.status != Study.Status.RATING:
            raise CommandError(f"Sampling did not open rating: {study.status}.")
        self.stdout.write(f"  study #{study.pk}: {study.outputs.count()} outputs to rate")
        return study

    def score(self, study, kind: str, admin, options: dict | None = None) -> None:
        from evaluation import scoring
        from evaluation.models import ScoringRun

        run = scoring.scoring_run_start(study=study, kind=kind, options=options, user=admin)
        if kind == "toxicity":
            scoring.toxicity_execute(run.pk)
        elif kind == "capability":
            scoring.capability_execute(run.pk)
        elif kind == "adherence":
            scoring.adherence_execute(run.pk)
        else:
            scoring.cooccurrence_advance(run.pk)  # claims the run and launches sampling
            run.refresh_from_db()
            job_id = run.options.get("sampling_job_id")
            if job_id:
                self.run_here(training.sampling_execute, SamplingJob, job_id)
            while scoring.cooccurrence_advance(run.pk):
                time.sleep(1)
        run = self.wait(ScoringRun, run.pk, {"succeeded", "failed"})
        if run.status != "succeeded":
            raise CommandError(f"{kind} failed: {run.error}")

    def print_adherence(self, study) -> None:
        """Per category, how much lower (negative) or higher the perplexity of the held-out
        target answers is under each fine-tune than under the base model, with its 95%
        interval over held-out samples (2 per category in the demo: read it as descriptive)."""
        from evaluation.models import ScoringRun

        run = ScoringRun.objects.filter(study=study, kind="adherence").latest("pk")
        arms = {str(arm.pk): arm for arm in study.arms.all() if arm.arm != "base"}
        scored = {pk: run.result["arms"].get(pk, {}) for pk in arms}
        labels = {pk: arm.get_arm_display() for pk, arm in arms.items()}
        categories = next((s["categories"] for s in scored.values() if "categories" in s), {})
        self.stdout.write(f"  held-out answer perplexity vs base ({run.result['snapshot']['n']} "
                          f"samples of {run.result['snapshot']['dataset']}):")  # fmt: skip
        self.stdout.write("    " + f"{'category':44}" + "".join(f"{labels[pk]:>32}" for pk in arms))
        for name in categories:
            cells = [adherence_cell(scored[pk].get("categories", {}).get(name)) for pk in arms]
            self.stdout.write("    " + f"{name[:44]:44}" + "".join(f"{c:>32}" for c in cells))

    def write_report(self, study, path: Path | None) -> Path:
        from django.conf import settings

        from evaluation.report.document import render_report_document

        path = path or Path(settings.ARTIFACTS_DIR) / "reports" / f"study-{study.pk}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        # The admin's view: arms named (the study is the admin's own run; raters never see it).
        path.write_text(render_report_document(study, "arms"), encoding="utf-8")
        return path

    def summary(self, study, path: Path) -> None:
        total = sum(seconds for _, seconds in self.timings)
        self.stdout.write(self.style.SUCCESS("\nPALMS loop finished"))
        for name, seconds in self.timings:
            self.stdout.write(f"  {seconds:7.0f} s  {name}")
        self.stdout.write(f"  {total:7.0f} s  total ({total / 60:.1f} min)")
        self.stdout.write(f"Study #{study.pk} is open for rating; report: {path}")

    # --- running jobs ------------------------------------------------------------------

    def run_here(self, execute: Callable[[int], None], model, pk: int):
        """Run a queued job in this process; if a worker claimed it first, wait for it."""
        watcher = self.watch(model, pk)
        try:
            execute(pk)
            job = self.wait(model, pk, FINISHED)
        finally:
            watcher.set()
        if job.status != JobStatus.SUCCEEDED:
            raise CommandError(f"{model.__name__} #{pk} {job.status}: {job.error}")
        return job

    def wait(self, model, pk: int, statuses, *, poll: float = 1.0):
        while True:
            obj = model.objects.get(pk=pk)
            if obj.status in statuses:
                return obj
            time.sleep(poll)

    def watch(self, model, pk: int) -> threading.Event:
        """Print a job's progress every 15 s from a thread, until the event is set."""
        stop = threading.Event()

        def report() -> None:
            from django.db import connection

            try:
                while not stop.wait(15):
                    job = model.objects.get(pk=pk)
                    eta = f", ETA {job.eta_seconds:.0f} s" if job.eta_seconds else ""
                    self.stdout.write(
                        f"  … {job.progress_done}/{job.progress_total} ({job.percent}%){eta}"
                    )
            finally:
                connection.close()

        threading.Thread(target=report, daemon=True).start()
        return stop
