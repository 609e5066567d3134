"""Celery tasks (the default queue, "default"): thin wrappers that call one service.

Training knows nothing of studies, so nothing tells evaluation when a sampling job ends.
Three idempotent paths move a study from sampling to rating, whichever comes first: a
task scheduled when the study opens that re-checks until the job finishes, the periodic
sweep below (add it to ``CELERY_BEAT_SCHEDULE``), and the study page's htmx polling.
"""

from __future__ import annotations

from celery import shared_task

from evaluation import services
from evaluation.models import Study

POLL_SECONDS = 15


@shared_task(ignore_result=True, acks_late=True)
def sync_study_sampling(study_id: int) -> str | None:
    """Sync one study; while its job still runs, check again in ``POLL_SECONDS``."""
    study = services.study_sync_sampling(study_id=study_id)
    if study is None:
        return None  # deleted: nothing to do
    if study.status == Study.Status.SAMPLING:
        sync_study_sampling.apply_async((study_id,), countdown=POLL_SECONDS)
    return study.status


@shared_task(ignore_result=True)
def sync_sampling_studies() -> int:
    """Periodic sweep: move on every study whose sampling job has finished."""
    return services.studies_sync_sampling()
