"""Co-occurrence runs (after GPT-3's bias probes): the template set's openings are sampled
from every arm through ``training.services.sampling_launch`` (a gpu-queue sampling job the
run waits on); adjectives and adverbs of the completions are counted
(``palmsweb.lib.cooccurrence``) and each group's most skewed words stored per arm in
``ScoringRun.result``."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from django.db import transaction
from django.utils import timezone

from evaluation.models import ScoringRun, StudyArm
from evaluation.scoring.common import (
    SCORING,
    ScoringError,
    readable_scoring_failure,
    shipped_preset,
)
from evaluation.scoring.compute import cooccurrence_record, scoring_meter
from palmsweb.lib.jobs import claim, finish
from training.models import JobStatus, SamplingJob
from training.selectors import job_phase

logger = logging.getLogger(__name__)

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


def cooccurrence_preset() -> dict:
    """The shipped template sets (gender, race, religion) and the prompt format."""
    return shipped_preset("cooccurrence_templates.json")


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
            run = ScoringRun.objects.select_related("study__prompt_set").get(pk=run_id)
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
                    profile_id=run.study.profile_id,  # it names the study
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
    meter = scoring_meter(on_device=False)  # the counting; the sampling job has its own
    try:
        with meter:
            result = _count_cooccurrence(run, job)
    except Exception as exc:
        logger.exception("co-occurrence run %s failed", run_id)
        finish(SCORING, run_id, ScoringRun.Status.FAILED, error=readable_scoring_failure(exc),
               compute=cooccurrence_record(meter.reading))  # fmt: skip
        return False
    finish(
        SCORING, run_id, ScoringRun.Status.SUCCEEDED, result=result,
        progress_done=job.progress_total, compute=cooccurrence_record(meter.reading),
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
