"""Fine-tunes: hyperparameters and estimates, the arm a snapshot trains, launching, and
running a local fine-tune on a worker (progress, checkpoints, the persona track, the saved
model versions). Hosted backends (OpenAI, Together) are in ``training.services.remote``."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import ProtectedError

from curation.models import Snapshot
from curation.services import snapshot_chat_examples
from training.models import (
    BaseModel,
    FineTuneCheckpoint,
    FineTuneJob,
    JobStatus,
    ModelVersion,
    arm_for_dataset_kind,
)
from training.persona import persona_direction_for, probe_preset
from training.services.base_models import (
    DEFAULT_MODEL_PARAMETERS,
    artifacts_dir,
    local_model_path,
    version_local_path,
)
from training.services.compute import energy_meter, finetune_compute, stopped_finetune_compute
from training.services.distributed import check_distributed, run_distributed
from training.services.errors import ArmMismatchError, TrainingError
from training.services.hosted import provider_for_backend, provider_for_kind
from training.services.hosted_dates import check_new_job_allowed
from training.services.jobs import (
    JobReporter,
    claim_job,
    code_version,
    fail_job,
    finish_job,
    heartbeat,
    worker_name,
)
from training.services.remote import hosted_start
from training.services.validation import check_validation, split_examples, validation_provenance

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
    # optional: validation (training.services.validation); eval_every_steps local only
    "validation_share": (float, 0.0, 0.5),
    "eval_every_steps": (int, 0, 100_000),
    # optional, local only: save the best-validation checkpoint instead of the last step
    "keep_best_validation": (bool, False, True),
}
MAX_CHECKPOINTS = 20


def default_hyperparameters(base_model: BaseModel, method: str = FineTuneJob.Method.FULL) -> dict:
    """Defaults that suit the model size: smaller models take a higher learning rate."""
    params = base_model.parameter_count or DEFAULT_MODEL_PARAMETERS
    lora = method == FineTuneJob.Method.LORA
    if params < 50e6:
        lr = 1e-3
    elif params < 500e6:
        # Full: the sweep of docs/engine.md (SmolLM2-135M, the demo content) put 1e-4 for 3
        # epochs first; LoRA: 2e-4 beat 5e-5 there, far behind the full fine-tunes.
        lr = 2e-4 if lora else 1e-4
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
        # The sweep's warmup (2 of the demo's 30 steps) where it was measured.
        "warmup_steps": 2 if 50e6 <= params < 500e6 else 5,
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
        if kind is bool:
            cleaned[name] = _switch(name, value)
            continue
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise TrainingError(f"{name} must be a number.") from None
        if not low <= number <= high:
            raise TrainingError(f"{name} must be between {low} and {high}.")
        cleaned[name] = number
    return cleaned


def _switch(name: str, value) -> bool:
    """A true/false hyperparameter: a boolean (JSON true/false), never a number or text
    that ``bool()`` would read as true."""
    if not isinstance(value, bool):
        raise TrainingError(f"{name} must be true or false.")
    return value


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
    validation_snapshot: Snapshot | None = None,
    devices: int = 1,
    nodes: int = 1,
    user=None,
) -> FineTuneJob:
    """Queue a fine-tune of ``base_model`` on ``snapshot``; a worker on the gpu queue runs it.

    The arm follows the snapshot's dataset (values-targeted or control); ``arm`` may only
    differ with ``allow_arm_mismatch``, and the job records that override
    (``arm_override``). ``start_version`` continues from that version's weights;
    ``checkpoint_steps`` saves a model version after each of those steps;
    ``track_persona`` measures the misaligned-persona projection before training and after
    each epoch (local only). ``validation_snapshot``, or the ``validation_share``
    hyperparameter, gives the validation loss (a hosted job uploads it as the provider's
    validation file; see ``services.validation``).
    A hosted provider past its cut-off date refuses the job
    (HostedCutoffError) and nothing is created. ``devices`` and ``nodes``: see distributed.py.
    """
    arm = _resolve_arm(snapshot, arm, allow_arm_mismatch)
    if method not in FineTuneJob.Method.values:
        raise TrainingError(f"Unknown method {method!r}.")
    backend = check_backend(base_model, backend, method)
    hp = clean_hyperparameters(
        hyperparameters or {}, defaults=default_hyperparameters(base_model, method)
    )
    _check_local_extras(backend, base_model, start_version, checkpoint_steps, track_persona, hp)
    held_out = check_validation(
        snapshot=snapshot, validation_snapshot=validation_snapshot, hp=hp,
        local=backend == FineTuneJob.Backend.LOCAL,
    )  # fmt: skip
    asked = {"checkpoints": checkpoint_steps, "persona tracking": track_persona}
    strategy = check_distributed(base_model, method, backend, (devices, nodes), asked)
    provider = provider_for_backend(backend)
    if provider and snapshot.sample_count - len(held_out) < provider.min_examples:
        raise TrainingError(
            f"The {provider.label} fine-tuning API needs at least {provider.min_examples} "
            "training examples (held-out ones do not count)."
        )
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
        validation_snapshot=validation_snapshot,
        held_out_items=held_out,
        devices=devices,
        nodes=nodes,
        strategy=strategy,
        created_by=user,
    )
    from training import tasks

    tasks.run_finetune.delay_on_commit(job.pk, devices=devices)  # routed by device count
    return job


def check_backend(base_model: BaseModel, backend: str | None, method: str) -> str:
    """The backend that fine-tunes ``base_model``: its hosted provider's, or local. A
    provider past its cut-off date refuses (HostedCutoffError); so does a method the
    provider cannot run."""
    provider = provider_for_kind(base_model.kind)
    backend = backend or (provider.backend if provider else FineTuneJob.Backend.LOCAL)
    if backend == FineTuneJob.Backend.LOCAL:
        if not base_model.is_local:
            raise TrainingError(
                f"{base_model} is not a local model; use its provider's backend."
            )
        return backend
    chosen = provider_for_backend(backend)
    if chosen is None or provider is None or chosen.name != provider.name:
        label = chosen.label if chosen else backend
        raise TrainingError(f"The {label} backend fine-tunes {label} models only.")
    if method not in provider.methods:
        methods = dict(FineTuneJob.Method.choices)
        allowed = " or ".join(methods[m] for m in provider.methods)
        raise TrainingError(f"{provider.label} fine-tunes with {allowed} only.")
    check_new_job_allowed(base_model)
    return backend


# --- running a local fine-tune ------------------------------------------------------------


def finetune_execute(job_id: int) -> None:
    """Run a queued fine-tune on this worker (called by the Celery task)."""
    if not claim_job(FineTuneJob, job_id, worker=worker_name()):
        return
    job = FineTuneJob.objects.select_related(
        "base_model", "snapshot", "start_version__base_model", "validation_snapshot"
    ).get(pk=job_id)
    if job.is_hosted:
        hosted_start(job)
        return
    reporter = JobReporter(job)
    if job.is_dpo:
        from training.services.dpo import dpo_run_local as run
    else:
        run = _run_local_finetune
    meter = energy_meter(job.world_size)
    try:
        with heartbeat(job), meter:
            version = run(job, reporter)
    except Exception as exc:  # every failure ends the job with a readable reason
        fail_job(job, reporter, exc, compute=stopped_finetune_compute(job, meter))
        return
    reporter.log(f"saved model version {version.name}")
    reporter.flush()
    compute = finetune_compute(job, version, meter.reading)
    finish_job(FineTuneJob, job.pk, JobStatus.SUCCEEDED, result=version, compute=compute)




def _run_local_finetune(job: FineTuneJob, reporter: JobReporter) -> ModelVersion:
    from training.engine.finetune import run_finetune

    base_path = local_model_path(job.base_model, reporter)
    reporter.log(f"base model {job.base_model} at {base_path}")
    start_path = base_path
    if job.start_version is not None:
        start_path = version_local_path(job.start_version, reporter)
        reporter.log(f"starting from {job.start_version.name} at {start_path}")
    examples, validation = split_examples(job)
    FineTuneJob.objects.filter(pk=job.pk).update(
        loss_history=[], validation_loss_history=[], persona_track=[], progress_done=0
    )
    _drop_earlier_checkpoints(job)
    output_dir = artifacts_dir() / "model-versions" / f"finetune-{job.pk}"
    if output_dir.exists():
        shutil.rmtree(output_dir)  # a re-run after a crash starts clean
    reporter.log(f"{len(examples)} examples from snapshot {job.snapshot.short_hash}")
    if validation:
        reporter.log(f"{len(validation)} validation examples")
    reporter.phase("loading the model and tokenizing the examples")
    if job.world_size > 1:
        result = run_distributed(
            job, reporter, start_path=start_path, examples=examples,
            config=_finetune_config(job), metadata=_version_metadata(job),
            on_progress=FineTuneProgress(job, reporter), validation=validation,
        )  # fmt: skip
        reporter.log(f"trained {result.total_steps} steps on {job.world_size} devices")
        return _save_version(job, output_dir)
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
        validation_examples=validation,
        eval_every_steps=job.hyperparameters.get("eval_every_steps", 0),
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
        keep_best_validation=hp.get("keep_best_validation", False),
    )


class FineTuneProgress:
    """The engine's ``on_progress``: step, loss, speed and ETA to the job, and the phase in
    words. The engine saves right after its last step, so that step starts "saving"."""

    def __init__(self, job: FineTuneJob, reporter: JobReporter) -> None:
        self.reporter = reporter
        self.epochs = None if "max_steps" in job.hyperparameters else job.hyperparameters["epochs"]
        self.loss_history: list[list[float]] = []
        self.validation_history: list[list[float]] = []

    def phase_for(self, event) -> str:
        if event.step >= event.total_steps:
            return "saving the model version"
        if not self.epochs:
            return "training"
        epoch = min(max(1, math.ceil(event.epoch)), self.epochs)
        return f"training: epoch {epoch} of {self.epochs}"

    def step_fields(self, event) -> dict:
        """More fields to write with a step's progress (DPO: the reward curve)."""
        return {}

    def __call__(self, event) -> None:
        from training.engine.validation import ValidationEvent

        if isinstance(event, ValidationEvent):
            self.validation_history.append([event.step, round(event.loss, 5)])
            self.reporter.log(f"validation loss at step {event.step}: {event.loss:.4f}")
            history = list(self.validation_history)
            self.reporter.update(force=True, validation_loss_history=history)
            return
        self.loss_history.append([event.step, round(event.loss, 5)])
        last = event.step == event.total_steps
        # The engine's own ETA (it leaves checkpoint time out) replaces the toolkit's.
        self.reporter.update(
            force=last,
            phase=self.phase_for(event),
            progress_done=event.step,
            progress_total=event.total_steps,
            eta_seconds=None if last else event.eta_seconds,
            tokens_per_second=event.tokens_per_second,
            loss_history=list(self.loss_history),
            **self.step_fields(event),
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
        **validation_provenance(job),
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


