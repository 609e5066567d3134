"""Celery tasks: thin wrappers that load ids and call one service.

Fine-tunes and sampling are routed to the "gpu" queue (CELERY_TASK_ROUTES; one task per
accelerator); the sweep and the hosted-job poller are light and stay on "default".
"""

from __future__ import annotations

from celery import shared_task

from training import services


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_finetune(job_id: int, devices: int = 1) -> None:
    """Claim and run one fine-tune; a duplicate delivery finds it claimed and does nothing.
    ``devices`` (per node) only routes the task: to a worker that has that many."""
    services.finetune_execute(job_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def join_finetune(
    job_id: int, devices: int = 1, rdzv_endpoint: str = "", rdzv_id: str = ""
) -> None:
    """Run this node's ranks of a multi-node fine-tune the first node started."""
    services.finetune_join(job_id, devices=devices, rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_sampling(job_id: int) -> None:
    """Claim and run one sampling job, resuming after the outputs already stored."""
    services.sampling_execute(job_id)


@shared_task(ignore_result=True)
def sweep_stale_jobs() -> int:
    """Fail jobs whose worker died (no heartbeat)."""
    return services.sweep_stale_jobs()


@shared_task(ignore_result=True)
def poll_openai_jobs() -> int:
    """Mirror the state of running hosted fine-tunes, every provider's (the name predates
    the second provider; the beat schedule keys on it)."""
    return services.hosted_poll_all()


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_screening(run_id: int) -> None:
    """Claim and run one sample screening (persona-shift scores of a snapshot)."""
    from training.services.screening import screening_execute

    screening_execute(run_id)
