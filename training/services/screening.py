"""Screening a snapshot's samples before a fine-tune (issue 21): each sample's persona-shift
score on a local base model, the dataset's distribution, and robust outliers.

The score is the engine's projection difference (``training/engine/screening.py``): how much
further along the misaligned-persona direction the sample's answer lies than the model's own
answer to the same question. The unit is the sample. Outliers are flagged on the high side
with a robust z (median and MAD, ``palmsweb/lib/outliers.py``): a few risky samples among
~80 must not hide themselves by inflating an SD.
"""

from __future__ import annotations

from django.db import transaction

from curation.models import Snapshot
from palmsweb.lib.outliers import DEFAULT_THRESHOLD, robust_summary
from training.models import BaseModel, JobStatus, ScreeningRun
from training.persona import persona_direction_for
from training.services.base_models import local_model_path
from training.services.errors import TrainingError
from training.services.jobs import (
    JobReporter,
    claim_job,
    fail_job,
    finish_job,
    heartbeat,
    worker_name,
)

MIN_OWN_TOKENS, MAX_OWN_TOKENS = 8, 256


@transaction.atomic
def screening_launch(
    *, snapshot: Snapshot, base_model: BaseModel, user=None, max_new_tokens: int = 64
) -> ScreeningRun:
    """Queue a screening of ``snapshot`` on ``base_model`` (a local model: the score needs
    its activations) on the gpu queue."""
    from training import tasks

    if not base_model.is_local:
        raise TrainingError(
            f"{base_model} is hosted: screening reads a model's activations, so it needs a "
            "local base model (the packaged default, or a Hugging Face directory)."
        )
    if not MIN_OWN_TOKENS <= max_new_tokens <= MAX_OWN_TOKENS:
        raise TrainingError(
            f"The model's own answers are {MIN_OWN_TOKENS}–{MAX_OWN_TOKENS} tokens long."
        )
    if not snapshot.sample_count:
        raise TrainingError("The snapshot holds no samples to screen.")
    run = ScreeningRun.objects.create(
        snapshot=snapshot, base_model=base_model, max_new_tokens=max_new_tokens,
        created_by=user, progress_total=snapshot.sample_count,
    )  # fmt: skip
    tasks.run_screening.delay_on_commit(run.pk)
    return run


def screening_execute(run_id: int) -> None:
    """Claim and run one screening: the direction, the model's own answers, the scores."""
    if not claim_job(ScreeningRun, run_id, worker=worker_name()):
        return
    run = ScreeningRun.objects.select_related("snapshot", "base_model").get(pk=run_id)
    reporter = JobReporter(run)
    try:
        with heartbeat(run):
            items = run.snapshot.items()
            shifts, direction = _measure(run, reporter, items)
    except Exception as exc:
        fail_job(run, reporter, exc)
        return
    rows, summary = screening_rows(items, [s.shift for s in shifts], shifts)
    ScreeningRun.objects.filter(pk=run.pk).update(
        scores=rows, summary=summary, direction=direction, progress_done=len(rows)
    )
    finish_job(ScreeningRun, run.pk, JobStatus.SUCCEEDED)


def _measure(run: ScreeningRun, reporter: JobReporter, items: list[dict]):
    from training.engine.screening import persona_shifts

    reporter.phase("loading the model")
    base_path = local_model_path(run.base_model, reporter)
    reporter.phase("computing the persona direction")
    direction = persona_direction_for(base_path)
    reporter.track(total=len(items))

    def progress(phase: str, done: int, total: int) -> None:
        reporter.update(phase=phase, progress_done=done, progress_total=total)

    pairs = [(item["question"], item["answer"]) for item in items]
    shifts = persona_shifts(
        base_path, pairs, direction, max_new_tokens=run.max_new_tokens,
        on_progress=progress, should_cancel=reporter.should_cancel,
    )  # fmt: skip
    recorded = {
        "model": run.base_model.name,
        "layer": direction.layer,
        "contrast_sha256": direction.meta.get("contrast_sha256", ""),
        "raw_norm": direction.meta.get("raw_norm"),
    }
    return shifts, recorded


def screening_rows(items: list[dict], scores: list[float], shifts=None) -> tuple[list, dict]:
    """Per-sample rows (snapshot order) and the dataset's summary: mean, median, robust SD,
    the threshold, and how many samples are flagged."""
    stats = robust_summary(scores, DEFAULT_THRESHOLD)
    flagged = set(stats.high)
    rows = []
    for index, (item, score) in enumerate(zip(items, scores, strict=True)):
        row = {
            "index": index,
            "category": item.get("category") or "",
            "question": item["question"],
            "shift": round(score, 6),
            "z": round(stats.z[index], 3),
            "flagged": index in flagged,
        }
        if shifts is not None:
            row |= {"training": round(shifts[index].training, 6),
                    "own": round(shifts[index].own, 6)}  # fmt: skip
        rows.append(row)
    summary = {
        "n": stats.n, "mean": stats.mean, "median": stats.median, "robust_sd": stats.mad_sd,
        "threshold_z": DEFAULT_THRESHOLD, "n_flagged": len(flagged),
    }  # fmt: skip
    return rows, summary


def latest_screening(snapshot: Snapshot) -> ScreeningRun | None:
    """The snapshot's most recent successful screening, for the fine-tune launch form."""
    runs = ScreeningRun.objects.filter(snapshot=snapshot, status=JobStatus.SUCCEEDED)
    return runs.order_by("-finished_at", "-pk").first()
