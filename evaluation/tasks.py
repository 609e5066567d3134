"""Celery tasks (the default queue, "default"): thin wrappers that call one service.

Training knows nothing of studies, so nothing tells evaluation when a sampling job ends.
Three idempotent paths move a study from sampling to rating, whichever comes first: a
task scheduled when the study opens that re-checks until the job finishes, the periodic
sweep below (add it to ``CELERY_BEAT_SCHEDULE``), and the study page's htmx polling.
"""

from __future__ import annotations

from celery import shared_task

from evaluation.models import Study
from evaluation.studies import lifecycle

POLL_SECONDS = 15


@shared_task(ignore_result=True, acks_late=True)
def sync_study_sampling(study_id: int) -> str | None:
    """Sync one study; while its job still runs, check again in ``POLL_SECONDS``."""
    study = lifecycle.study_sync_sampling(study_id=study_id)
    if study is None:
        return None  # deleted: nothing to do
    if study.status == Study.Status.SAMPLING:
        sync_study_sampling.apply_async((study_id,), countdown=POLL_SECONDS)
    return study.status


@shared_task(ignore_result=True)
def sync_sampling_studies() -> int:
    """Periodic sweep: move on every study whose sampling job has finished."""
    return lifecycle.studies_sync_sampling()


@shared_task(ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def run_export(export_id: int) -> str | None:
    """Write one queued export (ratings file or study bundle) on the default queue."""
    from evaluation.report.exports import export_execute

    export = export_execute(export_id)
    return export.status if export else None


@shared_task(ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def run_exit_kit(run_id: int) -> str | None:
    """Write one queued hosted exit kit on the default queue."""
    from evaluation.report.exit_kit_jobs import exit_kit_execute

    run = exit_kit_execute(run_id)
    return run.status if run else None


# --- automatic scores (evaluation.scoring) ----------------------------------------------------

COOCCURRENCE_POLL_SECONDS = 15


@shared_task(ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def run_toxicity_scoring(run_id: int) -> None:
    """Claim and run one toxicity run; a duplicate delivery finds it claimed."""
    from evaluation import scoring

    scoring.toxicity_execute(run_id)


@shared_task(ignore_result=True, acks_late=True)
def run_cooccurrence_scoring(run_id: int) -> None:
    """Launch the run's sampling, then check again until it is counted."""
    from evaluation import scoring

    if scoring.cooccurrence_advance(run_id):
        run_cooccurrence_scoring.apply_async((run_id,), countdown=COOCCURRENCE_POLL_SECONDS)


@shared_task(ignore_result=True)
def advance_cooccurrence_runs() -> int:
    """Periodic backstop: move on co-occurrence runs whose sampling has finished."""
    from evaluation import scoring

    return scoring.cooccurrence_advance_all()


@shared_task(ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def run_capability_scoring(run_id: int) -> None:
    """Perplexity and multiple choice per local arm; routed to the gpu queue."""
    from evaluation import scoring

    scoring.capability_execute(run_id)


@shared_task(ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def run_adherence_scoring(run_id: int) -> None:
    """Held-out answer likelihood per local arm; routed to the gpu queue."""
    from evaluation.scoring import adherence

    adherence.adherence_execute(run_id)


@shared_task(ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def run_judge_scoring(run_id: int) -> None:
    """Claim and run one LLM-judge run (default queue: it waits on HTTP, not a GPU)."""
    from evaluation.scoring import judge as judge_scoring

    judge_scoring.judge_execute(run_id)


@shared_task(ignore_result=True)
def sweep_stale_scoring_runs() -> int:
    """Periodic: fail toxicity, capability and judge runs whose worker died."""
    from evaluation import scoring

    return scoring.scoring_runs_sweep_stale()


@shared_task(ignore_result=True)
def sweep_stale_exports() -> int:
    """Periodic: fail exports and exit kits whose worker died mid-write (add to
    CELERY_BEAT_SCHEDULE)."""
    from evaluation.report.exit_kit_jobs import exit_kits_sweep_stale
    from evaluation.report.exports import exports_sweep_stale

    return exports_sweep_stale() + exit_kits_sweep_stale()


# --- emergent misalignment (evaluation.alignment.misalignment) ------------------------------------

MISALIGNMENT_POLL_SECONDS = 15


@shared_task(ignore_result=True, acks_late=True)
def advance_misalignment_eval(eval_id: int) -> None:
    """Launch the probes' sampling, wait for it, then judge (on the default queue)."""
    from evaluation.alignment import misalignment

    if misalignment.misalignment_advance(eval_id):
        advance_misalignment_eval.apply_async((eval_id,), countdown=MISALIGNMENT_POLL_SECONDS)


@shared_task(ignore_result=True)
def advance_misalignment_evals() -> int:
    """Periodic backstop: move on evaluations whose sampling has finished."""
    from evaluation.alignment import misalignment

    return misalignment.advance_all()


@shared_task(ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def measure_misalignment_persona(eval_id: int) -> int:
    """Persona projections of an evaluation's local versions; sent to the gpu queue."""
    from evaluation.alignment import persona

    return persona.persona_execute(eval_id)


@shared_task(ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def measure_finetune_persona(job_id: int) -> None:
    """Persona projection of a finished fine-tune vs its base; sent to the gpu queue."""
    from evaluation.alignment import persona

    persona.finetune_persona_execute(job_id)


@shared_task(ignore_result=True, acks_late=True)
def resume_misalignment_judging(eval_id: int) -> None:
    """Judge what is left of an evaluation whose judging worker died (sent by the sweep)."""
    from evaluation.alignment import misalignment

    misalignment.misalignment_judge(eval_id)


@shared_task(ignore_result=True)
def sweep_stale_misalignment_judging() -> int:
    """Periodic: resume evaluations stuck in "judging" (no heartbeat for
    JOB_HEARTBEAT_TIMEOUT)."""
    from evaluation.alignment import misalignment

    return misalignment.sweep_stale_judging()


# --- re-alignment (evaluation.alignment.realignment) ----------------------------------------------

REALIGNMENT_POLL_SECONDS = 15


@shared_task(ignore_result=True, acks_late=True)
def advance_realignment_run(run_id: int) -> None:
    """Follow a re-alignment run through its fine-tune and evaluations (default queue)."""
    from evaluation.alignment import realignment

    if realignment.realignment_advance(run_id):
        advance_realignment_run.apply_async((run_id,), countdown=REALIGNMENT_POLL_SECONDS)


@shared_task(ignore_result=True)
def advance_realignment_runs() -> int:
    """Periodic backstop for runs whose polling chain was lost (a broker restart)."""
    from evaluation.alignment import realignment

    return realignment.advance_all()


@shared_task(ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def measure_realignment_persona(run_id: int) -> int:
    """Persona projections of a re-alignment run's steps; sent to the gpu queue."""
    from evaluation.alignment import realignment

    return realignment.realignment_persona_execute(run_id)


# --- the misalignment gate (evaluation.alignment.gate) --------------------------------------------

GATE_POLL_SECONDS = 15


@shared_task(ignore_result=True, acks_late=True)
def advance_model_gate(gate_id: int) -> None:
    """Follow a gate until its persona measurement and evaluation have finished."""
    from evaluation.alignment import gate

    if gate.gate_advance(gate_id):
        advance_model_gate.apply_async((gate_id,), countdown=GATE_POLL_SECONDS)


@shared_task(ignore_result=True)
def advance_model_gates() -> int:
    """Periodic backstop for gates whose polling chain was lost (a broker restart)."""
    from evaluation.alignment import gate

    return gate.advance_all()


@shared_task(ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def measure_gate_persona(gate_id: int) -> None:
    """A gated version's persona shift against its base; sent to the gpu queue."""
    from evaluation.alignment import gate

    gate.gate_persona_execute(gate_id)
