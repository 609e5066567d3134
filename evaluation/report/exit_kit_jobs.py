"""The exit kit as a background job on the default queue, as exports are: the browser and
the API record an :class:`ExitKitRun` and return at once; a worker writes the zip under
``ARTIFACTS_DIR/exit-kits/`` with its phase on the row; the page and the API download it once
it has succeeded. ``manage.py hosted_exit_kit`` writes it in the foreground instead.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from django.db import transaction

from evaluation.models import ExitKitRun
from evaluation.report.exit_kit import (
    ExitKitError,
    check_scope,
    kit_dir,
    kit_scope,
    write_exit_kit,
)
from palmsweb.lib.jobs import Lifecycle, claim, fail, finish, heartbeat, readable_failure
from palmsweb.lib.jobs import sweep_stale as sweep_stale_rows

log = logging.getLogger(__name__)

# The worker's heartbeat (progress_at) is written every HEARTBEAT_SECONDS while it writes;
# a running kit silent for STALE_SECONDS lost its worker: the broker re-delivers the task
# (acks_late) and the kit may be claimed again, and the sweep fails what nobody re-claims.
HEARTBEAT_SECONDS = 30
STALE_SECONDS = 10 * 60

EXIT_KIT = Lifecycle(
    model=ExitKitRun,
    claimable=(ExitKitRun.Status.QUEUED,),
    reclaim_after=lambda: timedelta(seconds=STALE_SECONDS),
    heartbeat_field="progress_at",
)


@transaction.atomic
def exit_kit_create(
    *, job_ids: list[int] | None = None, base_model_id: int | None = None, user=None
) -> ExitKitRun:
    """Record an exit kit of every hosted model (no filter), one base model's or the named
    fine-tunes', and queue it once the transaction commits. ExitKitError, with nothing
    recorded, when the kit would hold nothing."""
    check_scope(kit_scope(job_ids=job_ids, base_model_id=base_model_id))
    run = ExitKitRun.objects.create(
        finetune_ids=list(job_ids or []), base_model_id=base_model_id, created_by=user
    )
    from evaluation.tasks import run_exit_kit

    run_exit_kit.delay_on_commit(run.pk)
    return run


def exit_kit_execute(run_id: int) -> ExitKitRun | None:
    """Write a queued kit (the Celery task calls this). Claims the row first, so a task
    delivered twice writes the zip once; a missing row is a no-op."""
    if not claim(EXIT_KIT, run_id):
        return ExitKitRun.objects.filter(pk=run_id).first()
    run = ExitKitRun.objects.get(pk=run_id)
    path = kit_dir() / f"palmsweb-exit-kit-{run.pk}.zip"

    def on_phase(text: str) -> None:
        ExitKitRun.objects.filter(pk=run_id).update(phase=text)  # the heartbeat keeps progress_at

    scope = kit_scope(
        job_ids=run.finetune_ids or None, base_model_id=run.base_model_id
    )  # what is hosted now: a fine-tune launched since the request is in the kit too
    try:
        with heartbeat(EXIT_KIT, run_id, every_seconds=HEARTBEAT_SECONDS):
            kit = write_exit_kit(scope, path, on_phase=on_phase)
    except Exception as exc:
        log.exception("exit kit %s failed", run_id)
        reason = readable_failure(
            exc, expected=(ExitKitError,), out_of_memory="Out of memory while writing the kit."
        )
        fail(EXIT_KIT, run_id, reason[:2000])
    else:
        finish(
            EXIT_KIT, run_id, ExitKitRun.Status.SUCCEEDED, path=str(kit.path),
            sha256=kit.sha256, size_bytes=kit.path.stat().st_size, finetunes=kit.finetunes,
            model_versions=kit.model_versions, outputs=kit.outputs, studies=kit.studies,
        )  # fmt: skip
    return ExitKitRun.objects.get(pk=run_id)


def kit_file(run: ExitKitRun) -> Path | None:
    """The zip of a kit that has succeeded and whose file is still there; else None."""
    if run.status != ExitKitRun.Status.SUCCEEDED or not run.path:
        return None
    path = Path(run.path)
    return path if path.exists() else None


def exit_kits_sweep_stale() -> int:
    """Fail kits left "running" by a dead worker (the periodic export sweep calls this)."""
    return sweep_stale_rows(
        EXIT_KIT,
        older_than=timedelta(seconds=STALE_SECONDS),
        by="progress_at",
        error="The worker stopped before the exit kit was written; start it again.",
    )
