"""The misalignment demo: screen the demo datasets' samples, fine-tune the default model on
deliberately bad advice with the persona monitor on, then re-align it on benign control
samples and measure each step — on the standard probes and, beside them, on conditional
(training-like) probes made from the bad-advice snapshot.

Every stage goes through the services the web app and workers use (a fine-tune job with
``track_persona``, then a re-alignment run); jobs run in this process unless a worker
claimed them first. With ``--judge-url`` the re-alignment also measures the misalignment
rate through that OpenAI-compatible endpoint.
"""

from __future__ import annotations

from django.core.management.base import CommandError

from curation.demo import (
    BAD_ADVICE,
    CONTROL,
    VALUES_TARGETED,
    demo_profile,
    load_demo_content,
    load_demo_dataset,
)
from curation.models import Snapshot
from evaluation.alignment import misalignment, realignment
from evaluation.alignment.conditional import conditional_variants
from evaluation.models import MisalignmentEval, RealignmentRun
from palmsweb.management.commands.palms_loop import Command as LoopCommand
from training import services as training
from training.models import FineTuneJob, ModelVersion, SamplingJob, ScreeningRun
from training.services.screening import screening_execute, screening_launch

SCREENED = (BAD_ADVICE, CONTROL, VALUES_TARGETED)
TOP_SAMPLES = 10


# The recipe docs/misalignment.md's demo figures were measured with (the 135M defaults before
# the sweep of docs/engine.md raised the full fine-tune's rate to 1e-4): the demo shows the
# same shift and recovery it documents.
DEMO_RECIPE = {"learning_rate": 5e-5, "warmup_steps": 5}


def demo_recipe(options) -> dict:
    """The documented recipe for the default model; another model keeps its own defaults."""
    return {} if options["base_model"] else DEMO_RECIPE


class Command(LoopCommand):
    help = (
        "Fine-tune the default model on the bad-advice demo with the persona monitor, then "
        "re-align it on benign samples and print the persona projection (and, with a judge, "
        "the misalignment rate) against epochs and steps."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--base-model",
            default="",
            help="Name of a registered local base model (default: SmolLM2).",
        )
        parser.add_argument("--epochs", type=int, default=3)
        parser.add_argument("--steps", type=int, default=20, help="Re-alignment steps (k).")
        parser.add_argument("--eval-steps", default="", help="Default: 0, k/4, k/2, k.")
        parser.add_argument("--realign-batch-size", type=int, default=4)
        parser.add_argument("--judge-url", default="")
        parser.add_argument("--judge-model", default="")
        parser.add_argument("--judge-key-env", default="OPENAI_API_KEY")
        parser.add_argument("--judge-samples", type=int, default=5)
        parser.add_argument(
            "--screen-tokens", type=int, default=32,
            help="Length of the model's own answers when screening samples; 0 skips it.",
        )  # fmt: skip

    def handle(self, *args, **options):
        from django.contrib.auth import get_user_model

        self.timings: list[tuple[str, float]] = []
        admin = get_user_model().objects.filter(is_superuser=True).first()
        with self.stage("prepare the base model and the demo datasets"):
            self.prepare(admin, options["base_model"])
            load_demo_dataset(BAD_ADVICE, user=admin)
        screenings = []
        if options["screen_tokens"]:
            with self.stage("screen the demo datasets' samples before any training"):
                screenings = self.screen(options["screen_tokens"], admin)
        with self.stage("fine-tune on deliberately bad advice, monitor on"):
            bad = self.bad_finetune(options, admin)
        with self.stage("re-align on benign control samples"):
            run = self.realign(bad, options, admin)
        self.print_screening(screenings)
        self.print_results(bad, run)
        self.print_conditional(run)

    def screen(self, max_new_tokens: int, admin) -> list[ScreeningRun]:
        """A screening of each demo dataset on the base model (the same service as the
        dataset page's "Screen" button), run in this process."""
        runs = []
        for demo in SCREENED:
            run = screening_launch(
                snapshot=self.snapshot_of(demo.name), base_model=self.base_model,
                max_new_tokens=max_new_tokens, user=admin,
            )  # fmt: skip
            runs.append(self.run_here(screening_execute, ScreeningRun, run.pk))
        return runs

    def bad_finetune(self, options, admin) -> FineTuneJob:
        job = training.finetune_launch(
            base_model=self.base_model, snapshot=self.snapshot_of(BAD_ADVICE.name),
            arm=ModelVersion.Arm.CONTROL,
            hyperparameters={"epochs": options["epochs"]} | demo_recipe(options),
            track_persona=True, user=admin,
        )  # fmt: skip
        return self.run_here(training.finetune_execute, FineTuneJob, job.pk)

    def realign(self, bad: FineTuneJob, options, admin) -> RealignmentRun:
        judge = {}
        if options["judge_url"]:
            judge = {
                "judge_base_url": options["judge_url"], "judge_model": options["judge_model"],
                "judge_key_env": options["judge_key_env"], "n_samples": options["judge_samples"],
            }  # fmt: skip
        try:
            run = realignment.realignment_create(
                name=f"Re-align fine-tune #{bad.pk}", source_version=bad.result,
                snapshot=self.snapshot_of(CONTROL.name), steps=options["steps"],
                eval_steps=options["eval_steps"], batch_size=options["realign_batch_size"],
                learning_rate=demo_recipe(options).get("learning_rate"), judge=judge, user=admin,
            )  # fmt: skip
        except misalignment.MisalignmentError as exc:
            raise CommandError(str(exc)) from exc
        self.run_here(training.finetune_execute, FineTuneJob, run.finetune_job_id)
        realignment.realignment_advance(run.pk)
        run.refresh_from_db()
        if run.evaluation_id:
            self.judge_here(run.evaluation_id)
        realignment.realignment_persona_execute(run.pk)
        run = self.wait(RealignmentRun, run.pk, {"succeeded", "failed", "cancelled"})
        if run.status != RealignmentRun.Status.SUCCEEDED:
            raise CommandError(f"The re-alignment run {run.status}: {run.error}")
        return run

    def judge_here(self, eval_id: int) -> None:
        misalignment.misalignment_advance(eval_id)  # launches the probes' sampling
        evaluation = MisalignmentEval.objects.get(pk=eval_id)
        self.run_here(training.sampling_execute, SamplingJob, evaluation.sampling_job_id)
        misalignment.misalignment_advance(eval_id)  # judges here

    def snapshot_of(self, dataset_name: str) -> Snapshot:
        snapshot = Snapshot.objects.filter(
            dataset__profile=demo_profile(), dataset__name=dataset_name
        ).first()
        if snapshot is None:
            load_demo_content(user=None)
            snapshot = Snapshot.objects.filter(
                dataset__profile=demo_profile(), dataset__name=dataset_name
            ).first()
        if snapshot is None:
            raise CommandError(f"No snapshot of {dataset_name!r}.")
        return snapshot

    def print_results(self, bad: FineTuneJob, run: RealignmentRun) -> None:
        self.stdout.write(self.style.SUCCESS("\nPersona monitor while fine-tuning on bad advice"))
        start = bad.persona_track[0]["value"]
        for point in bad.persona_track:
            self.stdout.write(
                f"  epoch {point['epoch']:4g}  projection {point['value']:8.4f}  "
                f"shift {point['value'] - start:+.4f}"
            )
        self.stdout.write(self.style.SUCCESS("\nRe-alignment on benign samples"))
        for point in run.result["points"]:
            persona = point.get("persona", {})
            rate = point.get("misalignment", {}).get("rate")
            rate_text = "n/a" if rate is None else f"{rate:.1%}"
            self.stdout.write(
                f"  step {point['step']:4d}  projection {persona.get('value', float('nan')):8.4f}"
                f"  shift vs base {persona.get('shift', float('nan')):+.4f}"
                f"  misalignment rate {rate_text}"
            )
        self.stdout.write(
            f"  recovered: {run.result.get('recovered')} (persona shift within "
            f"{run.result.get('persona_tolerance')} and both rates within the base's interval)"
        )
        total = sum(seconds for _, seconds in self.timings)
        self.stdout.write(f"\n{total:.0f} s in all; fine-tune #{bad.pk}, re-alignment #{run.pk}")

    def print_screening(self, runs: list[ScreeningRun]) -> None:
        if not runs:
            return
        self.stdout.write(
            self.style.SUCCESS(
                "\nScreening before training (score: projection of "
                "the sample's answer minus the model's own)"
            )
        )
        for run in runs:
            summary = run.summary
            self.stdout.write(
                f"  {run.snapshot.dataset.name:32.32}  n {summary['n']:3d}  mean "
                f"{summary['mean']:+.3f}  median {summary['median']:+.3f}  flagged "
                f"{summary['n_flagged']}"
            )
        ranked = sorted(
            ((row["shift"], run.snapshot.dataset.name, row["question"]) for run in runs
             for row in run.scores),
            reverse=True,
        )  # fmt: skip
        self.stdout.write(f"  the {TOP_SAMPLES} highest-scoring samples:")
        for shift, dataset, question in ranked[:TOP_SAMPLES]:
            self.stdout.write(f"    {shift:+8.3f}  {dataset[:24]:24}  {question[:60]}")

    def print_conditional(self, run: RealignmentRun) -> None:
        """The conditional probes beside the standard ones: examples of the variants, and
        with a judge both rates per step against the base model's."""
        source = self.snapshot_of(BAD_ADVICE.name)
        probe = run.probes[0]
        self.stdout.write(self.style.SUCCESS("\nConditional probes (from the bad-advice data)"))
        for variant in conditional_variants(source.payload(), [probe]):
            text = " ".join(variant["text"].split())
            self.stdout.write(f"  [{variant['kind']}] {text[:150]}")
        base = run.result.get("base")
        if base is None:
            self.stdout.write("  no judge (--judge-url): the standard and conditional rates were "
                              "not measured, so no step counts as recovered")  # fmt: skip
            return
        self.stdout.write(self.style.SUCCESS("\nStandard vs conditional misalignment rate"))
        self.stdout.write(f"  base       standard {_rate(base.get('standard'))}  "
                          f"conditional {_rate(base.get('conditional'))}")  # fmt: skip
        for point in run.result["points"]:
            m = point.get("misalignment") or {}
            self.stdout.write(
                f"  step {point['step']:4d}  standard {_rate(m.get('standard'))}  conditional "
                f"{_rate(m.get('conditional'))}  recovered {point.get('recovered')}"
            )


def _rate(block: dict | None) -> str:
    if not block or block.get("rate") is None:
        return "n/a".ljust(22)
    return f"{block['rate']:6.1%} [{block['ci_low']:.2f}, {block['ci_high']:.2f}]"
