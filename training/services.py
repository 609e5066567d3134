"""Training workflows: register base models, launch and run fine-tune and sampling jobs.

The torch code lives in ``training.engine``; it is imported inside the functions that run on
a worker, so the web process never loads torch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F, ProtectedError, Q
from django.utils import timezone

from curation.models import Snapshot
from curation.services import snapshot_chat_examples, snapshot_jsonl
from palmsweb.lib.keyenv import KeyEnvError, check_endpoint, check_key_env, read_key
from palmsweb.lib.progress import Throughput
from training.models import (
    LOG_TAIL_CHARS,
    BaseModel,
    FineTuneCheckpoint,
    FineTuneJob,
    Generation,
    JobStatus,
    ModelVersion,
    SamplingJob,
    arm_for_dataset_kind,
)

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_PARAMETERS = 134_515_008
HEARTBEAT_SECONDS = 10
PROGRESS_WRITE_SECONDS = 1.0  # progress reaches the database at most once a second
MAX_PROMPTS = 2_000
MAX_SAMPLES_PER_PROMPT = 100


class TrainingError(Exception):
    """A training rule refused the request; the message is shown as is."""


class ArmMismatchError(TrainingError):
    """The arm asked for is not the one the snapshot's dataset trains, and the mismatch was
    not confirmed (``allow_arm_mismatch``)."""


# --- base models -----------------------------------------------------------------------


def artifacts_dir() -> Path:
    path = Path(settings.ARTIFACTS_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


@transaction.atomic
def base_model_create(
    *,
    name: str,
    kind: str,
    path: str = "",
    model_id: str = "",
    base_url: str = "",
    api_key_env: str = "OPENAI_API_KEY",
    parameter_count: int | None = None,
    is_default: bool = False,
) -> BaseModel:
    """Register a base model and the "base" model version that samples it as is. A remote
    model's key variable and endpoint must be ones the operator allows (palmsweb.lib.keyenv)."""
    _validate_base_model(name=name, kind=kind, path=path, model_id=model_id, base_url=base_url)
    if kind in {BaseModel.Kind.OPENAI, BaseModel.Kind.OPENAI_COMPATIBLE}:
        try:
            check_key_env(api_key_env)
            check_endpoint(base_url)
        except KeyEnvError as error:
            raise TrainingError(str(error)) from None
    base = BaseModel.objects.create(
        name=name.strip(),
        kind=kind,
        path=path.strip(),
        model_id=model_id.strip(),
        base_url=base_url.strip(),
        api_key_env=api_key_env.strip(),
        parameter_count=parameter_count,
        is_default=is_default,
    )
    ModelVersion.objects.create(
        base_model=base,
        name=f"{base.name} (base)",
        arm=ModelVersion.Arm.BASE,
        path=base.path,
        remote_model_id=base.model_id,
        parameter_count=parameter_count,
    )
    return base


def _validate_base_model(*, name, kind, path, model_id, base_url) -> None:
    if not name.strip():
        raise TrainingError("A base model needs a name.")
    if BaseModel.objects.filter(name__iexact=name.strip()).exists():
        raise TrainingError(f"A base model named {name.strip()!r} already exists.")
    if kind == BaseModel.Kind.LOCAL_DIR:
        directory = Path(path)
        if not (directory / "config.json").is_file():
            raise TrainingError(f"{path!r} is not a Hugging Face model directory (no config.json).")
    elif kind in {BaseModel.Kind.OPENAI, BaseModel.Kind.OPENAI_COMPATIBLE}:
        if not model_id.strip():
            raise TrainingError("Give the model name the API knows it by.")
        if kind == BaseModel.Kind.OPENAI_COMPATIBLE and not base_url.strip():
            raise TrainingError("An OpenAI-compatible endpoint needs its base URL.")
    elif kind != BaseModel.Kind.PACKAGED:
        raise TrainingError(f"Unknown base model kind {kind!r}.")


def base_model_register_default() -> BaseModel:
    """Register the packaged SmolLM2-135M-Instruct once (conversion happens on first use)."""
    existing = BaseModel.objects.filter(kind=BaseModel.Kind.PACKAGED).first()
    if existing:
        return existing
    return base_model_create(
        name=DEFAULT_MODEL_NAME,
        kind=BaseModel.Kind.PACKAGED,
        parameter_count=DEFAULT_MODEL_PARAMETERS,
        is_default=True,
    )


def base_version(base_model: BaseModel) -> ModelVersion:
    return base_model.versions.get(arm=ModelVersion.Arm.BASE)


def local_model_path(base_model: BaseModel, reporter: JobReporter | None = None) -> Path:
    """Where the weights are on this worker; converts the packaged model on first use
    (and says so through ``reporter``: it takes a while, and only the first time)."""
    if base_model.kind == BaseModel.Kind.PACKAGED:
        from training.engine.loading import default_model_converted, default_model_dir

        if reporter is not None and not default_model_converted(artifacts_dir()):
            reporter.phase("converting the base model (first run only)")
        return default_model_dir(artifacts_dir())
    if base_model.kind == BaseModel.Kind.LOCAL_DIR:
        return Path(base_model.path)
    raise TrainingError(f"{base_model} is not a local model.")


def version_local_path(version: ModelVersion, reporter: JobReporter | None = None) -> Path:
    if version.arm == ModelVersion.Arm.BASE:
        return local_model_path(version.base_model, reporter)
    return Path(version.path)


def remote_base_url(base_model: BaseModel) -> str:
    """Where a remote model's requests (and its key) go."""
    return base_model.base_url or settings.OPENAI_BASE_URL or "https://api.openai.com/v1"


def api_key_for(base_model: BaseModel) -> str:
    """The model's key, read now on the worker. The variable and the endpoint are checked
    against the operator's allow-lists again here: the row may predate them."""
    try:
        key = read_key(base_model.api_key_env or "OPENAI_API_KEY", url=remote_base_url(base_model))
    except KeyEnvError as error:
        raise TrainingError(f"{base_model}: {error}") from None
    if not key and base_model.kind == BaseModel.Kind.OPENAI:
        raise TrainingError(
            f"No API key: set the environment variable {base_model.api_key_env!r} on the workers."
        )
    return key or "not-needed"


# --- hyperparameters and estimates ---------------------------------------------------------

HYPERPARAMETER_LIMITS = {
    "epochs": (int, 1, 100),
    "learning_rate": (float, 1e-7, 1e-2),
    "batch_size": (int, 1, 256),
    "grad_accum": (int, 1, 256),
    "max_seq_len": (int, 32, 8192),
    "warmup_steps": (int, 0, 10_000),
    "seed": (int, 0, 2**31 - 1),
    "lora_r": (int, 1, 256),
    "lora_alpha": (int, 1, 1024),
    "max_steps": (int, 1, 100_000),  # optional: steps instead of epochs (re-alignment)
}
MAX_CHECKPOINTS = 20


def default_hyperparameters(base_model: BaseModel, method: str = FineTuneJob.Method.FULL) -> dict:
    """Defaults that suit the model size: smaller models take a higher learning rate."""
    params = base_model.parameter_count or DEFAULT_MODEL_PARAMETERS
    lora = method == FineTuneJob.Method.LORA
    if params < 50e6:
        lr = 1e-3
    elif params < 500e6:
        lr = 2e-4 if lora else 5e-5
    elif params < 3e9:
        lr = 1e-4 if lora else 2e-5
    else:
        lr = 1e-4 if lora else 1e-5
    return {
        "epochs": 3,
        "learning_rate": lr,
        "batch_size": 8,
        "grad_accum": 1,
        "max_seq_len": 1024,
        "warmup_steps": 5,
        "seed": 42,
        "lora_r": 16,
        "lora_alpha": 32,
    }


def clean_hyperparameters(raw: dict, *, defaults: dict) -> dict:
    """Merge ``raw`` over ``defaults``, refusing unknown names and out-of-range values."""
    unknown = set(raw) - set(HYPERPARAMETER_LIMITS)
    if unknown:
        raise TrainingError(f"Unknown hyperparameters: {', '.join(sorted(unknown))}.")
    cleaned = dict(defaults)
    for name, value in raw.items():
        if value in (None, ""):
            continue
        kind, low, high = HYPERPARAMETER_LIMITS[name]
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise TrainingError(f"{name} must be a number.") from None
        if not low <= number <= high:
            raise TrainingError(f"{name} must be between {low} and {high}.")
        cleaned[name] = number
    return cleaned


def estimate_training_tokens(base_model: BaseModel, snapshot: Snapshot, max_seq_len: int) -> int:
    """Tokens per epoch. Uses the model's own tokenizer file when it is on disk (the
    `tokenizers` library, no torch), else about 4/3 tokens per word plus template overhead."""
    examples = snapshot_chat_examples(snapshot)
    tokenizer = _tokenizer_if_available(base_model)
    total = 0
    for example in examples:
        text = "\n".join(message["content"] for message in example["messages"])
        if tokenizer is not None:
            count = len(tokenizer.encode(text).ids) + 12 * len(example["messages"])
        else:
            count = round(len(text.split()) * 4 / 3) + 12 * len(example["messages"])
        total += min(count, max_seq_len)
    return total


def _tokenizer_if_available(base_model: BaseModel):
    candidates = []
    if base_model.kind == BaseModel.Kind.LOCAL_DIR:
        candidates.append(Path(base_model.path) / "tokenizer.json")
    if base_model.kind == BaseModel.Kind.PACKAGED:
        candidates.append(artifacts_dir() / "base-models" / "smollm2-135m-instruct" /
                          "tokenizer.json")
    for candidate in candidates:
        if candidate.is_file():
            from tokenizers import Tokenizer

            return Tokenizer.from_file(str(candidate))
    return None


# --- launching and cancelling -------------------------------------------------------------


def _check_local_extras(backend, base_model, start_version, checkpoint_steps, track, hp):
    """Starting versions, checkpoints, step limits and persona tracking are local-only."""
    extras = start_version or checkpoint_steps or track or "max_steps" in hp
    if extras and backend != FineTuneJob.Backend.LOCAL:
        raise TrainingError(
            "Starting versions, checkpoints, max_steps and persona tracking need the local "
            "backend."
        )
    if start_version is not None and start_version.base_model_id != base_model.pk:
        raise TrainingError(f"{start_version.name} is not a version of {base_model}.")
    steps = checkpoint_steps or []
    if len(set(steps)) > MAX_CHECKPOINTS:
        raise TrainingError(f"At most {MAX_CHECKPOINTS} checkpoints.")
    if any(not isinstance(step, int) or step < 1 for step in steps):
        raise TrainingError("Checkpoint steps are whole numbers from 1.")
    if "max_steps" in hp and any(step > hp["max_steps"] for step in steps):
        raise TrainingError(f"Checkpoint steps must not pass max_steps ({hp['max_steps']}).")


def _estimated_run_tokens(base_model: BaseModel, snapshot: Snapshot, hp: dict) -> int:
    per_epoch = estimate_training_tokens(base_model, snapshot, hp["max_seq_len"])
    if "max_steps" not in hp:
        return per_epoch * hp["epochs"]
    batches = math.ceil(max(snapshot.sample_count, 1) / hp["batch_size"])
    steps_per_epoch = math.ceil(batches / hp["grad_accum"])
    return round(per_epoch * hp["max_steps"] / steps_per_epoch)


def snapshot_arm(snapshot: Snapshot) -> str | None:
    """The arm a fine-tune on ``snapshot`` belongs to: its dataset's kind decides."""
    return arm_for_dataset_kind(snapshot.dataset.kind)


def arm_mismatch(snapshot: Snapshot, arm: str | None) -> str:
    """Why labelling a fine-tune on ``snapshot`` as ``arm`` needs a confirmation, or ""
    when ``arm`` is the one its dataset trains."""
    expected = snapshot_arm(snapshot)
    if arm is not None and arm == expected:
        return ""
    arms = dict(ModelVersion.Arm.choices)
    kind = snapshot.dataset.get_kind_display().lower()
    where = f"Snapshot {snapshot.short_hash} is of {snapshot.dataset.name}, a {kind} dataset"
    if expected is None:
        return (
            f"{where}, which trains neither arm: choose the arm its model counts as, and "
            "confirm it (the choice is recorded on the job)."
        )
    return (
        f"{where}, so its model is the {arms[expected]} arm. Labelling it {arms[arm]} would "
        f"make a {arms[expected].lower()} model count as {arms[arm].lower()} in studies: "
        f"choose {arms[expected]}, or confirm the mismatch (it is recorded on the job)."
    )


def _resolve_arm(snapshot: Snapshot, arm: str | None, allow_arm_mismatch: bool) -> str:
    """The arm the job gets: the snapshot's own when none is asked for; another one only
    with an explicit confirmation."""
    arm = arm or snapshot_arm(snapshot)
    if arm is None:
        raise ArmMismatchError(arm_mismatch(snapshot, None))
    if arm not in {ModelVersion.Arm.CONTROL, ModelVersion.Arm.VALUES_TARGETED}:
        raise TrainingError("A fine-tune's arm is values-targeted or control.")
    why = arm_mismatch(snapshot, arm)
    if why and not allow_arm_mismatch:
        raise ArmMismatchError(why)
    return arm


@transaction.atomic
def finetune_launch(
    *,
    base_model: BaseModel,
    snapshot: Snapshot,
    arm: str | None = None,
    method: str = FineTuneJob.Method.FULL,
    backend: str | None = None,
    hyperparameters: dict | None = None,
    start_version: ModelVersion | None = None,
    checkpoint_steps: list[int] | None = None,
    track_persona: bool = False,
    allow_arm_mismatch: bool = False,
    user=None,
) -> FineTuneJob:
    """Queue a fine-tune of ``base_model`` on ``snapshot``; a worker on the gpu queue runs it.

    The arm follows the snapshot's dataset (values-targeted or control); ``arm`` may only
    differ with ``allow_arm_mismatch``, and the job records that override
    (``arm_override``). ``start_version`` continues from that version's weights;
    ``checkpoint_steps`` saves a model version after each of those steps;
    ``track_persona`` measures the misaligned-persona projection before training and after
    each epoch (local only).
    """
    arm = _resolve_arm(snapshot, arm, allow_arm_mismatch)
    if method not in FineTuneJob.Method.values:
        raise TrainingError(f"Unknown method {method!r}.")
    backend = backend or (
        FineTuneJob.Backend.OPENAI
        if base_model.kind == BaseModel.Kind.OPENAI
        else FineTuneJob.Backend.LOCAL
    )
    if backend == FineTuneJob.Backend.LOCAL and not base_model.is_local:
        raise TrainingError(f"{base_model} is not a local model; use the OpenAI backend.")
    if backend == FineTuneJob.Backend.OPENAI and base_model.kind != BaseModel.Kind.OPENAI:
        raise TrainingError("The OpenAI backend fine-tunes OpenAI models only.")
    hp = clean_hyperparameters(
        hyperparameters or {}, defaults=default_hyperparameters(base_model, method)
    )
    _check_local_extras(backend, base_model, start_version, checkpoint_steps, track_persona, hp)
    if backend == FineTuneJob.Backend.OPENAI and snapshot.sample_count < 10:
        raise TrainingError("The OpenAI fine-tuning API needs at least 10 examples.")
    job = FineTuneJob.objects.create(
        base_model=base_model,
        snapshot=snapshot,
        arm=arm,
        arm_override=arm != snapshot_arm(snapshot),
        method=method,
        backend=backend,
        hyperparameters=hp,
        estimated_tokens=_estimated_run_tokens(base_model, snapshot, hp),
        start_version=start_version,
        checkpoint_steps=sorted(set(checkpoint_steps or [])),
        track_persona=track_persona,
        created_by=user,
    )
    from training import tasks

    tasks.run_finetune.delay_on_commit(job.pk)
    return job


def job_cancel(*, job: FineTuneJob | SamplingJob) -> None:
    """Ask a job to stop. Queued jobs end at once; running ones within one step."""
    model = type(job)
    if model.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED, cancel_requested=True, finished_at=timezone.now()
    ):
        return
    model.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(cancel_requested=True)
    if isinstance(job, FineTuneJob) and job.backend == FineTuneJob.Backend.OPENAI:
        job.refresh_from_db()
        if job.remote_job_id and job.status == JobStatus.RUNNING:
            try:
                _openai_backend(job.base_model).cancel(job.remote_job_id)
            except Exception as exc:  # the API's own errors, shown to the admin as they are
                raise TrainingError(f"OpenAI refused the cancel: {exc}") from exc


@transaction.atomic
def job_retry(*, job: FineTuneJob | SamplingJob) -> None:
    """Queue a failed or cancelled job again; sampling resumes where it stopped."""
    model = type(job)
    updated = model.objects.filter(
        pk=job.pk, status__in=[JobStatus.FAILED, JobStatus.CANCELLED]
    ).update(status=JobStatus.QUEUED, cancel_requested=False, error="", finished_at=None)
    if not updated:
        raise TrainingError("Only failed or cancelled jobs can be retried.")
    from training import tasks

    task = tasks.run_finetune if model is FineTuneJob else tasks.run_sampling
    task.delay_on_commit(job.pk)


# --- progress, heartbeat, claiming ---------------------------------------------------------


def heartbeat_timeout() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "JOB_HEARTBEAT_TIMEOUT", 120)))


def claim_job(model, job_id: int, *, worker: str) -> bool:
    """Move a job to RUNNING for this worker, exactly once.

    A queued job is claimed; so is a running job whose heartbeat stopped (its worker died
    and the broker re-delivered the task). A job that is running elsewhere, or finished,
    is left alone: the duplicate delivery does nothing.
    """
    stale_before = timezone.now() - heartbeat_timeout()
    now = timezone.now()
    return bool(
        model.objects.filter(pk=job_id)
        .filter(
            Q(status=JobStatus.QUEUED)
            | Q(status=JobStatus.RUNNING, heartbeat_at__lt=stale_before)
        )
        .update(
            status=JobStatus.RUNNING,
            worker=worker,
            started_at=now,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            error="",
        )
    )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobReporter:
    """Writes progress, loss and log lines of one job to the database at a bounded rate."""

    def __init__(self, job: FineTuneJob | SamplingJob):
        self.model = type(job)
        self.pk = job.pk
        self._last_write = 0.0
        self._pending: dict = {}
        self._log_lines: list[str] = []
        self._phase = ""

    def log(self, line: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        self._log_lines.append(f"[{stamp}] {line}")
        logger.info("job %s: %s", self.pk, line)

    def phase(self, text: str) -> None:
        """Say what the job does now, at once: the page shows it above the progress bar."""
        self.update(force=True, phase=text)

    def update(self, *, force: bool = False, **fields) -> None:
        if "phase" in fields and fields["phase"] != self._phase:
            self._phase = fields["phase"]
            self.log(self._phase)  # every phase change is in the log, with its time
        self._pending.update(fields)
        now = time.monotonic()
        if not force and now - self._last_write < PROGRESS_WRITE_SECONDS:
            return
        self.flush()
        self._last_write = now

    def flush(self) -> None:
        job = self.model.objects.only("log").get(pk=self.pk)
        fields = dict(self._pending, heartbeat_at=timezone.now())
        if {"eta_seconds", "progress_done"} & set(self._pending):
            fields["progress_at"] = fields["heartbeat_at"]
        if self._log_lines:
            fields["log"] = (job.log + "\n".join(self._log_lines) + "\n")[-LOG_TAIL_CHARS:]
            self._log_lines = []
        self.model.objects.filter(pk=self.pk).update(**fields)
        self._pending = {}

    def should_cancel(self) -> bool:
        return self.model.objects.filter(pk=self.pk, cancel_requested=True).exists()


@contextmanager
def heartbeat(job: FineTuneJob | SamplingJob) -> Iterator[None]:
    """Keep ``heartbeat_at`` fresh from a thread, also while a model loads or converts."""
    stop = threading.Event()
    model, pk = type(job), job.pk

    def beat() -> None:
        from django.db import connection

        try:
            while not stop.wait(HEARTBEAT_SECONDS):
                model.objects.filter(pk=pk, status=JobStatus.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=HEARTBEAT_SECONDS + 5)


def _finish(model, pk: int, status: str, *, error: str = "", **fields) -> None:
    model.objects.filter(pk=pk).update(
        status=status, error=error, finished_at=timezone.now(), eta_seconds=None, phase="",
        **fields,
    )


@transaction.atomic
def sweep_stale_jobs() -> int:
    """Fail every running job whose heartbeat stopped: its worker died. Returns the count."""
    stale_before = timezone.now() - heartbeat_timeout()
    failed = 0
    for model in (FineTuneJob, SamplingJob):
        failed += model.objects.filter(
            status=JobStatus.RUNNING, heartbeat_at__lt=stale_before
        ).exclude(**_remote_filter(model)).update(
            status=JobStatus.FAILED,
            finished_at=timezone.now(),
            phase="",
            error="The worker running this job stopped responding (no heartbeat for "
            f"{int(heartbeat_timeout().total_seconds())} s); it was probably killed. "
            "Retry the job to run it again.",
        )
    return failed


def _remote_filter(model) -> dict:
    # OpenAI jobs have no local worker; their state is polled, not heartbeaten.
    return {"backend": FineTuneJob.Backend.OPENAI} if model is FineTuneJob else {"pk__in": []}


def code_version() -> str:
    """The git commit the worker runs, when it runs from a checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent.parent, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --- running a local fine-tune ------------------------------------------------------------


def finetune_execute(job_id: int) -> None:
    """Run a queued fine-tune on this worker (called by the Celery task)."""
    if not claim_job(FineTuneJob, job_id, worker=worker_name()):
        return
    job = FineTuneJob.objects.select_related("base_model", "snapshot", "start_version").get(
        pk=job_id
    )
    if job.backend == FineTuneJob.Backend.OPENAI:
        _openai_start(job)
        return
    reporter = JobReporter(job)
    try:
        with heartbeat(job):
            version = _run_local_finetune(job, reporter)
    except Exception as exc:  # every failure ends the job with a readable reason
        _fail(job, reporter, exc)
        return
    reporter.log(f"saved model version {version.name}")
    reporter.flush()
    _finish(FineTuneJob, job.pk, JobStatus.SUCCEEDED, result=version)


def _fail(job, reporter: JobReporter, exc: BaseException) -> None:
    from training.engine.errors import Cancelled

    if isinstance(exc, Cancelled):
        reporter.log("cancelled")
        reporter.flush()
        _finish(type(job), job.pk, JobStatus.CANCELLED)
        return
    reason = readable_failure(exc)
    logger.exception("job %s failed", job.pk)
    reporter.log(f"failed: {reason}")
    reporter.flush()
    _finish(type(job), job.pk, JobStatus.FAILED, error=reason)


def readable_failure(exc: BaseException) -> str:
    """A sentence a user can act on, from whatever the engine or the system raised."""
    from training.engine.errors import EngineError

    if isinstance(exc, EngineError | TrainingError):
        return str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return ("Out of memory. Lower the batch size or the maximum sequence length, or use "
                "LoRA.")
    if isinstance(exc, FileNotFoundError):
        return f"A file the job needs is missing: {exc.filename or exc}."
    return f"{type(exc).__name__}: {exc}"


def _run_local_finetune(job: FineTuneJob, reporter: JobReporter) -> ModelVersion:
    from training.engine.finetune import run_finetune

    base_path = local_model_path(job.base_model, reporter)
    reporter.log(f"base model {job.base_model} at {base_path}")
    start_path = base_path
    if job.start_version is not None:
        start_path = version_local_path(job.start_version, reporter)
        reporter.log(f"starting from {job.start_version.name} at {start_path}")
    examples = snapshot_chat_examples(job.snapshot)
    FineTuneJob.objects.filter(pk=job.pk).update(
        loss_history=[], persona_track=[], progress_done=0
    )
    _drop_earlier_checkpoints(job)
    output_dir = artifacts_dir() / "model-versions" / f"finetune-{job.pk}"
    if output_dir.exists():
        shutil.rmtree(output_dir)  # a re-run after a crash starts clean
    reporter.log(f"{len(examples)} examples from snapshot {job.snapshot.short_hash}")
    reporter.phase("loading the model and tokenizing the examples")
    result = run_finetune(
        base_model_path=start_path,
        examples=examples,
        output_dir=output_dir,
        config=_finetune_config(job),
        on_progress=FineTuneProgress(job, reporter),
        should_cancel=reporter.should_cancel,
        checkpoint_steps=job.checkpoint_steps,
        checkpoint_every_epoch=job.track_persona,
        on_checkpoint=CheckpointHandler(job, reporter, base_path),
        metadata=_version_metadata(job),
    )
    reporter.log(
        f"trained {result.total_steps} steps in {result.duration_seconds:.0f} s "
        f"({result.tokens_per_second:.0f} tokens/s)"
    )
    return _save_version(job, output_dir)


def _finetune_config(job: FineTuneJob):
    from training.engine.finetune import FineTuneConfig

    hp = job.hyperparameters
    return FineTuneConfig(
        method=job.method,
        epochs=hp["epochs"],
        learning_rate=hp["learning_rate"],
        batch_size=hp["batch_size"],
        grad_accum=hp["grad_accum"],
        max_seq_len=hp["max_seq_len"],
        warmup_steps=hp["warmup_steps"],
        seed=hp["seed"],
        lora_r=hp.get("lora_r", 16),
        lora_alpha=hp.get("lora_alpha", 32),
        max_steps=hp.get("max_steps"),
        activation_checkpointing=settings.FINETUNE_ACTIVATION_CHECKPOINTING,
    )


class FineTuneProgress:
    """The engine's ``on_progress``: step, loss, speed and ETA to the job, and the phase in
    words. The engine saves right after its last step, so that step starts "saving"."""

    def __init__(self, job: FineTuneJob, reporter: JobReporter) -> None:
        self.reporter = reporter
        self.epochs = None if "max_steps" in job.hyperparameters else job.hyperparameters["epochs"]
        self.loss_history: list[list[float]] = []

    def phase_for(self, event) -> str:
        if event.step >= event.total_steps:
            return "saving the model version"
        if not self.epochs:
            return "training"
        epoch = min(max(1, math.ceil(event.epoch)), self.epochs)
        return f"training: epoch {epoch} of {self.epochs}"

    def __call__(self, event) -> None:
        self.loss_history.append([event.step, round(event.loss, 5)])
        last = event.step == event.total_steps
        self.reporter.update(
            force=last,
            phase=self.phase_for(event),
            progress_done=event.step,
            progress_total=event.total_steps,
            eta_seconds=None if last else event.eta_seconds,
            tokens_per_second=event.tokens_per_second,
            loss_history=list(self.loss_history),
        )


class CheckpointHandler:
    """What a local fine-tune does at the engine's checkpoints: save a model version at
    each of the job's checkpoint steps, and record the persona projection at each epoch end
    when the job tracks it."""

    def __init__(self, job: FineTuneJob, reporter: JobReporter, base_path: Path) -> None:
        self.job = job
        self.reporter = reporter
        self.base_path = base_path
        self.track: list[dict] = []
        self._direction = None

    def __call__(self, checkpoint) -> None:
        if checkpoint.step in self.job.checkpoint_steps:
            self.save(checkpoint)
        if self.job.track_persona and (checkpoint.step == 0 or checkpoint.epoch_end):
            self.measure(checkpoint)

    def save(self, checkpoint) -> None:
        if self.job.checkpoints.filter(step=checkpoint.step).exists():
            self.reporter.log(f"kept the checkpoint of step {checkpoint.step} saved before")
            return  # an earlier attempt's, kept because something uses it
        self.reporter.phase(f"saving the checkpoint after step {checkpoint.step}")
        stem = f"finetune-{self.job.pk}-step-{checkpoint.step}"
        output_dir = artifacts_dir() / "model-versions" / stem
        if output_dir.exists():
            shutil.rmtree(output_dir)
        checkpoint.save(output_dir, _version_metadata(self.job))
        version = _save_version(self.job, output_dir, step=checkpoint.step)
        FineTuneCheckpoint.objects.create(
            job=self.job, step=checkpoint.step, model_version=version
        )
        self.reporter.log(f"saved checkpoint after step {checkpoint.step}: {version.name}")

    def measure(self, checkpoint) -> None:
        # evaluation owns the persona direction and the probe preset; imported here so that
        # training does not import evaluation at module level (evaluation imports training).
        from evaluation.misalignment import persona_direction_for, probe_preset

        when = f"epoch {checkpoint.epoch:g}" if checkpoint.step else "the starting weights"
        self.reporter.phase(f"measuring the persona projection of {when}")
        if self._direction is None:
            self._direction = persona_direction_for(self.base_path)
        probes = probe_preset()["probes"]
        values = checkpoint.projections(probes, self._direction)
        self.track.append(
            {
                "step": checkpoint.step,
                "epoch": round(checkpoint.epoch, 3),
                "value": round(sum(values) / len(values), 5),
                "layer": self._direction.layer,
            }
        )
        self.reporter.update(force=True, persona_track=list(self.track))
        self.reporter.log(
            f"persona projection at epoch {checkpoint.epoch:g}: {self.track[-1]['value']:.4f}"
        )



def _version_metadata(job: FineTuneJob) -> dict:
    """Provenance written into every saved version's ``palms_metadata.json``."""
    return {
        "snapshot_hash": job.snapshot.content_hash,
        "snapshot_id": job.snapshot_id,
        "finetune_job_id": job.pk,
        "start_version_id": job.start_version_id,
        "base_model": job.base_model.name,
        "code_version": code_version(),
        "arm": job.arm,
        "dataset_kind": job.snapshot.dataset.kind,
        "arm_override": job.arm_override,
    }


def _drop_earlier_checkpoints(job: FineTuneJob) -> None:
    """A re-run after a crash saves its checkpoints afresh; versions already in use stay."""
    for checkpoint in job.checkpoints.select_related("model_version"):
        try:
            with transaction.atomic():
                checkpoint.model_version.delete()
        except ProtectedError:
            continue
        shutil.rmtree(checkpoint.model_version.path, ignore_errors=True)


def _save_version(job: FineTuneJob, output_dir: Path, *, step: int | None = None) -> ModelVersion:
    metadata = json.loads((output_dir / "palms_metadata.json").read_text())
    arm_label = dict(ModelVersion.Arm.choices)[job.arm]
    suffix = f" · step {step}" if step is not None else ""
    return ModelVersion.objects.create(
        base_model=job.base_model,
        name=f"{job.base_model.name} · {arm_label} · {job.snapshot.short_hash} · #{job.pk}"
        f"{suffix}",
        arm=job.arm,
        path=str(output_dir),
        is_adapter=job.method == FineTuneJob.Method.LORA,
        parameter_count=job.base_model.parameter_count,
        metadata=metadata,
    )


# --- the OpenAI fine-tuning backend -------------------------------------------------------


def _openai_backend(base_model: BaseModel):
    from training.engine.remote import OpenAIFineTuneBackend

    return OpenAIFineTuneBackend(
        api_key=api_key_for(base_model),
        base_url=remote_base_url(base_model),
    )


OPENAI_STATUS = {
    "validating_files": JobStatus.RUNNING,
    "queued": JobStatus.RUNNING,
    "running": JobStatus.RUNNING,
    "succeeded": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
}


def _openai_start(job: FineTuneJob) -> None:
    """Upload the snapshot and create the remote job; polling mirrors it from then on."""
    reporter = JobReporter(job)
    try:
        reporter.phase("uploading the snapshot to OpenAI")
        backend = _openai_backend(job.base_model)
        file_id = backend.upload_training_file(snapshot_jsonl(job.snapshot).encode())
        hp = job.hyperparameters
        remote_id = backend.create_job(
            job.base_model.model_id,
            file_id,
            n_epochs=hp["epochs"],
            batch_size=hp.get("openai_batch_size", "auto"),
            learning_rate_multiplier=hp.get("learning_rate_multiplier", "auto"),
            seed=hp["seed"],
            suffix=f"palms-{job.arm}-{job.snapshot.short_hash}"[:64],
            metadata={"palmsweb_job": str(job.pk), "snapshot": job.snapshot.content_hash},
        )
    except Exception as exc:
        _fail(job, reporter, exc)
        return
    FineTuneJob.objects.filter(pk=job.pk).update(remote_file_id=file_id, remote_job_id=remote_id)
    reporter.log(f"created OpenAI job {remote_id} from file {file_id}")
    reporter.flush()


def openai_poll(job_id: int) -> str:
    """Mirror one OpenAI job's status, events and checkpoints. Returns our status."""
    job = FineTuneJob.objects.select_related("base_model", "snapshot").get(pk=job_id)
    if job.status != JobStatus.RUNNING or not job.remote_job_id:
        return job.status
    reporter = JobReporter(job)
    state = _openai_backend(job.base_model).poll(job.remote_job_id, after=job.remote_events_cursor)
    for event in state.events:
        reporter.log(f"openai {event.level}: {event.message}")
    losses = [[c.step_number, c.train_loss] for c in state.checkpoints if c.train_loss is not None]
    fields = {
        "remote_events_cursor": state.events_cursor or job.remote_events_cursor,
        "phase": f"OpenAI reports the job {state.status.replace('_', ' ')}",
    }
    if losses:
        fields.update(loss_history=sorted(losses), progress_done=max(s for s, _ in losses))
    reporter.update(force=True, **fields)
    status = OPENAI_STATUS.get(state.status, JobStatus.RUNNING)
    if status == JobStatus.SUCCEEDED:
        version = ModelVersion.objects.create(
            base_model=job.base_model,
            name=f"{state.fine_tuned_model} · #{job.pk}",
            arm=job.arm,
            remote_model_id=state.fine_tuned_model or "",
            parameter_count=job.base_model.parameter_count,
            metadata={"snapshot_hash": job.snapshot.content_hash, "openai_job": job.remote_job_id,
                      "dataset_kind": job.snapshot.dataset.kind, "arm_override": job.arm_override,
                      "trained_tokens": state.trained_tokens, "hyperparameters":
                      job.hyperparameters},
        )
        _finish(FineTuneJob, job.pk, status, result=version)
    elif status == JobStatus.FAILED:
        _finish(FineTuneJob, job.pk, status, error=state.error or "The OpenAI job failed.")
    elif status == JobStatus.CANCELLED:
        _finish(FineTuneJob, job.pk, status)
    return status


def openai_poll_all() -> int:
    ids = list(
        FineTuneJob.objects.filter(
            backend=FineTuneJob.Backend.OPENAI, status=JobStatus.RUNNING
        ).exclude(remote_job_id="").values_list("pk", flat=True)
    )
    for job_id in ids:
        try:
            openai_poll(job_id)
        except Exception:  # one job's outage must not stop the others' polling
            logger.exception("polling OpenAI job %s failed", job_id)
    return len(ids)


# --- sampling -------------------------------------------------------------------------------


def clean_prompts(prompts: list) -> list[dict]:
    """Accept strings or {"text", "category"} dicts; refuse empties and oversize lists."""
    cleaned = []
    for index, prompt in enumerate(prompts, start=1):
        if isinstance(prompt, str):
            prompt = {"text": prompt}
        if not isinstance(prompt, dict) or set(prompt) - {"text", "category"}:
            raise TrainingError(f"Prompt {index}: expected text (and optionally a category).")
        text = str(prompt.get("text", "")).strip()
        if not text:
            raise TrainingError(f"Prompt {index} is empty.")
        cleaned.append({"text": text, "category": prompt.get("category") or ""})
    if not cleaned:
        raise TrainingError("Give at least one prompt.")
    if len(cleaned) > MAX_PROMPTS:
        raise TrainingError(f"At most {MAX_PROMPTS} prompts per job.")
    return cleaned


@transaction.atomic
def sampling_launch(
    *,
    prompts: list,
    model_versions: list[ModelVersion],
    n_samples: int = 3,
    temperature: float = 0.7,
    top_p: float = 0.9,
    max_new_tokens: int = 200,
    seed: int = 0,
    name: str = "",
    system_prompt: str = "",
    restricted: bool = False,
    user=None,
) -> SamplingJob:
    """Queue prompts × model versions × n samples on the gpu queue. A ``restricted`` job
    and its outputs are for admins only until :func:`sampling_job_release`."""
    if not model_versions:
        raise TrainingError("Choose at least one model version.")
    if not 1 <= n_samples <= MAX_SAMPLES_PER_PROMPT:
        raise TrainingError(f"Samples per prompt must be 1–{MAX_SAMPLES_PER_PROMPT}.")
    if not (0 <= temperature <= 2 and 0 < top_p <= 1 and 1 <= max_new_tokens <= 4096):
        raise TrainingError("Need 0 ≤ temperature ≤ 2, 0 < top_p ≤ 1, 1 ≤ max new tokens ≤ 4096.")
    cleaned = clean_prompts(prompts)
    job = SamplingJob.objects.create(
        name=name.strip(),
        prompts=cleaned,
        n_samples=n_samples,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        system_prompt=system_prompt,
        restricted=restricted,
        progress_total=len(cleaned) * n_samples * len(model_versions),
        created_by=user,
    )
    job.model_versions.set(model_versions)
    from training import tasks

    tasks.run_sampling.delay_on_commit(job.pk)
    return job


@transaction.atomic
def sampling_job_release(*, job: SamplingJob) -> SamplingJob:
    """Open a restricted job and its outputs to every role that reads training data
    (a study calls this when it is unblinded). Idempotent."""
    SamplingJob.objects.filter(pk=job.pk, restricted=True).update(restricted=False)
    job.restricted = False
    return job


def sampling_execute(job_id: int) -> None:
    """Run a sampling job on this worker, skipping outputs already stored (resume)."""
    if not claim_job(SamplingJob, job_id, worker=worker_name()):
        return
    job = SamplingJob.objects.get(pk=job_id)
    reporter = JobReporter(job)
    try:
        with heartbeat(job):
            versions = list(job.model_versions.select_related("base_model").order_by("pk"))
            progress = SamplingProgress(job, reporter, len(versions))
            for index, version in enumerate(versions, start=1):
                if reporter.should_cancel():
                    from training.engine.errors import Cancelled

                    raise Cancelled()
                _sample_version(job, version, reporter, progress.for_model(index, version))
    except Exception as exc:
        _fail(job, reporter, exc)
        return
    reporter.update(force=True, progress_done=job.generations.count())
    _finish(SamplingJob, job.pk, JobStatus.SUCCEEDED)


class SamplingProgress:
    """What a sampling job's page shows while it runs: the phase ("loading model 1 of 3",
    "sampling model 1 of 3: batch 2 of 5"), the outputs stored so far, updated as each
    batch lands, and an ETA from the throughput of this run (resumed outputs excluded)."""

    def __init__(self, job: SamplingJob, reporter: JobReporter, n_models: int) -> None:
        self.job = job
        self.reporter = reporter
        self.n_models = n_models
        self.throughput = Throughput(max(job.progress_total - job.generations.count(), 0))
        self.done = 0  # outputs generated by this run
        self.model = ""
        self.local = True
        self.todo = self.model_done = self.batches = self.batch_size = 0

    def for_model(self, index: int, version: ModelVersion) -> SamplingProgress:
        self.model = f"model {index} of {self.n_models}"
        self.local = version.base_model.is_local
        self.todo = self.model_done = self.batches = self.batch_size = 0
        return self

    def start(self, todo: int) -> None:
        self.todo = todo
        self.reporter.phase(
            f"loading {self.model}, then sampling its first batch"
            if self.local
            else f"sampling {self.model} through its API"
        )

    def landed(self, count: int) -> None:
        """``count`` new outputs are stored."""
        self.done += count
        self.model_done += count
        self.batches += 1
        self.batch_size = self.batch_size or count
        fields = {
            "progress_done": self.job.generations.count(),
            "eta_seconds": self.throughput.eta(self.done),
        }
        if self.local and self.model_done < self.todo:
            batches = math.ceil(self.todo / self.batch_size)
            fields["phase"] = f"sampling {self.model}: batch {self.batches + 1} of {batches}"
        # A local batch takes seconds, so each one is written at once; remote outputs
        # arrive one by one and are written at the bounded rate.
        self.reporter.update(force=self.local, **fields)


def _done_slots(job: SamplingJob, version: ModelVersion) -> set[tuple[int, int]]:
    return set(
        job.generations.filter(model_version=version).values_list("prompt_index", "sample_index")
    )


def _sample_version(
    job: SamplingJob, version: ModelVersion, reporter: JobReporter, progress: SamplingProgress
) -> None:
    """Sample one model version's outputs, storing each batch as soon as it is generated,
    so that a crash or a cancel loses at most one batch and a re-run resumes after it."""
    from training.engine.generation import GenerationParams

    skip = _done_slots(job, version)
    texts = [prompt["text"] for prompt in job.prompts]
    if len(skip) >= len(texts) * job.n_samples:
        return
    params = GenerationParams(
        temperature=job.temperature, top_p=job.top_p, max_new_tokens=job.max_new_tokens,
        seed=job.seed,
    )
    todo = len(texts) * job.n_samples - len(skip)
    reporter.log(f"sampling {version.name}: {todo} outputs")

    def on_batch(generations) -> None:
        _store_generations(job, version, generations, params)
        progress.landed(len(generations))

    common = {
        "n": job.n_samples, "params": params, "skip": skip, "on_batch": on_batch,
        "should_cancel": reporter.should_cancel, "system_prompt": job.system_prompt or None,
    }
    base = version.base_model
    if base.is_local:
        from training.engine.generation import generate_local

        path = version_local_path(version, reporter)
        progress.start(todo)
        generate_local(path, texts, **common)
        return
    from training.engine.remote import generate_openai_compatible

    progress.start(todo)
    generate_openai_compatible(
        remote_base_url(base),
        api_key_for(base),
        version.remote_model_id or base.model_id,
        texts,
        **common,
    )


def storable_text(text: str) -> str:
    """A model may emit a NUL byte token; PostgreSQL text refuses NUL, so it becomes U+FFFD
    (the replacement character) instead of failing the whole job."""
    return text.replace("\x00", "\ufffd")


def _store_generations(job, version, generations, params) -> None:
    """Insert outputs; a slot that already has one keeps it (duplicate deliveries)."""
    rows = [
        Generation(
            job=job, model_version=version, prompt_index=g.prompt_index,
            sample_index=g.sample_index, prompt_text=job.prompts[g.prompt_index]["text"],
            text=storable_text(g.text), tokens_generated=g.tokens_generated,
            temperature=params.temperature,
            top_p=params.top_p, max_new_tokens=params.max_new_tokens, seed=g.seed,
        )
        for g in generations
    ]
    Generation.objects.bulk_create(rows, ignore_conflicts=True)
