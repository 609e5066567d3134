"""Starting a scoring run of a study, the sweep of runs whose worker died, and the newest
run of each kind.

Each run is a ScoringRun worked by a Celery task (evaluation.tasks); the kinds live in their
own modules: ``toxicity`` (default queue), ``cooccurrence`` (default queue, waits on a
gpu-queue sampling job), ``capability`` and ``adherence`` (gpu queue) and ``judge``
(default queue, HTTP-bound). ``summaries`` builds the report's sections from the latest
succeeded runs.

Runs are claimed with a guarded update (queued → running, ``common.SCORING``), so a task
delivered twice does its work once. docs/scoring.md says how to read the numbers.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from evaluation.models import ScoringRun, Study, StudyOutput
from evaluation.scoring.adherence import clean_adherence_options
from evaluation.scoring.common import SCORING, ScoringError
from evaluation.scoring.cooccurrence import clean_cooccurrence_options
from evaluation.scoring.judge import clean_judge_options, judge_key
from evaluation.scoring.toxicity import available_scorers
from palmsweb.lib.jobs import sweep_stale


@transaction.atomic
def scoring_run_start(
    *,
    study: Study,
    kind: str = ScoringRun.Kind.TOXICITY,
    scorer: str = "offline",
    options: dict | None = None,
    user=None,
) -> ScoringRun:
    """Create a scoring run and queue its task after commit.

    Toxicity needs outputs (a study past sampling) and an available scorer; co-occurrence
    takes ``options`` (see ``clean_cooccurrence_options``); the judge takes its endpoint,
    model, key variable name and logprobs switch (``clean_judge_options``), and its key
    variable must be set; adherence takes the held-out snapshot
    (``clean_adherence_options``); capability takes none.
    Refuses a second run of the same kind while one is queued or running.
    """
    if kind not in ScoringRun.Kind.values:
        raise ScoringError(f"Unknown scoring kind {kind!r}.")
    busy = ScoringRun.objects.filter(
        study=study, kind=kind, status__in=[ScoringRun.Status.QUEUED, ScoringRun.Status.RUNNING]
    )
    if busy.exists():
        raise ScoringError("A run of this kind is already queued or running for this study.")
    if kind == ScoringRun.Kind.TOXICITY:
        if scorer not in dict(available_scorers()):
            raise ScoringError(
                f"The {scorer!r} scorer is not available: Perspective needs "
                "PERSPECTIVE_API_KEY and OpenAI moderation needs OPENAI_API_KEY."
            )
        if not StudyOutput.objects.filter(study=study).rated().exists():
            raise ScoringError("The study has no outputs to score yet: open it first.")
        options, scorer_name = {}, scorer
    elif kind == ScoringRun.Kind.COOCCURRENCE:
        if not study.arms.exists():
            raise ScoringError("The study has no arms.")
        options, scorer_name = clean_cooccurrence_options(options), ""
    elif kind == ScoringRun.Kind.JUDGE:
        options = clean_judge_options(options)
        judge_key(options)  # refuse now, not in the worker, when the variable is unset
        if not StudyOutput.objects.filter(study=study).rated().exists():
            raise ScoringError("The study has no outputs to score yet: open it first.")
        scorer_name = options["model"]
    elif kind == ScoringRun.Kind.ADHERENCE:
        if not study.arms.exists():
            raise ScoringError("The study has no arms.")
        options, scorer_name = clean_adherence_options(study, options), ""
    else:
        if not study.arms.exists():
            raise ScoringError("The study has no arms.")
        options, scorer_name = {}, ""
    run = ScoringRun.objects.create(
        study=study, kind=kind, scorer=scorer_name, options=options, created_by=user
    )
    from evaluation import tasks

    task = {
        ScoringRun.Kind.TOXICITY: tasks.run_toxicity_scoring,
        ScoringRun.Kind.COOCCURRENCE: tasks.run_cooccurrence_scoring,
        ScoringRun.Kind.CAPABILITY: tasks.run_capability_scoring,
        ScoringRun.Kind.JUDGE: tasks.run_judge_scoring,
        ScoringRun.Kind.ADHERENCE: tasks.run_adherence_scoring,
    }[kind]
    task.delay_on_commit(run.pk)
    return run


def scoring_runs_sweep_stale() -> int:
    """Fail toxicity, capability, adherence and judge runs that have been running longer than a task
    may live (CELERY_TASK_TIME_LIMIT): their worker died. Co-occurrence runs wait on a
    sampling job, which has its own heartbeat and sweep. Returns the count."""
    limit = int(getattr(settings, "CELERY_TASK_TIME_LIMIT", 6 * 3600 + 300))
    return sweep_stale(
        SCORING,
        older_than=timedelta(seconds=limit + 60),
        by="started_at",
        exclude=Q(kind=ScoringRun.Kind.COOCCURRENCE),
        error="The worker running this scoring run stopped (it ran past the task time "
        "limit); start a new run.",
    )


def latest_runs(study: Study) -> dict[str, ScoringRun | None]:
    """The newest run of each kind (any status), for the scoring page."""
    out: dict[str, ScoringRun | None] = {kind: None for kind in ScoringRun.Kind.values}
    for run in study.scoring_runs.order_by("-created_at", "-pk"):
        if out[run.kind] is None:
            out[run.kind] = run
    return out
