"""The Celery app. Queues: "gpu" (fine-tunes, sampling) and "default" (scoring, exports)."""

import os

from celery import Celery
from celery.signals import celeryd_after_setup, celeryd_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "palmsweb.settings")

GPU_QUEUE = "gpu"

app = Celery("palmsweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@celeryd_init.connect
def recycle_gpu_worker_processes(sender=None, conf=None, options=None, **kwargs) -> None:
    """A worker that consumes the gpu queue runs each job in a fresh child process.

    A fine-tune or a sampling run leaves gigabytes behind in the process that ran it: torch's
    and glibc's free lists, the loaded libraries, fragmentation. Replacing the child after
    each job (GPU_WORKER_MAX_TASKS_PER_CHILD, default 1) gives that memory back to the
    machine, so the worker returns to its idle footprint; GPU_WORKER_MAX_MEMORY_PER_CHILD
    (kB) instead replaces it only once it holds that much. The worker's main process never
    imports torch, so every new child starts small. Other workers keep their processes.
    (The "solo" pool has no children; these settings do not apply to it.)
    """
    from django.conf import settings

    queues = (options or {}).get("queues") or []
    if isinstance(queues, str):
        queues = queues.split(",")
    if conf is None or GPU_QUEUE not in [queue.strip() for queue in queues]:
        return
    conf.worker_max_tasks_per_child = settings.GPU_WORKER_MAX_TASKS_PER_CHILD
    conf.worker_max_memory_per_child = settings.GPU_WORKER_MAX_MEMORY_PER_CHILD


@celeryd_after_setup.connect
def consume_queues_for_local_devices(sender=None, instance=None, **kwargs) -> None:
    """A gpu worker also consumes the queues of multi-device fine-tunes it has the devices
    for ("gpu-x2" … "gpu-xK" with K devices: GPU_WORKER_DEVICES, else ``nvidia-smi -L``),
    so a job needing N devices only reaches a worker with at least N
    (palmsweb/lib/gpu_queues.py)."""
    from palmsweb.lib.gpu_queues import local_device_count, queues_for_worker

    if instance is None or GPU_QUEUE not in instance.app.amqp.queues.consume_from:
        return
    for queue in queues_for_worker(local_device_count())[1:]:
        instance.app.amqp.queues.select_add(queue)
