"""Distributed fine-tunes: the launch checks and the DDP/FSDP2 choice, the run on the first
node (torchrun as a child process group, see ``training.engine.distributed_launch``), and
the other nodes of a multi-node run joining it.

Routing: a job needing N devices per node is sent with ``devices=N`` and goes to the
``gpu-xN`` queue (``palmsweb/lib/gpu_queues.py``, named in ``CELERY_TASK_ROUTES``), which only
workers with at least N devices consume.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from django.conf import settings

from training.engine.distributed_plan import (
    MAX_DEVICES_PER_NODE,
    MAX_NODES,
    choose_strategy,
    strategy_label,
    training_bytes,
)
from training.models import BaseModel, FineTuneJob, JobStatus
from training.services.base_models import DEFAULT_MODEL_PARAMETERS, artifacts_dir
from training.services.errors import TrainingError

logger = logging.getLogger(__name__)


def device_memory_bytes() -> int:
    return int(settings.GPU_DEVICE_MEMORY_GB * 1024**3)


def planned_strategy(base_model: BaseModel, method: str) -> str:
    """DDP ("ddp") when the model's training state fits one device (GPU_DEVICE_MEMORY_GB),
    else FSDP2 ("fsdp")."""
    params = base_model.parameter_count or DEFAULT_MODEL_PARAMETERS
    return choose_strategy(params, method, device_memory_bytes())


def strategy_summary(base_model: BaseModel, method: str) -> str:
    """One sentence for the launch form: what several devices would use, and why."""
    params = base_model.parameter_count or DEFAULT_MODEL_PARAMETERS
    needed = training_bytes(params, method) / 1024**3
    strategy = planned_strategy(base_model, method)
    return (
        f"On several devices, {base_model.name} ({method}) trains with "
        f"{strategy_label(strategy)}: about {needed:.1f} GB of weights, gradients and "
        f"optimizer states against {settings.GPU_DEVICE_MEMORY_GB:g} GB per device."
    )


def check_distributed(
    base_model: BaseModel, method: str, backend: str, counts: tuple[int, int], extras: dict
) -> str:
    """Refuse a request for ``counts`` = (devices per node, nodes) that cannot run; the
    strategy ("" on one device).

    ``extras``: the launch's checkpoint steps and persona tracking, which a distributed
    run does not have yet (validation it has)."""
    devices, nodes = counts
    for name, value, most in (("devices", devices, MAX_DEVICES_PER_NODE),
                              ("nodes", nodes, MAX_NODES)):  # fmt: skip
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
            raise TrainingError(f"{name} must be a whole number from 1 to {most}.")
    if devices * nodes == 1:
        return ""
    if backend != FineTuneJob.Backend.LOCAL:
        raise TrainingError("Several devices or nodes need the local backend.")
    asked = [name for name, value in extras.items() if value]
    if asked:
        raise TrainingError(
            f"A fine-tune on several devices cannot have {', '.join(asked)} yet: "
            "run it on one device."
        )
    return planned_strategy(base_model, method)


def rendezvous_endpoint() -> str:
    """host:port of the c10d store the first node serves (the other nodes connect to it)."""
    host = settings.DISTRIBUTED_RDZV_HOST or socket.getfqdn()
    return f"{host}:{settings.DISTRIBUTED_RDZV_PORT}"


def finetune_output_dir(job: FineTuneJob) -> Path:
    return artifacts_dir() / "model-versions" / f"finetune-{job.pk}"


def run_distributed(job: FineTuneJob, reporter, *, start_path: Path, examples: list[dict],
                    config, metadata: dict, on_progress,
                    validation: list[dict] | None = None):  # fmt: skip
    """Run a claimed fine-tune under torchrun on this node; with ``nodes > 1`` the other
    nodes are asked to join first. Returns the engine's FineTuneResult. ``validation``:
    the validation examples (measured on every rank, reported by rank 0)."""
    from training.engine.distributed_launch import run_distributed_finetune
    from training.engine.distributed_plan import DistributedPlan

    plan = DistributedPlan(
        nproc_per_node=job.devices, nnodes=job.nodes, strategy=job.strategy or "ddp",
        rdzv_endpoint=rendezvous_endpoint() if job.nodes > 1 else "",
        rdzv_id=f"finetune-{job.pk}-{job.attempts}",
    )  # fmt: skip
    reporter.log(
        f"torchrun: {job.devices} device(s) x {job.nodes} node(s), {job.get_strategy_display()}"
        + (f", rendezvous at {plan.rdzv_endpoint}" if job.nodes > 1 else "")
    )
    if job.nodes > 1:
        from training import tasks

        for _ in range(job.nodes - 1):
            tasks.join_finetune.delay_on_commit(
                job.pk, devices=job.devices, rdzv_endpoint=plan.rdzv_endpoint,
                rdzv_id=plan.rdzv_id,
            )  # fmt: skip
    return run_distributed_finetune(
        base_model_path=start_path, examples=examples, output_dir=finetune_output_dir(job),
        config=config, plan=plan, on_progress=on_progress,
        should_cancel=reporter.should_cancel, metadata=metadata,
        validation_examples=validation or (),
        eval_every_steps=job.hyperparameters.get("eval_every_steps", 0),
    )  # fmt: skip


def finetune_join(job_id: int, *, devices: int, rdzv_endpoint: str, rdzv_id: str) -> None:
    """Run this node's ranks of a running multi-node fine-tune (a no-op once it has ended).
    A failure here fails the first node's ranks too, and the first node reports it."""
    from training.engine.distributed_launch import join_distributed_finetune
    from training.engine.distributed_plan import DistributedPlan

    job = FineTuneJob.objects.filter(pk=job_id, status=JobStatus.RUNNING).first()
    if job is None or job.nodes < 2:
        return
    plan = DistributedPlan(
        nproc_per_node=devices, nnodes=job.nodes, strategy=job.strategy or "ddp",
        rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id,
    )  # fmt: skip

    def ended() -> bool:
        return not FineTuneJob.objects.filter(pk=job_id, status=JobStatus.RUNNING).exists()

    try:
        join_distributed_finetune(output_dir=finetune_output_dir(job), plan=plan, should_stop=ended)
    except Exception:  # the first node's job row carries the reason
        logger.exception("joining fine-tune %s failed", job_id)
