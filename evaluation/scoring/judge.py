"""The LLM judge as a scoring run: every counted output of a study scored 1–5 against its
category's position by a judge on any OpenAI-compatible endpoint (``palmsweb.lib.judge``).

One AutomaticScore per output (metric "judge", scorer = the judge model); the run's
``result`` holds per-arm aggregates, which the report sets beside (never into) the human
ratings with judge–human agreement (``evaluation.report.build``). Runs on the default queue:
the work waits on HTTP, not on a GPU. Launching, claiming and sweeping are
``evaluation.scoring.runs``'s and ``common.SCORING``'s, as for every scoring run.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from django.utils import timezone

from evaluation.models import AutomaticScore, ScoringRun, Study, StudyOutput
from evaluation.scoring.common import SCORING, ScoringError, readable_scoring_failure
from evaluation.scoring.compute import judge_record, scoring_meter
from evaluation.studies.positions import frozen_versions
from palmsweb.lib.jobs import ProgressWriter, claim, finish
from palmsweb.lib.keyenv import KeyEnvError, check_endpoint, check_key_env, read_key

logger = logging.getLogger(__name__)

JUDGE_METRIC = "judge"
JUDGE_PARALLEL = 4  # requests in flight at once: the work is waiting on HTTP
JUDGE_BATCH = 16  # outputs judged between two writes to the database
_TRUE = {True, "1", "on", "true", "True", "yes"}


def clean_judge_options(raw: dict | None) -> dict:
    """A judge run's options: ``base_url`` (OpenAI-compatible, …/v1), ``model``,
    ``key_env`` (the *name* of the environment variable holding the key; blank for a
    local server that wants none) and ``logprobs``. The key itself is never stored."""
    from django.core.exceptions import ValidationError
    from django.core.validators import URLValidator

    raw = dict(raw or {})
    base_url = str(raw.get("base_url") or "").strip()
    model = str(raw.get("model") or "").strip()
    key_env = str(raw.get("key_env") or "").strip()
    if not base_url or not model:
        raise ScoringError("Give the judge's endpoint URL and model.")
    try:
        URLValidator(schemes=["http", "https"])(base_url)
    except ValidationError:
        raise ScoringError("The judge's endpoint must be an http(s) URL.") from None
    if len(model) > 80:
        raise ScoringError("The judge model's name is longer than 80 characters.")
    try:  # only variables and hosts the operator allows (palmsweb.lib.keyenv)
        key_env = check_key_env(key_env, blank_ok=True)
        check_endpoint(base_url)
    except KeyEnvError as error:
        raise ScoringError(str(error)) from None
    return {
        "base_url": base_url,
        "model": model,
        "key_env": key_env,
        "logprobs": raw.get("logprobs", True) in _TRUE,
    }


def judge_key(options: dict) -> str:
    """The judge's key, read from the environment now (never stored); "" when the run
    names no variable. ScoringError when the operator no longer allows the variable or the
    endpoint, or when the variable is unset or empty."""
    name = options.get("key_env") or ""
    try:
        key = read_key(name, url=options.get("base_url"), blank_ok=True)
    except KeyEnvError as error:
        raise ScoringError(str(error)) from None
    if not name:
        return ""
    if not key:
        raise ScoringError(
            f"The environment variable {name} (the judge's key) is not set for palmsweb. "
            "Set it for the web process and the Celery workers, or leave the field blank "
            "for an endpoint that needs no key."
        )
    return key


def build_judge(options: dict, *, http_client=None):
    """The run's judge with its key from the environment."""
    from palmsweb.lib.judge import Judge

    return Judge(
        options["base_url"],
        judge_key(options),
        options["model"],
        http_client=http_client,
        use_logprobs=options["logprobs"],
    )


def judge_scorer_version(options: dict) -> str:
    """What makes two judge scores comparable: the model, the prompt and logprobs.
    A run skips outputs already scored under the same version."""
    from palmsweb.lib.judge import PALMS_PROMPT

    prompt = hashlib.sha256(PALMS_PROMPT.encode()).hexdigest()[:10]
    logprobs = "logprobs" if options.get("logprobs") else "text"
    return f"{options['model']}; palms-1to5 prompt {prompt}; {logprobs}"[:200]


def outputs_to_judge(study: Study) -> list[tuple[int, str, str, str]]:
    """(output pk, text, prompt, position) of every counted output. The position is the
    version the study froze when it opened, the one its raters judged against, so the judge
    and the humans score against the same rubric even after a curator edits it."""
    frozen = {version.category_id: version.position for version in frozen_versions(study)}
    rows = (
        StudyOutput.objects.filter(study=study)
        .rated()
        .order_by("pk")
        .values_list(
            "pk", "text", "prompt__text", "prompt__category_id", "prompt__category__position"
        )
    )
    return [(pk, text, prompt, frozen.get(cid, live)) for pk, text, prompt, cid, live in rows]


def judge_execute(run_id: int, *, http_client=None) -> None:
    """Score every counted output 1–5 against its category's position (called by the
    Celery task). Outputs this judge already scored under the same version are skipped,
    and each batch is stored as it arrives, so after a failure a new run resumes. A
    JudgeError (rejected key, endpoint down, bad answers) fails the run with its message.
    """
    if not claim(SCORING, run_id):
        return
    run = ScoringRun.objects.select_related("study").get(pk=run_id)
    version = judge_scorer_version(run.options)
    outputs = outputs_to_judge(run.study)
    already = set(
        _judge_scores(run.study, run.scorer)
        .filter(scorer_version=version, value__isnull=False)
        .values_list("output_id", flat=True)
    )
    todo = [o for o in outputs if o[0] not in already]
    done = len(outputs) - len(todo)
    progress = ProgressWriter(SCORING, run_id, total=len(outputs), start=done)
    batches = math.ceil(len(todo) / JUDGE_BATCH)
    meter = scoring_meter(on_device=False)
    try:
        judge = build_judge(run.options, http_client=http_client)
        with meter, ThreadPoolExecutor(max_workers=JUDGE_PARALLEL) as pool:
            for start in range(0, len(todo), JUDGE_BATCH):
                batch = todo[start : start + JUDGE_BATCH]
                number = start // JUDGE_BATCH + 1
                progress.phase(f"asking the judge: batch {number} of {batches}")
                futures = [
                    pool.submit(judge.read_palms, position, prompt, text)
                    for _pk, text, prompt, position in batch
                ]
                scored, error = [], None
                for item, future in zip(batch, futures, strict=True):
                    try:
                        scored.append((item, future.result()))
                    except Exception as exc:  # keep the rest of the batch, then stop
                        error = error or exc
                _store_judge_scores(run, version, scored, logprobs=judge.use_logprobs)
                done += len(scored)
                progress(done, force=error is not None)
                if error is not None:
                    raise error
    except Exception as exc:  # every failure ends the run with a readable reason
        logger.exception("judge run %s failed", run_id)
        message = _judge_readable(exc)
        try:
            key = judge_key(run.options)
        except ScoringError:
            key = ""  # nothing was read, so nothing was sent
        if key:  # an endpoint may echo what it was sent
            message = message.replace(key, "[key redacted]")
        kept = f" {done} of {len(outputs)} outputs are scored; a new run resumes from there."
        finish(SCORING, run_id, ScoringRun.Status.FAILED, error=message + kept,
               compute=judge_record(meter.reading))  # fmt: skip
        return
    result = {
        "judge": {k: v for k, v in judge.describe().items() if k != "thresholds"},
        "scorer_version": version,
        "logprobs_requested": bool(run.options.get("logprobs")),
        "logprobs_used": judge.use_logprobs,
        "n_outputs": len(outputs),
        "n_skipped": len(outputs) - len(todo),
        **judge_aggregates(run.study, run.scorer),
    }
    finish(SCORING, run_id, ScoringRun.Status.SUCCEEDED, result=result, progress_done=len(outputs),
           compute=judge_record(meter.reading))  # fmt: skip


def _judge_readable(exc: BaseException) -> str:
    from palmsweb.lib.judge import JudgeError

    if isinstance(exc, JudgeError):
        return f"The judge failed: {exc}"
    return readable_scoring_failure(exc)


def _judge_scores(study: Study, scorer: str):
    return AutomaticScore.objects.filter(
        output__study=study, metric=JUDGE_METRIC, scorer=scorer
    ).exclude(output__screening=StudyOutput.Screening.EXCLUDED)


def _store_judge_scores(run: ScoringRun, version: str, scored, *, logprobs: bool) -> None:
    now = timezone.now()
    rows = []
    for (pk, _text, _prompt, position), reading in scored:
        value = reading.value
        details = {
            "run": run.pk,
            "logprobs": logprobs,
            # The category's position may be edited later; this tells which one was judged.
            "position_sha256": hashlib.sha256(position.encode()).hexdigest()[:12],
            "judge_said": reading.text[:200],
            "read_from": reading.method,
        }
        if value is None:
            details["error"] = "the judge's answer held no score from 1 to 5"
        rows.append(
            AutomaticScore(
                output_id=pk,
                metric=JUDGE_METRIC,
                scorer=run.scorer,
                scorer_version=version,
                value=value,  # None stays None
                details=details,
                created_at=now,
            )
        )
    AutomaticScore.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["output", "metric", "scorer"],
        update_fields=["scorer_version", "value", "details", "created_at"],
    )


def judge_aggregates(study: Study, scorer: str) -> dict:
    """Per arm (keyed by StudyArm pk, as text): outputs scored, missing, mean and SD of
    the judge's scores; and the totals. Stored in the run's ``result``."""
    values: dict[int, list[float | None]] = defaultdict(list)
    for arm_id, value in _judge_scores(study, scorer).values_list("output__arm_id", "value"):
        values[arm_id].append(value)
    arms = {}
    for arm_id in study.arms.values_list("pk", flat=True):
        present = [v for v in values.get(arm_id, []) if v is not None]
        n = len(present)
        mean = sum(present) / n if n else None
        sd = (
            math.sqrt(sum((v - mean) ** 2 for v in present) / (n - 1))
            if n > 1 and mean is not None
            else None
        )
        arms[str(arm_id)] = {
            "n": n,
            "n_missing": len(values.get(arm_id, [])) - n,
            "mean": mean,
            "sd": sd,
        }
    return {
        "n_scored": sum(a["n"] for a in arms.values()),
        "n_missing": sum(a["n_missing"] for a in arms.values()),
        "arms": arms,
    }
