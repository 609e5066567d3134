"""Held-out adherence runs (gpu queue): how likely each arm's model finds the answers of a
held-out values-targeted set, per category, relative to the base model.

For every local arm the answer-only negative log-likelihood of each held-out sample is
measured with the chat template, as the fine-tune's validation loss is
(``training.engine.scoring.evaluate_answer_likelihood``). Per category the perplexity is
token-weighted over that category's answers; each arm is compared with the base arm of the
same base model on the same samples, with a paired bootstrap interval over samples
(``palmsweb.lib.perplexity``): the unit of analysis is the held-out sample. Cheap,
automatic and offline; hosted arms give no log-probabilities of given text and are
reported as not available.

The set defaults to the demo validation snapshot (the newest snapshot of a validation
dataset otherwise); a set that shares a question with an arm's training snapshot is
refused, since it would not be held out.
"""

from __future__ import annotations

import logging
from typing import Any

from curation.models import Dataset, Snapshot
from evaluation.models import ScoringRun, Study, StudyArm
from evaluation.scoring.common import SCORING, ScoringError
from evaluation.scoring.compute import (
    ModelPass,
    local_models_record,
    scoring_meter,
    version_parameters,
)
from palmsweb.lib.jobs import ProgressWriter, claim, finish

logger = logging.getLogger(__name__)

MAX_SEQ_LEN = 1024
CONFIDENCE = 0.95
N_RESAMPLES = 2_000
ALL = "All categories"


def default_adherence_snapshot(profile_id: int | None = None) -> Snapshot | None:
    """The demo's held-out validation snapshot, else the newest validation snapshot (of the
    study's value profile, when given: its answers express that profile's positions)."""
    from curation.demo import VALIDATION

    snapshots = Snapshot.objects.filter(dataset__kind=Dataset.Kind.VALIDATION)
    if profile_id is not None:
        snapshots = snapshots.filter(dataset__profile_id=profile_id)
    return snapshots.filter(dataset__name=VALIDATION.name).first() or snapshots.first()


def _question_set(snapshot: Snapshot) -> set[str]:
    return {item["question"].strip().lower() for item in snapshot.items()}


def clean_adherence_options(study: Study, options: dict | None) -> dict:
    """``{"snapshot": id}`` (default: ``default_adherence_snapshot``), refused when missing,
    empty or overlapping an arm's training data."""
    options = dict(options or {})
    unknown = set(options) - {"snapshot"}
    if unknown:
        raise ScoringError(f"Unknown adherence options: {', '.join(sorted(unknown))}.")
    raw = options.get("snapshot")
    if raw in (None, ""):
        snapshot = default_adherence_snapshot(study.profile_id)
        if snapshot is None:
            raise ScoringError(
                "No held-out set: snapshot a validation dataset (the demo loads one) or "
                "choose a snapshot."
            )
    else:
        try:
            # Only the study's profile's snapshots: another profile's do not exist here.
            in_profile = Snapshot.objects.filter(dataset__profile_id=study.profile_id)
            snapshot = in_profile.select_related("dataset").get(pk=int(raw))
        except (TypeError, ValueError, OverflowError, Snapshot.DoesNotExist):
            raise ScoringError(f"Snapshot {raw!r} does not exist.") from None
    if not snapshot.sample_count:
        raise ScoringError("The held-out snapshot has no samples.")
    held_out = _question_set(snapshot)
    for arm in study.arms.select_related("model_version"):
        trained_on = (arm.model_version.metadata or {}).get("snapshot_id")
        if trained_on == snapshot.pk:
            raise ScoringError(f"{arm.model_version.name} was trained on this snapshot.")
        training = Snapshot.objects.filter(pk=trained_on).first() if trained_on else None
        if training is not None and held_out & _question_set(training):
            raise ScoringError(
                f"The held-out set shares questions with the training data of "
                f"{arm.model_version.name}: it is not held out."
            )
    return {"snapshot": snapshot.pk}


def _reference_arm(arm: StudyArm, arms: list[StudyArm]) -> StudyArm | None:
    """The base arm of the same base model (sizes are compared within a size)."""
    for other in arms:
        if other.arm == "base" and other.model_version.base_model_id == (
            arm.model_version.base_model_id
        ):
            return other
    return None


def _change(scored: dict, reference: dict, indexes: list[int]) -> dict:
    from palmsweb.lib.perplexity import perplexity_change

    change = perplexity_change(
        [scored["nll"][i] for i in indexes],
        [scored["tokens"][i] for i in indexes],
        [reference["nll"][i] for i in indexes],
        [reference["tokens"][i] for i in indexes],
        confidence=CONFIDENCE,
        n_resamples=N_RESAMPLES,
    )
    return {
        "n_samples": change.n_samples,
        "tokens": change.tokens,
        "perplexity": change.perplexity,
        "reference_perplexity": change.reference_perplexity,
        "change": change.change,
        "ci_low": change.ci_low,
        "ci_high": change.ci_high,
    }


def _perplexities(scored: dict, groups: dict[str, list[int]]) -> dict[str, dict]:
    from palmsweb.lib.perplexity import token_weighted_perplexity

    return {
        name: {
            "n_samples": len(indexes),
            "tokens": sum(scored["tokens"][i] for i in indexes),
            "perplexity": token_weighted_perplexity(
                [scored["nll"][i] for i in indexes], [scored["tokens"][i] for i in indexes]
            ),
        }
        for name, indexes in groups.items()
    }


def summarise_arms(result: dict, arms: list[StudyArm]) -> None:
    """Per arm and category: perplexity, and against its base arm the change with its
    interval. Fills ``result["arms"][pk]["categories"]`` in place."""
    groups: dict[str, list[int]] = {}
    for index, category in enumerate(result["sample_categories"]):
        groups.setdefault(category, []).append(index)
    groups[ALL] = list(range(len(result["sample_categories"])))
    for arm in arms:
        scored = result["arms"].get(str(arm.pk), {})
        if not scored.get("available"):
            continue
        cells = _perplexities(scored, groups)
        reference = _reference_arm(arm, arms)
        ref_scored = result["arms"].get(str(reference.pk), {}) if reference else {}
        scored["reference_arm"] = reference.pk if reference else None
        if reference is not None and reference != arm and ref_scored.get("available"):
            for name, indexes in groups.items():
                cells[name] |= _change(scored, ref_scored, indexes)
        scored["categories"] = cells


def _score_arm(arm: StudyArm, examples: list[dict], progress, offset: int,
               passes: list[ModelPass]) -> dict:  # fmt: skip
    from training.engine.scoring import evaluate_answer_likelihood
    from training.services import version_local_path

    outcome = evaluate_answer_likelihood(
        version_local_path(arm.model_version),
        examples,
        max_seq_len=MAX_SEQ_LEN,
        on_progress=lambda done, _total: progress(offset + done),
    )
    passes.append(ModelPass(version_parameters(arm.model_version), outcome.input_tokens,
                            outcome.device))  # fmt: skip
    return {
        "available": True,
        "nll": [round(x, 4) for x in outcome.nll],
        "tokens": list(outcome.tokens),
        "dtype": outcome.dtype,
        "device": outcome.device,
        "seconds": round(outcome.seconds, 2),
    }


def adherence_execute(run_id: int) -> None:
    """Score each local arm on the held-out set, then summarise (gpu-queue task)."""
    from curation.services import snapshot_chat_examples
    from training.services import readable_failure

    if not claim(SCORING, run_id):
        return
    run = ScoringRun.objects.select_related("study").get(pk=run_id)
    snapshot = Snapshot.objects.select_related("dataset").get(pk=run.options["snapshot"])
    examples = snapshot_chat_examples(snapshot)
    arms = list(run.study.arms.select_related("model_version__base_model"))
    local = [a for a in arms if a.model_version.base_model.is_local]
    progress = ProgressWriter(SCORING, run_id, total=len(examples) * len(local))
    result: dict[str, Any] = {
        "snapshot": {
            "id": snapshot.pk,
            "hash": snapshot.content_hash,
            "dataset": snapshot.dataset.name,
            "n": len(examples),
        },  # fmt: skip
        "sample_categories": [item["category"] or "(none)" for item in snapshot.items()],
        "unit": "held-out sample",
        "confidence": CONFIDENCE,
        "n_resamples": N_RESAMPLES,
        "max_seq_len": MAX_SEQ_LEN,
        "arms": {},
    }
    errors: list[str] = []
    passes: list[ModelPass] = []
    with scoring_meter(on_device=True) as meter:
        for arm in arms:
            if arm not in local:
                result["arms"][str(arm.pk)] = {
                    "available": False,
                    "reason": "hosted model: its API gives no log-probabilities of given text",
                }
                continue
            offset = local.index(arm) * len(examples)
            progress(offset, force=True, phase=f"model {local.index(arm) + 1} of {len(local)}")
            try:
                result["arms"][str(arm.pk)] = _score_arm(arm, examples, progress, offset, passes)
            except Exception as exc:  # one arm's failure is reported; the others still run
                logger.exception("adherence run %s, arm %s failed", run_id, arm.pk)
                reason = readable_failure(exc)
                errors.append(f"{arm.model_version}: {reason}")
                result["arms"][str(arm.pk)] = {"available": False, "reason": reason, "error": True}
    summarise_arms(result, arms)
    progress(len(examples) * len(local), force=True)
    status = ScoringRun.Status.SUCCEEDED
    if local and len(errors) == len(local):
        status = ScoringRun.Status.FAILED
    finish(SCORING, run_id, status, error="; ".join(errors) if status == "failed" else "",
           result=result, compute=local_models_record(meter.reading, passes))  # fmt: skip


# --- the report section ---------------------------------------------------------------------


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 1)


def _cell(name: str, data: dict, *, blinded: bool) -> dict:
    cell = {
        "category": name,
        "n_samples": data.get("n_samples"),
        "tokens": data.get("tokens"),
        "perplexity": data.get("perplexity"),
    }
    if not blinded and data.get("change") is not None:
        # Against the base arm: shown once arms may be seen (it would say which is base).
        cell |= {
            "change_pct": _pct(data["change"]),
            "ci_low_pct": _pct(data.get("ci_low")),
            "ci_high_pct": _pct(data.get("ci_high")),
        }
    return cell


def _capability_change(study: Study, arm_pk: int, reference_pk: int | None) -> float | None:
    """General-text perplexity against the same base arm, from the latest capability run:
    a model that merely took on the set's style gains here too, or loses capability."""
    from evaluation.scoring.common import latest_succeeded

    run = latest_succeeded(study, ScoringRun.Kind.CAPABILITY)
    arms = run.result.get("arms", {}) if run else {}
    mine, ref = arms.get(str(arm_pk), {}), arms.get(str(reference_pk), {})
    if reference_pk is None or not mine.get("perplexity") or not ref.get("perplexity"):
        return None
    return _pct(mine["perplexity"] / ref["perplexity"] - 1)


def _sentence(label: str, cell: dict, confidence: float) -> str:
    change = cell["change_pct"]
    where = "over all categories" if cell["category"] == ALL else f"in {cell['category']}"
    text = (
        f"The {label} model assigns the held-out target answers {abs(change):g}% "
        f"{'lower' if change < 0 else 'higher'} perplexity than base {where}"
    )
    if cell.get("ci_low_pct") is not None:
        text += (f" ({confidence:.0%} CI {cell['ci_low_pct']:+g}% to {cell['ci_high_pct']:+g}%, "
                 f"{cell['n_samples']} samples)")  # fmt: skip
    else:
        text += f" ({cell['n_samples']} sample{'s' if cell['n_samples'] != 1 else ''}, no CI)"
    return text + "."


def adherence_section(study: Study, arms: list[dict], *, blinded: bool) -> dict:
    """The report's held-out adherence table (``arms`` as ``summaries._arm_entries``):
    perplexity per arm × category; unblinded, also the change against base with its
    interval, the capability check's change beside it, and one sentence per category."""
    from evaluation.scoring.common import latest_succeeded

    run = latest_succeeded(study, ScoringRun.Kind.ADHERENCE)
    if run is None:
        return {"available": False}
    result = run.result
    categories = list(dict.fromkeys(result.get("sample_categories", []))) + [ALL]
    rows, sentences = [], []
    for arm in arms:
        data = result.get("arms", {}).get(str(arm["key"]))
        row = {"arm": arm["label"], "available": bool(data and data.get("available"))}
        if not row["available"]:
            reason = (data or {}).get("reason", "not scored")
            row["reason"] = "not available for this arm" if blinded else reason
            rows.append(row)
            continue
        cells = data.get("categories", {})
        row["cells"] = [_cell(c, cells.get(c, {}), blinded=blinded) for c in categories]
        if not blinded:
            row |= {"is_base": arm.get("arm") == "base", "arm_kind": arm.get("arm"),
                    "arm_label": arm.get("arm_label", ""), "size": arm.get("size", "")}  # fmt: skip
            row["capability_change_pct"] = _capability_change(
                study, arm["key"], data.get("reference_arm")
            )
            sentences += [
                _sentence(arm["label"], cell, result.get("confidence", CONFIDENCE))
                for cell in row["cells"]
                if cell.get("change_pct") is not None
            ]
        rows.append(row)
    snapshot = result.get("snapshot", {})
    return {
        "available": True,
        "finished_at": run.finished_at,
        "snapshot": {k: snapshot.get(k) for k in ("dataset", "hash", "n")},
        "unit": result.get("unit", "held-out sample"),
        "confidence": result.get("confidence", CONFIDENCE),
        "categories": categories,
        "rows": rows,
        "sentences": sentences,
        "blinded": blinded,
    }
