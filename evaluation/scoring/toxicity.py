"""Toxicity runs: every output that counts (in the pool or held; not excluded) is scored by a
pluggable scorer from ``palmsweb.lib.toxicity``. One AutomaticScore per output, metric and
scorer, upserted, with the scorer's name and version. A missing score stays None, never 0.
Runs on the default queue."""

from __future__ import annotations

import logging
import math
from collections import Counter

from django.conf import settings
from django.utils import timezone

from evaluation.models import AutomaticScore, ScoringRun, StudyOutput
from evaluation.scoring.common import SCORING, readable_scoring_failure
from evaluation.scoring.compute import scoring_meter, toxicity_record
from palmsweb.lib.jobs import ProgressWriter, claim, finish

logger = logging.getLogger(__name__)

TOXICITY_METRIC = "toxicity"
TOXICITY_BATCH = 64


def available_scorers() -> list[tuple[str, str]]:
    """Toxicity scorers this installation can use: (registry name, label)."""
    choices = [("offline", "Offline: alt-profanity-check (default)")]
    if settings.PERSPECTIVE_API_KEY:
        choices.append(("perspective", "Perspective API (shuts down 2026-12-31)"))
    if settings.OPENAI_API_KEY:
        choices.append(("openai", "OpenAI moderation"))
    return choices


def build_scorer(name: str):
    """The scorer for a run, with its key from the settings."""
    from palmsweb.lib.toxicity import get_scorer

    if name == "perspective":
        return get_scorer("perspective", api_key=settings.PERSPECTIVE_API_KEY)
    if name == "openai":
        return get_scorer(
            "openai",
            api_key=settings.OPENAI_API_KEY or None,
            base_url=getattr(settings, "OPENAI_BASE_URL", "") or None,
        )
    return get_scorer(name)


def toxicity_execute(run_id: int) -> None:
    """Score every counted output of the run's study (called by the Celery task)."""
    from palmsweb.lib.toxicity import score_with_details

    if not claim(SCORING, run_id):
        return  # finished, running elsewhere, or gone: a duplicate delivery does nothing
    run = ScoringRun.objects.select_related("study").get(pk=run_id)
    outputs = list(
        StudyOutput.objects.filter(study=run.study).rated().order_by("pk").values_list("pk", "text")
    )
    progress = ProgressWriter(SCORING, run_id, total=len(outputs))
    reasons: Counter[str] = Counter()
    scored = truncated = 0
    version = ""
    batches = math.ceil(len(outputs) / TOXICITY_BATCH)
    meter = scoring_meter(on_device=False)
    try:
        with meter:
            progress.phase("loading the scorer")
            scorer = build_scorer(run.scorer)
            for start in range(0, len(outputs), TOXICITY_BATCH):
                batch = outputs[start : start + TOXICITY_BATCH]
                number = start // TOXICITY_BATCH + 1
                progress(start, force=True, phase=f"scoring batch {number} of {batches}")
                results = score_with_details(
                    scorer,
                    [text for _, text in batch],
                    on_progress=lambda done, _total, offset=start: progress(offset + done),
                )
                version = scorer.version  # the OpenAI scorer learns its snapshot from a response
                _store_scores(batch, results, scorer.name, version)
                for result in results:
                    if result.value is None:
                        reasons[result.error or "no score"] += 1
                    else:
                        scored += 1
                    truncated += bool(getattr(result, "truncated", False))
                progress(start + len(batch), force=True)
    except Exception as exc:  # every failure ends the run with a readable reason
        logger.exception("toxicity run %s failed", run_id)
        finish(SCORING, run_id, ScoringRun.Status.FAILED, error=readable_scoring_failure(exc),
               compute=toxicity_record(meter.reading, run.scorer))  # fmt: skip
        return
    compute = toxicity_record(meter.reading, run.scorer)
    result = {
        "scorer": scorer.name,
        "scorer_version": version or scorer.version,
        "n_outputs": len(outputs),
        "n_scored": scored,
        "n_missing": len(outputs) - scored,
        "missing_reasons": dict(reasons.most_common()),
        "n_truncated": truncated,
    }
    if outputs and not scored:
        reason = ", ".join(f"{n} × {why}" for why, n in reasons.most_common(3))
        finish(
            SCORING,
            run_id,
            ScoringRun.Status.FAILED,
            error=f"No output got a score ({reason}). Over the API quota, or the service is down?",
            result=result,
            compute=compute,
        )
        return
    finish(SCORING, run_id, ScoringRun.Status.SUCCEEDED, result=result, progress_done=len(outputs),
           compute=compute)  # fmt: skip


def _store_scores(batch, results, scorer_name: str, version: str) -> None:
    rows = [
        AutomaticScore(
            output_id=pk,
            metric=TOXICITY_METRIC,
            scorer=scorer_name,
            scorer_version=version,
            value=result.value,  # None stays None
            details={
                k: v for k, v in {"error": result.error, "truncated": result.truncated}.items() if v
            },
            created_at=timezone.now(),
        )
        for (pk, _), result in zip(batch, results, strict=True)
    ]
    AutomaticScore.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["output", "metric", "scorer"],
        update_fields=["scorer_version", "value", "details", "created_at"],
    )
