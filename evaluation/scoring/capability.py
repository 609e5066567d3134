"""Capability runs (gpu queue): perplexity on held-out general text and accuracy on a small
multiple-choice set, per local arm (``training.engine.scoring``); remote arms are reported
as not available."""

from __future__ import annotations

import logging
import math
from typing import Any

from evaluation.models import ScoringRun
from evaluation.scoring.common import SCORING, shipped_preset
from evaluation.scoring.compute import (
    CAPABILITY_NOTE,
    ModelPass,
    local_models_record,
    scoring_meter,
    version_parameters,
)
from palmsweb.lib.jobs import ProgressWriter, claim, finish

logger = logging.getLogger(__name__)


def capability_preset() -> tuple[dict, dict]:
    """(held-out texts, multiple-choice set) as shipped."""
    return shipped_preset("capability_texts.json"), shipped_preset("capability_mc.json")


def capability_execute(run_id: int) -> None:
    """Perplexity and multiple choice per local arm (called by the gpu-queue task)."""
    from training.engine.scoring import MCQuestion, evaluate_capability
    from training.services import readable_failure, version_local_path

    if not claim(SCORING, run_id):
        return
    run = ScoringRun.objects.select_related("study").get(pk=run_id)
    texts_preset, mc_preset = capability_preset()
    texts = list(texts_preset["texts"])
    questions = [
        MCQuestion(q["question"], tuple(q["options"]), int(q["answer"]))
        for q in mc_preset["questions"]
    ]
    arms = list(run.study.arms.select_related("model_version__base_model"))
    local = [a for a in arms if a.model_version.base_model.is_local]
    per_arm = len(texts) + len(questions)
    progress = ProgressWriter(SCORING, run_id, total=per_arm * len(local))
    result: dict[str, Any] = {
        "texts": {
            "name": texts_preset["name"],
            "version": texts_preset["version"],
            "n": len(texts),
        },
        "multiple_choice": {
            "name": mc_preset["name"],
            "version": mc_preset["version"],
            "n": len(questions),
        },
        "arms": {},
    }
    errors = []
    passes: list[ModelPass] = []
    with scoring_meter(on_device=True) as meter:
        for arm in arms:
            if arm not in local:
                result["arms"][str(arm.pk)] = {
                    "available": False,
                    "reason": "remote model: the API gives no log-probabilities of given text",
                }
                continue
            offset = local.index(arm) * per_arm
            progress(
                offset,
                force=True,
                phase=f"model {local.index(arm) + 1} of {len(local)}: loading it, then perplexity "
                "and multiple choice",
            )
            try:
                outcome = evaluate_capability(
                    version_local_path(arm.model_version),
                    texts,
                    questions,
                    on_progress=lambda done, _total, offset=offset: progress(offset + done),
                )
            except Exception as exc:  # one arm's failure is reported; the others still run
                logger.exception("capability run %s, arm %s failed", run_id, arm.pk)
                reason = readable_failure(exc)
                errors.append(f"{arm}: {reason}")
                result["arms"][str(arm.pk)] = {"available": False, "reason": reason, "error": True}
                continue
            result["arms"][str(arm.pk)] = _arm_result(outcome)
            passes.append(ModelPass(version_parameters(arm.model_version),
                                    outcome.perplexity.n_tokens, outcome.device))  # fmt: skip
            ScoringRun.objects.filter(pk=run_id).update(result=result)
    progress(per_arm * len(local), force=True)
    compute = local_models_record(meter.reading, passes, note=CAPABILITY_NOTE)
    if local and len(errors) == len(local):
        finish(SCORING, run_id, ScoringRun.Status.FAILED, error="; ".join(errors), result=result,
               compute=compute)  # fmt: skip
        return
    finish(SCORING, run_id, ScoringRun.Status.SUCCEEDED, result=result, compute=compute)


def _arm_result(outcome) -> dict:
    """One local arm's perplexity and multiple-choice figures, for the run's result."""
    ppl, mc = outcome.perplexity, outcome.multiple_choice
    return {
        "available": True,
        "perplexity": _finite(ppl.perplexity),
        "nll_per_token": _finite(ppl.nll_per_token),
        "n_tokens": ppl.n_tokens,
        "mc_accuracy_sum": mc.accuracy_sum if mc else None,
        "mc_accuracy_mean": mc.accuracy_mean if mc else None,
        "mc_predictions_mean": list(mc.predictions_mean) if mc else [],
        "dtype": outcome.dtype,
        "device": outcome.device,
        "seconds": round(outcome.seconds, 2),
    }


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
