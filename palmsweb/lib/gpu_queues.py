"""Which gpu queue a job goes to, and which queues a gpu worker consumes, by device count.

A job that needs N accelerators on a node goes to ``gpu-xN`` (``gpu`` for one); a worker
with K accelerators consumes ``gpu`` and ``gpu-x2`` … ``gpu-xK``, so a job only reaches a
worker that has the devices it needs. The router is named in ``CELERY_TASK_ROUTES``
(settings), before the fixed routes; call sites pass the device count as a task argument.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

GPU_QUEUE = "gpu"
# Tasks that run a distributed fine-tune on a node, with a ``devices`` keyword argument.
DEVICE_ROUTED_TASKS = frozenset({"training.tasks.run_finetune", "training.tasks.join_finetune"})


def gpu_queue_for(devices: int) -> str:
    """The queue of a job needing ``devices`` accelerators on one node."""
    return GPU_QUEUE if devices <= 1 else f"{GPU_QUEUE}-x{devices}"


def queues_for_worker(devices: int) -> list[str]:
    """Every gpu queue a worker with ``devices`` accelerators can serve."""
    return [gpu_queue_for(n) for n in range(1, max(devices, 1) + 1)]


def route_by_devices(name: str, args: Any, kwargs: Any, options: Any, task: Any = None,
                     **rest: Any) -> dict | None:  # fmt: skip
    """Celery router: a multi-device fine-tune to its ``gpu-xN`` queue; None leaves every
    other task to the fixed routes that follow."""
    devices = int((kwargs or {}).get("devices") or 1)
    if name in DEVICE_ROUTED_TASKS and devices > 1:
        return {"queue": gpu_queue_for(devices)}
    return None


def local_device_count() -> int:
    """Accelerators this machine advertises: ``GPU_WORKER_DEVICES`` when set, else the
    GPUs ``nvidia-smi -L`` lists, else 1. (The worker's main process never imports torch.)"""
    configured = os.environ.get("GPU_WORKER_DEVICES", "").strip()
    if configured.isdigit():
        return max(int(configured), 1)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 1
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 1
    return max(sum(line.startswith("GPU ") for line in listing.stdout.splitlines()), 1)
