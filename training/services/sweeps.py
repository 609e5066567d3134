"""Sweeps: one launch of a grid of local fine-tunes (learning rate × epochs × full/LoRA, at
most ``MAX_SWEEP_RUNS`` runs) on one snapshot. Each run is an ordinary fine-tune job on the
gpu queue, so several gpu workers take them in parallel. Runs are ranked by their best
validation loss (so a sweep needs validation data); an admin promotes one run's version
into studies (the others stay out of the study form), cancels all runs at once, and may
delete the losing runs' weights to save disk, keeping their rows and metadata.
"""

from __future__ import annotations

import itertools
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from curation.models import Snapshot
from training.models import BaseModel, FineTuneJob, Generation, JobStatus, ModelVersion, Sweep
from training.services.errors import TrainingError
from training.services.finetunes import (
    HYPERPARAMETER_LIMITS,
    default_hyperparameters,
    finetune_launch,
)
from training.services.jobs import job_cancel

MAX_SWEEP_RUNS = 12  # one launch should not fill the gpu queue for days
GRID_AXES = ("learning_rate", "epochs", "method")
SHARED_EXCLUDED = {"learning_rate", "epochs"}  # set per run by the grid


@dataclass(frozen=True)
class RankedRun:
    rank: int | None  # None: no validation loss yet
    job: FineTuneJob
    best_loss: float | None
    best_step: int | None

    @property
    def label(self) -> str:
        return run_label(self.job)

    @property
    def weights_deleted(self) -> bool:
        return bool(self.job.result and self.job.result.metadata.get("weights_deleted_at"))


def run_label(job: FineTuneJob) -> str:
    """How a run is named on the sweep page, in its chart legend and the API."""
    hp = job.hyperparameters
    return f"#{job.pk} · {job.method} · lr {hp.get('learning_rate'):g} · {hp.get('epochs')} ep"


def _axis(grid: dict, name: str, cast, check) -> list:
    values = grid.get(name)
    if not isinstance(values, list) or not values:
        raise TrainingError(f"The grid needs a non-empty list of {name} values.")
    cleaned = []
    for value in values:
        try:
            number = cast(value)
        except (TypeError, ValueError):
            raise TrainingError(f"{name}: {value!r} is not valid.") from None
        check(number)
        if number not in cleaned:
            cleaned.append(number)
    return cleaned


def _in_limits(name: str):
    kind, low, high = HYPERPARAMETER_LIMITS[name]

    def check(value) -> None:
        if not low <= value <= high:  # NaN fails this too
            raise TrainingError(f"{name} must be between {low} and {high}.")

    return check


def _method(value: str) -> None:
    if value not in FineTuneJob.Method.values:
        raise TrainingError(f"method must be one of {', '.join(FineTuneJob.Method.values)}.")


def clean_grid(grid: dict, max_runs: int) -> dict:
    """The grid with each axis checked and de-duplicated; refused when it holds more runs
    than ``max_runs`` (itself at most ``MAX_SWEEP_RUNS``)."""
    if not isinstance(grid, dict) or set(grid) - set(GRID_AXES):
        raise TrainingError(f"A grid has the axes {', '.join(GRID_AXES)} only.")
    if not isinstance(max_runs, int) or not 1 <= max_runs <= MAX_SWEEP_RUNS:
        raise TrainingError(f"max_runs must be between 1 and {MAX_SWEEP_RUNS}.")
    cleaned = {
        "learning_rate": _axis(grid, "learning_rate", float, _in_limits("learning_rate")),
        "epochs": _axis(grid, "epochs", int, _in_limits("epochs")),
        "method": _axis({"method": [FineTuneJob.Method.FULL], **grid}, "method", str, _method),
    }
    runs = math.prod(len(values) for values in cleaned.values())
    if runs > max_runs:
        raise TrainingError(
            f"The grid holds {runs} runs, more than max_runs ({max_runs}): drop some values."
        )
    return cleaned


def _check_validation(base_model: BaseModel, validation_snapshot, hp: dict) -> None:
    if not base_model.is_local:
        raise TrainingError("Sweeps run local fine-tunes: choose a local base model.")
    if validation_snapshot is None and not hp.get("validation_share"):
        raise TrainingError(
            "A sweep ranks its runs by validation loss: choose a validation snapshot or a "
            "validation_share."
        )


@transaction.atomic
def sweep_launch(
    *,
    base_model: BaseModel,
    snapshot: Snapshot,
    grid: dict,
    max_runs: int = MAX_SWEEP_RUNS,
    name: str = "",
    hyperparameters: dict | None = None,
    validation_snapshot: Snapshot | None = None,
    arm: str | None = None,
    allow_arm_mismatch: bool = False,
    user=None,
) -> Sweep:
    """Queue one fine-tune per grid point (each on the gpu queue after commit). The shared
    ``hyperparameters`` apply to every run (not learning_rate or epochs: the grid sets
    them). Every launch rule of a fine-tune applies; one refusal creates nothing."""
    shared = dict(hyperparameters or {})
    if set(shared) & SHARED_EXCLUDED:
        raise TrainingError("learning_rate and epochs come from the grid, not the shared set.")
    grid = clean_grid(grid, max_runs)
    _check_validation(base_model, validation_snapshot, shared)
    sweep = Sweep.objects.create(
        name=name or f"{base_model.name} × {snapshot.short_hash}", base_model=base_model,
        snapshot=snapshot, validation_snapshot=validation_snapshot, grid=grid,
        hyperparameters=shared, max_runs=max_runs, created_by=user,
    )  # fmt: skip
    for lr, epochs, method in itertools.product(*(grid[axis] for axis in GRID_AXES)):
        job = finetune_launch(
            base_model=base_model, snapshot=snapshot, arm=arm, method=method,
            hyperparameters=shared | {"learning_rate": lr, "epochs": epochs},
            allow_arm_mismatch=allow_arm_mismatch, validation_snapshot=validation_snapshot,
            user=user,
        )  # fmt: skip
        FineTuneJob.objects.filter(pk=job.pk).update(sweep=sweep)
    return sweep


def sweep_defaults(base_model: BaseModel) -> dict:
    """A starting grid for the launch form: the model's default learning rate, a third of
    it and three times it (within limits), one and three epochs, full fine-tune."""
    lr = default_hyperparameters(base_model)["learning_rate"]
    low, high = HYPERPARAMETER_LIMITS["learning_rate"][1:]
    rates = sorted({min(max(round(x, 10), low), high) for x in (lr / 3, lr, lr * 3)})
    return {"learning_rate": rates, "epochs": [1, 3], "method": [FineTuneJob.Method.FULL]}


# --- reading ---------------------------------------------------------------------------------


def sweep_runs(sweep: Sweep):
    return sweep.runs.select_related("result").order_by("pk")


def sweep_status(sweep: Sweep) -> str:
    """running while any run is queued or running; else succeeded when any run succeeded,
    cancelled when runs were cancelled and none failed, failed otherwise."""
    statuses = set(sweep.runs.values_list("status", flat=True))
    if statuses & {JobStatus.QUEUED, JobStatus.RUNNING}:
        return JobStatus.RUNNING
    if JobStatus.SUCCEEDED in statuses:
        return JobStatus.SUCCEEDED
    if JobStatus.CANCELLED in statuses and JobStatus.FAILED not in statuses:
        return JobStatus.CANCELLED
    return JobStatus.FAILED


def _best(history) -> tuple[float | None, int | None]:
    finite = [(loss, step) for step, loss in history or [] if math.isfinite(loss)]
    if not finite:
        return None, None
    loss, step = min(finite)
    return loss, int(step)


def sweep_ranking(sweep: Sweep) -> list[RankedRun]:
    """The runs, lowest best validation loss first (ties: the earlier run); runs without a
    measurement yet come last, unranked."""
    scored = [(job, *_best(job.validation_loss_history)) for job in sweep_runs(sweep)]
    scored.sort(key=lambda item: (item[1] is None, item[1] or 0.0, item[0].pk))
    return [
        RankedRun(
            rank=index + 1 if best is not None else None, job=job, best_loss=best, best_step=step
        )  # fmt: skip
        for index, (job, best, step) in enumerate(scored)
    ]


# --- changing --------------------------------------------------------------------------------


def sweep_cancel(*, sweep: Sweep) -> int:
    """Cancel every queued or running run (running ones stop within one step); returns how
    many were asked to stop."""
    active = list(sweep.runs.active())
    for job in active:
        job_cancel(job=job)
    Sweep.objects.filter(pk=sweep.pk, cancelled_at__isnull=True).update(cancelled_at=timezone.now())
    return len(active)


@transaction.atomic
def sweep_promote(*, sweep: Sweep, job: FineTuneJob) -> ModelVersion:
    """Make ``job``'s version the sweep's choice: it becomes available to studies."""
    if job.sweep_id != sweep.pk:
        raise TrainingError(f"Fine-tune #{job.pk} is not a run of this sweep.")
    if job.status != JobStatus.SUCCEEDED or job.result is None:
        raise TrainingError("Only a succeeded run's version can be promoted.")
    if job.result.metadata.get("weights_deleted_at"):
        raise TrainingError("This run's weights were deleted.")
    Sweep.objects.filter(pk=sweep.pk).update(
        promoted_version=job.result, promoted_at=timezone.now()
    )
    return job.result


def _kept_run(sweep: Sweep) -> FineTuneJob | None:
    if sweep.promoted_version_id:
        return sweep.runs.filter(result_id=sweep.promoted_version_id).first()
    ranked = [r for r in sweep_ranking(sweep) if r.rank and r.job.result_id]
    return ranked[0].job if ranked else None


def sweep_delete_losing_weights(*, sweep: Sweep) -> tuple[int, int]:
    """Delete the weights of every succeeded run except the promoted one (or, with none
    promoted, the best-ranked); their versions and metadata stay, marked
    ``weights_deleted_at``. Refused while runs are active. A version that was sampled is
    kept. Returns (versions cleared, bytes freed)."""
    if sweep.runs.active().exists():
        raise TrainingError("Runs are still queued or running: wait, or cancel the sweep.")
    kept = _kept_run(sweep)
    results = sweep.runs.filter(result__isnull=False).values("result")
    sampled = set(
        Generation.objects.filter(model_version__in=results).values_list("model_version", flat=True)
    )
    cleared, freed = 0, 0
    for job in sweep_runs(sweep).filter(result__isnull=False):
        version = job.result
        if job == kept or version.pk in sampled or version.metadata.get("weights_deleted_at"):
            continue
        path = Path(version.path)
        if path.is_dir():
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
        version.metadata = {**version.metadata, "weights_deleted_at": timezone.now().isoformat()}
        version.save(update_fields=["metadata"])
        cleared += 1
    return cleared, freed
