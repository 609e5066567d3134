"""Automatic scores of a study: toxicity, co-occurrence and capability runs, and the
ready-to-render report sections built from them.

Each run is a ScoringRun worked by a Celery task (evaluation.tasks):

- toxicity (default queue): every output that counts (in the pool or held; not excluded)
  is scored by a pluggable scorer from ``palmsweb.lib.toxicity``. One AutomaticScore per
  output, metric and scorer, upserted, with the scorer's name and version. A missing
  score stays None, never 0.
- co-occurrence (default queue, waits on a gpu-queue sampling job): the template set's
  openings are sampled from every arm through ``training.services.sampling_launch``;
  adjectives and adverbs of the completions are counted (``palmsweb.lib.cooccurrence``)
  and each group's most skewed words stored per arm in ``ScoringRun.result``.
- capability (gpu queue): perplexity on held-out general text and accuracy on a small
  multiple-choice set, per local arm (``training.engine.scoring``); remote arms are
  reported as not available.
- judge (default queue, HTTP-bound; ``evaluation.scoring.judge``): an LLM judge on any
  OpenAI-compatible endpoint (``palmsweb.lib.judge``) scores every counted output 1–5
  against its category's position. One AutomaticScore per output (metric "judge",
  scorer = the judge model); outputs already scored with the same settings are skipped,
  so a new run resumes.
  The report sets the scores beside the human ratings (``evaluation.report.build``).

Runs are claimed with a guarded update (queued → running), so a task delivered twice
does its work once. docs/scoring.md says how to read the numbers.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter, defaultdict
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from evaluation.errors import EvaluationError
from evaluation.models import AutomaticScore, ScoringRun, Study, StudyArm, StudyOutput
from evaluation.studies.blinding import blind_labels
from palmsweb.lib.jobs import (
    Lifecycle,
    ProgressWriter,
    claim,
    finish,
    readable_failure,
    sweep_stale,
)
from training.models import JobStatus, SamplingJob
from training.selectors import job_phase

logger = logging.getLogger(__name__)

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"
TOXICITY_METRIC = "toxicity"
TOXICITY_BATCH = 64

COOCCURRENCE_DEFAULTS = {
    # Sized for a CPU; the GPT-3 paper drew 800 completions of 50 tokens per template.
    "n_per_template": 20,
    "max_new_tokens": 30,
    "temperature": 1.0,
    "top_p": 0.9,
    "seed": 0,
    "top_k": 10,
    "min_count": 2,
    "tagger": "auto",
}
COOCCURRENCE_LIMITS = {
    "n_per_template": (int, 1, 100),
    "max_new_tokens": (int, 5, 200),
    "temperature": (float, 0.0, 2.0),
    "top_p": (float, 0.01, 1.0),
    "seed": (int, 0, 2**31 - 1),
    "top_k": (int, 1, 50),
    "min_count": (int, 1, 100),
}
MAX_TEMPLATES = 200


class ScoringError(EvaluationError):
    """A scoring rule refused the request; the message is shown as is."""


# --------------------------------------------------------------------------- presets


@cache
def _preset(name: str) -> dict:
    return json.loads((PRESETS_DIR / name).read_text(encoding="utf-8"))


def cooccurrence_preset() -> dict:
    """The shipped template sets (gender, race, religion) and the prompt format."""
    return json.loads(json.dumps(_preset("cooccurrence_templates.json")))  # a fresh copy


def capability_preset() -> tuple[dict, dict]:
    """(held-out texts, multiple-choice set) as shipped."""
    return _preset("capability_texts.json"), _preset("capability_mc.json")


def clean_template_sets(sets: Any) -> list[dict]:
    """Validate edited template sets: a list of {key, label, groups: [{key, label,
    templates: [str, ...]}, ...]}, at least two groups per set, no empty template."""
    if not isinstance(sets, list) or not sets:
        raise ScoringError("Give at least one template set.")
    cleaned, total = [], 0
    for s_index, item in enumerate(sets, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("groups"), list):
            raise ScoringError(f"Set {s_index}: expected key, label and a list of groups.")
        key = str(item.get("key") or f"set{s_index}").strip()
        groups = []
        for g_index, group in enumerate(item["groups"], start=1):
            templates = group.get("templates") if isinstance(group, dict) else None
            if not isinstance(templates, list) or not templates:
                raise ScoringError(f"Set {key}, group {g_index}: give at least one template.")
            texts = [str(t).strip() for t in templates]
            if not all(texts):
                raise ScoringError(f"Set {key}, group {g_index}: a template is empty.")
            total += len(texts)
            groups.append(
                {
                    "key": str(group.get("key") or f"g{g_index}").strip(),
                    "label": str(group.get("label") or group.get("key") or g_index).strip(),
                    "templates": texts,
                }
            )
        if len(groups) < 2:
            raise ScoringError(f"Set {key}: compare at least two groups.")
        if len({g["key"] for g in groups}) != len(groups):
            raise ScoringError(f"Set {key}: group keys must differ.")
        cleaned.append(
            {"key": key, "label": str(item.get("label") or key).strip(), "groups": groups}
        )
    if len({s["key"] for s in cleaned}) != len(cleaned):
        raise ScoringError("Template set keys must differ.")
    if total > MAX_TEMPLATES:
        raise ScoringError(f"At most {MAX_TEMPLATES} templates in all.")
    return cleaned


def clean_cooccurrence_options(raw: dict | None) -> dict:
    """Defaults, preset templates and range checks for a co-occurrence run's options."""
    raw = dict(raw or {})
    preset = cooccurrence_preset()
    options = dict(COOCCURRENCE_DEFAULTS)
    for name, (kind, low, high) in COOCCURRENCE_LIMITS.items():
        if raw.get(name) in (None, ""):
            continue
        try:
            value = kind(raw[name])
        except (TypeError, ValueError):
            raise ScoringError(f"{name} must be a number.") from None
        if not low <= value <= high:
            raise ScoringError(f"{name} must be between {low} and {high}.")
        options[name] = value
    if raw.get("tagger"):
        if raw["tagger"] not in {"auto", "spacy", "lexicon"}:
            raise ScoringError("tagger must be auto, spacy or lexicon.")
        options["tagger"] = raw["tagger"]
    options["sets"] = clean_template_sets(raw["sets"] if "sets" in raw else preset["sets"])
    prompt_format = str(raw.get("prompt_format") or preset["prompt_format"])
    if "{template}" not in prompt_format:
        raise ScoringError("The prompt format must contain {template}.")
    options["prompt_format"] = prompt_format
    return options


# --------------------------------------------------------------------------- scorers


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


# --------------------------------------------------------------------------- launching


@transaction.atomic
def scoring_run_start(
    *,
    study: Study,
    kind: str = ScoringRun.Kind.TOXICITY,
    scorer: str = "offline",
    options: dict | None = None,
    user=None,
) -> ScoringRun:
    """Create a scoring run and queue its task after commit.

    Toxicity needs outputs (a study past sampling) and an available scorer; co-occurrence
    takes ``options`` (see ``clean_cooccurrence_options``); the judge takes its endpoint,
    model, key variable name and logprobs switch (``clean_judge_options``), and its key
    variable must be set; capability takes none.
    Refuses a second run of the same kind while one is queued or running.
    """
    if kind not in ScoringRun.Kind.values:
        raise ScoringError(f"Unknown scoring kind {kind!r}.")
    busy = ScoringRun.objects.filter(
        study=study, kind=kind, status__in=[ScoringRun.Status.QUEUED, ScoringRun.Status.RUNNING]
    )
    if busy.exists():
        raise ScoringError("A run of this kind is already queued or running for this study.")
    if kind == ScoringRun.Kind.TOXICITY:
        if scorer not in dict(available_scorers()):
            raise ScoringError(
                f"The {scorer!r} scorer is not available: Perspective needs "
                "PERSPECTIVE_API_KEY and OpenAI moderation needs OPENAI_API_KEY."
            )
        if not StudyOutput.objects.filter(study=study).rated().exists():
            raise ScoringError("The study has no outputs to score yet: open it first.")
        options, scorer_name = {}, scorer
    elif kind == ScoringRun.Kind.COOCCURRENCE:
        if not study.arms.exists():
            raise ScoringError("The study has no arms.")
        options, scorer_name = clean_cooccurrence_options(options), ""
    elif kind == ScoringRun.Kind.JUDGE:
        from evaluation.scoring.judge import clean_judge_options, judge_key

        options = clean_judge_options(options)
        judge_key(options)  # refuse now, not in the worker, when the variable is unset
        if not StudyOutput.objects.filter(study=study).rated().exists():
            raise ScoringError("The study has no outputs to score yet: open it first.")
        scorer_name = options["model"]
    else:
        if not study.arms.exists():
            raise ScoringError("The study has no arms.")
        options, scorer_name = {}, ""
    run = ScoringRun.objects.create(
        study=study, kind=kind, scorer=scorer_name, options=options, created_by=user
    )
    from evaluation import tasks

    task = {
        ScoringRun.Kind.TOXICITY: tasks.run_toxicity_scoring,
        ScoringRun.Kind.COOCCURRENCE: tasks.run_cooccurrence_scoring,
        ScoringRun.Kind.CAPABILITY: tasks.run_capability_scoring,
        ScoringRun.Kind.JUDGE: tasks.run_judge_scoring,
    }[kind]
    task.delay_on_commit(run.pk)
    return run


# How a scoring run is claimed and ends (palmsweb.lib.jobs): only a queued run is claimed; a
# running one is never claimed again (its worker's death is found by the sweep below).
SCORING = Lifecycle(model=ScoringRun, claimable=(ScoringRun.Status.QUEUED,))


def readable_scoring_failure(exc: BaseException) -> str:
    """The reason a failed scoring run shows: scorer and evaluation errors verbatim."""
    from palmsweb.lib.toxicity import ScorerConfigError

    return readable_failure(
        exc,
        expected=(ScorerConfigError, EvaluationError),
        out_of_memory="Out of memory while scoring.",
    )


# --------------------------------------------------------------------------- toxicity


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
    try:
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
        finish(SCORING, run_id, ScoringRun.Status.FAILED, error=readable_scoring_failure(exc))
        return
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
        )
        return
    finish(SCORING, run_id, ScoringRun.Status.SUCCEEDED, result=result, progress_done=len(outputs))


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


# --------------------------------------------------------------------------- co-occurrence


def cooccurrence_prompts(options: dict) -> list[dict]:
    """The sampling prompts, in order: one per template, with its set and group."""
    prompts = []
    for item in options["sets"]:
        for group in item["groups"]:
            for template in group["templates"]:
                prompts.append(
                    {
                        "set": item["key"],
                        "group": group["key"],
                        "template": template,
                        "text": options["prompt_format"].replace("{template}", template),
                    }
                )
    return prompts


def cooccurrence_advance(run_id: int) -> bool:
    """Move a co-occurrence run on; True while it waits for its sampling job.

    queued → (claim, launch sampling in the same transaction) running → when the job
    succeeds, count and store → succeeded; a failed or cancelled job fails the run.
    Every step is safe to repeat: the launch happens only with the claim, and the result
    is written only while the run is still running.
    """
    from training.services import TrainingError, sampling_launch

    with transaction.atomic():
        if claim(SCORING, run_id):
            run = ScoringRun.objects.select_related("study").get(pk=run_id)
            versions = [arm.model_version for arm in run.study.arms.select_related("model_version")]
            prompts = cooccurrence_prompts(run.options)
            options = run.options
            try:
                job = sampling_launch(
                    prompts=[p["text"] for p in prompts],
                    model_versions=versions,
                    n_samples=options["n_per_template"],
                    temperature=options["temperature"],
                    top_p=options["top_p"],
                    max_new_tokens=options["max_new_tokens"],
                    seed=options["seed"],
                    name=f"Co-occurrence for study {run.study_id} (run {run.pk})",
                    user=run.created_by,
                )
            except TrainingError as exc:
                finish(SCORING, run_id, ScoringRun.Status.FAILED, error=str(exc))
                return False
            ScoringRun.objects.filter(pk=run_id).update(
                options={**options, "prompts": prompts, "sampling_job_id": job.pk},
                progress_total=job.progress_total,
            )
            return True
    run = ScoringRun.objects.filter(pk=run_id).first()
    if run is None or run.status != ScoringRun.Status.RUNNING:
        return False
    job = SamplingJob.objects.filter(pk=run.options.get("sampling_job_id")).first()
    if job is None:
        finish(SCORING, run_id, ScoringRun.Status.FAILED, error="The sampling job is gone.")
        return False
    if job.status in {JobStatus.QUEUED, JobStatus.RUNNING}:
        ScoringRun.objects.filter(pk=run_id).update(
            progress_done=job.progress_done,
            phase=f"sampling completions: {job_phase(job)}",
            eta_seconds=job.eta_left,
            progress_at=timezone.now(),
        )
        return True
    if job.status != JobStatus.SUCCEEDED:
        reason = job.error or f"The sampling job was {job.status}."
        finish(SCORING, run_id, ScoringRun.Status.FAILED, error=f"Sampling failed: {reason}")
        return False
    ScoringRun.objects.filter(pk=run_id).update(
        phase="counting descriptive words", eta_seconds=None, progress_done=job.progress_done
    )
    try:
        result = _count_cooccurrence(run, job)
    except Exception as exc:
        logger.exception("co-occurrence run %s failed", run_id)
        finish(SCORING, run_id, ScoringRun.Status.FAILED, error=readable_scoring_failure(exc))
        return False
    finish(
        SCORING, run_id, ScoringRun.Status.SUCCEEDED, result=result,
        progress_done=job.progress_total,
    )  # fmt: skip
    return False


def _count_cooccurrence(run: ScoringRun, job: SamplingJob) -> dict:
    from palmsweb.lib.cooccurrence import (
        count_descriptive_words,
        get_tagger,
        group_skews,
        strip_template,
        top_skewed,
    )

    options = run.options
    prompts = options["prompts"]
    arm_of_version = dict(
        StudyArm.objects.filter(study=run.study).values_list("model_version_id", "pk")
    )
    texts: dict[tuple[int, str, str], list[str]] = defaultdict(list)
    for version_id, index, text in job.generations.values_list(
        "model_version_id", "prompt_index", "text"
    ):
        arm_id = arm_of_version.get(version_id)
        if arm_id is None or index >= len(prompts):
            continue
        prompt = prompts[index]
        texts[(arm_id, prompt["set"], prompt["group"])].append(
            strip_template(text, prompt["template"])
        )
    tagger = get_tagger(options.get("tagger", "auto"))
    sets = []
    for item in options["sets"]:
        arms: dict[str, dict] = {}
        for arm_id in sorted(set(arm_of_version.values())):
            counts = {
                g["key"]: count_descriptive_words(tagger, texts[(arm_id, item["key"], g["key"])])
                for g in item["groups"]
            }
            skews = group_skews(counts)
            arms[str(arm_id)] = {
                "groups": {
                    g["key"]: {
                        "n_completions": len(texts[(arm_id, item["key"], g["key"])]),
                        "n_words": sum(counts[g["key"]].values()),
                        "top": [
                            {
                                "word": s.word,
                                "count": s.count,
                                "other": s.other_count,
                                "z": round(s.z, 3),
                                "delta": round(s.delta, 4),
                            }
                            for s in top_skewed(
                                skews[g["key"]], options["top_k"], min_count=options["min_count"]
                            )
                        ],
                    }
                    for g in item["groups"]
                }
            }
        sets.append(
            {
                "key": item["key"],
                "label": item["label"],
                "groups": [{"key": g["key"], "label": g["label"]} for g in item["groups"]],
                "arms": arms,
            }
        )
    return {
        "tagger": {"name": tagger.name, "version": tagger.version},
        "sampling_job_id": job.pk,
        "sampling": {
            k: options[k]
            for k in ("n_per_template", "max_new_tokens", "temperature", "top_p", "seed")
        },
        "prompt_format": options["prompt_format"],
        "sets": sets,
    }


def cooccurrence_advance_all() -> int:
    """Backstop for the periodic sweep: advance every running co-occurrence run."""
    ids = list(
        ScoringRun.objects.filter(
            kind=ScoringRun.Kind.COOCCURRENCE, status=ScoringRun.Status.RUNNING
        ).values_list("pk", flat=True)
    )
    for run_id in ids:
        cooccurrence_advance(run_id)
    return len(ids)


# --------------------------------------------------------------------------- capability


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
        ppl, mc = outcome.perplexity, outcome.multiple_choice
        result["arms"][str(arm.pk)] = {
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
        ScoringRun.objects.filter(pk=run_id).update(result=result)
    progress(per_arm * len(local), force=True)
    if local and len(errors) == len(local):
        finish(SCORING, run_id, ScoringRun.Status.FAILED, error="; ".join(errors), result=result)
        return
    finish(SCORING, run_id, ScoringRun.Status.SUCCEEDED, result=result)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def scoring_runs_sweep_stale() -> int:
    """Fail toxicity, capability and judge runs that have been running longer than a task
    may live (CELERY_TASK_TIME_LIMIT): their worker died. Co-occurrence runs wait on a
    sampling job, which has its own heartbeat and sweep. Returns the count."""
    limit = int(getattr(settings, "CELERY_TASK_TIME_LIMIT", 6 * 3600 + 300))
    return sweep_stale(
        SCORING,
        older_than=timedelta(seconds=limit + 60),
        by="started_at",
        exclude=Q(kind=ScoringRun.Kind.COOCCURRENCE),
        error="The worker running this scoring run stopped (it ran past the task time "
        "limit); start a new run.",
    )


# --------------------------------------------------------------------------- reading


def latest_runs(study: Study) -> dict[str, ScoringRun | None]:
    """The newest run of each kind (any status), for the scoring page."""
    out: dict[str, ScoringRun | None] = {kind: None for kind in ScoringRun.Kind.values}
    for run in study.scoring_runs.order_by("-created_at", "-pk"):
        if out[run.kind] is None:
            out[run.kind] = run
    return out


def _latest_succeeded(study: Study, kind: str) -> ScoringRun | None:
    return (
        study.scoring_runs.filter(kind=kind, status=ScoringRun.Status.SUCCEEDED)
        .order_by("-finished_at", "-pk")
        .first()
    )


def _arm_entries(study: Study, *, blinded: bool, arm_labels: dict[int, str] | None) -> list[dict]:
    arms = list(study.arms.select_related("model_version"))
    if arm_labels is None and blinded:
        arm_labels = blind_labels(study)
    entries = []
    for arm in arms:
        label = (arm_labels or {}).get(arm.pk)
        if blinded:
            if not label:
                raise ValueError(f"arm_labels lacks a label for arm {arm.pk}")
            entries.append({"key": arm.pk, "label": label})
        else:
            default = f"{arm.get_arm_display()}" + (f" · {arm.size_tag}" if arm.size_tag else "")
            entries.append(
                {
                    "key": arm.pk,
                    "label": label or default,
                    "arm": arm.arm,
                    "arm_display": arm.get_arm_display(),
                    "model": arm.model_version.name,
                    "size": arm.size_tag,
                }
            )
    if blinded:
        entries.sort(key=lambda e: e["label"])  # the arm order could hint at the arm
    return entries


def judge_run_summary(
    study: Study, *, blinded: bool, arm_labels: dict[int, str] | None = None
) -> dict:
    """The latest succeeded judge run's per-arm means for the scoring page (blinded as
    ``report_sections``). The report sets them beside the human ratings."""
    run = _latest_succeeded(study, ScoringRun.Kind.JUDGE)
    if run is None:
        return {"available": False}
    arms = run.result.get("arms", {})
    rows = []
    for arm in _arm_entries(study, blinded=blinded, arm_labels=arm_labels):
        data = arms.get(str(arm["key"]), {})
        rows.append(
            {
                "arm": arm["label"],
                "n": data.get("n", 0),
                "n_missing": data.get("n_missing", 0),
                "mean": data.get("mean"),
                "sd": data.get("sd"),
            }
        )
    return {
        "available": True,
        "model": run.scorer,
        "scorer_version": run.result.get("scorer_version", ""),
        "finished_at": run.finished_at,
        "n_scored": run.result.get("n_scored", 0),
        "n_missing": run.result.get("n_missing", 0),
        "rows": rows,
    }


def _public(entry: dict) -> dict:
    """What a template may show of an arm: no internal id."""
    return {k: v for k, v in entry.items() if k != "key"}


def report_sections(
    study: Study,
    *,
    blinded: bool,
    arm_labels: dict[int, str] | None = None,
    n_resamples: int = 2_000,
) -> dict:
    """Ready-to-render automatic-score sections of a study's report.

    Keys: ``toxicity``, ``cooccurrence``, ``capability`` (each with ``available``), and
    ``arms``. With ``blinded=True`` arms appear only as the labels in ``arm_labels``
    (``{StudyArm.pk: "Arm A"}``; drawn from the study's salt when not given), with no
    model names, arm kinds, sizes or internal ids, and per-arm error texts are replaced
    by a neutral phrase.
    """
    arms = _arm_entries(study, blinded=blinded, arm_labels=arm_labels)
    return {
        "blinded": blinded,
        "arms": [_public(a) for a in arms],
        "toxicity": _toxicity_section(study, arms, n_resamples=n_resamples),
        "cooccurrence": _cooccurrence_section(study, arms),
        "capability": _capability_section(study, arms, blinded=blinded),
    }


def _summary(values: list[float], n_missing: int, *, n_resamples: int) -> dict:
    from palmsweb.lib.stats import describe

    s = describe(values, n_resamples=n_resamples, seed=0)

    def pct(x):
        return None if x is None else round(100 * max(0.0, min(1.0, x)), 1)

    return {
        "n": s.n,
        "n_missing": n_missing,
        "mean": s.mean,
        "ci_low": s.ci_low,
        "ci_high": s.ci_high,
        "mean_pct": pct(s.mean),
        "ci_low_pct": pct(s.ci_low),
        "ci_high_pct": pct(s.ci_high),
    }


def _toxicity_section(study: Study, arms: list[dict], *, n_resamples: int) -> dict:
    run = _latest_succeeded(study, ScoringRun.Kind.TOXICITY)
    if run is None:
        return {"available": False}
    scorer = run.result.get("scorer") or run.scorer
    scores = dict(
        AutomaticScore.objects.filter(
            output__study=study, metric=TOXICITY_METRIC, scorer=scorer
        ).values_list("output_id", "value")
    )
    versions = sorted(
        set(
            AutomaticScore.objects.filter(
                output__study=study, metric=TOXICITY_METRIC, scorer=scorer
            ).values_list("scorer_version", flat=True)
        )
    )
    outputs = StudyOutput.objects.filter(study=study).rated()
    cells: dict[tuple[int, str], list[float | None]] = defaultdict(list)
    categories: list[str] = []
    for pk, arm_id, category in outputs.order_by("prompt__order", "pk").values_list(
        "pk", "arm_id", "prompt__category__name"
    ):
        if category not in categories:
            categories.append(category)
        cells[(arm_id, category)].append(scores.get(pk))
    rows = []
    for arm in arms:
        everything = [v for c in categories for v in cells[(arm["key"], c)]]
        rows.append(
            {
                "arm": arm["label"],
                "overall": _summary(
                    [v for v in everything if v is not None],
                    sum(v is None for v in everything),
                    n_resamples=n_resamples,
                ),
                "cells": [
                    {
                        "category": c,
                        **_summary(
                            [v for v in cells[(arm["key"], c)] if v is not None],
                            sum(v is None for v in cells[(arm["key"], c)]),
                            n_resamples=n_resamples,
                        ),
                    }
                    for c in categories
                ],
            }
        )
    return {
        "available": True,
        "scorer": scorer,
        "scorer_versions": versions,
        "finished_at": run.finished_at,
        "categories": categories,
        "rows": rows,
    }


def _cooccurrence_section(study: Study, arms: list[dict]) -> dict:
    run = _latest_succeeded(study, ScoringRun.Kind.COOCCURRENCE)
    if run is None:
        return {"available": False}
    sets = []
    for item in run.result.get("sets", []):
        rows = []
        for arm in arms:
            data = item["arms"].get(str(arm["key"]))
            if data is None:
                continue
            rows.append(
                {
                    "arm": arm["label"],
                    "groups": [
                        {"label": g["label"], **data["groups"].get(g["key"], {"top": []})}
                        for g in item["groups"]
                    ],
                }
            )
        sets.append(
            {
                "key": item["key"],
                "label": item["label"],
                "groups": [g["label"] for g in item["groups"]],
                "rows": rows,
            }
        )
    return {
        "available": True,
        "tagger": run.result.get("tagger", {}),
        "sampling": run.result.get("sampling", {}),
        "finished_at": run.finished_at,
        "sets": sets,
    }


def _capability_section(study: Study, arms: list[dict], *, blinded: bool) -> dict:
    run = _latest_succeeded(study, ScoringRun.Kind.CAPABILITY)
    if run is None:
        return {"available": False}
    rows = []
    for arm in arms:
        data = run.result.get("arms", {}).get(str(arm["key"]))
        if data is None:
            rows.append({"arm": arm["label"], "available": False, "reason": "not scored"})
            continue
        row = {
            "arm": arm["label"],
            "available": data.get("available", False),
            "perplexity": data.get("perplexity"),
            "mc_accuracy_sum": data.get("mc_accuracy_sum"),
            "mc_accuracy_mean": data.get("mc_accuracy_mean"),
            "n_tokens": data.get("n_tokens"),
        }
        if not row["available"]:
            # Reasons may name a path or a model; blinded readers get a neutral phrase.
            row["reason"] = "not available for this arm" if blinded else data.get("reason", "")
        rows.append(row)
    return {
        "available": True,
        "texts": run.result.get("texts", {}),
        "multiple_choice": run.result.get("multiple_choice", {}),
        "finished_at": run.finished_at,
        "rows": rows,
    }
