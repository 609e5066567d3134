"""Preference training (DPO): launch a DPO fine-tune from a model version on the pairs of a
preference snapshot, run it locally on a worker, or start it at a hosted provider.

Preference snapshots live in ``evaluation``, which ``training`` may not import: the caller
(``evaluation.report.preference_training``) hands down the frozen pairs as plain rows
(``{"prompt", "chosen", "rejected"}``) with the snapshot's hash and a line saying where it
came from. The job is a :class:`FineTuneJob` with ``objective="dpo"``: the same page,
progress, cancel, heartbeat, re-claim after a dead worker, and retry as a supervised one.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from training.models import FineTuneJob, ModelVersion
from training.services.base_models import (
    DEFAULT_MODEL_PARAMETERS,
    artifacts_dir,
    version_local_path,
)
from training.services.errors import TrainingError
from training.services.finetunes import FineTuneProgress, check_backend, clean_hyperparameters
from training.services.hosted import provider_for_backend
from training.services.jobs import JobReporter, code_version

# What a DPO job takes; the names and ranges are those of a supervised fine-tune, plus beta.
DPO_HYPERPARAMETERS = ("epochs", "learning_rate", "batch_size", "grad_accum", "max_seq_len",
                       "warmup_steps", "seed", "lora_r", "lora_alpha", "beta")  # fmt: skip
BETA_LIMITS = (1e-3, 10.0)
MAX_PAIRS = 50_000
MAX_TEXT_CHARS = 100_000
_HASH = re.compile(r"[0-9a-f]{64}")
_PAIR_KEYS = {"prompt", "chosen", "rejected"}


def dpo_defaults(start_version: ModelVersion, method: str = FineTuneJob.Method.FULL) -> dict:
    """Hyperparameters prefilled by model size: DPO rates sit an order of magnitude below
    supervised ones (the model already answers well and should stay near its reference)."""
    params = start_version.parameter_count or start_version.base_model.parameter_count
    params = params or DEFAULT_MODEL_PARAMETERS
    lora = method == FineTuneJob.Method.LORA
    if params < 50e6:
        lr = 5e-4
    elif params < 3e9:
        lr = 5e-5 if lora else 5e-6
    else:
        lr = 2e-5 if lora else 1e-6
    # Hosted providers set their own floor on the batch size (Together: 8).
    batch = 4 if start_version.base_model.is_local else 8
    return {
        "epochs": 2, "learning_rate": lr, "batch_size": batch, "grad_accum": 1,
        "max_seq_len": 1024, "warmup_steps": 2, "seed": 42, "lora_r": 16, "lora_alpha": 32,
        "beta": 0.1,
    }  # fmt: skip


def clean_dpo_hyperparameters(raw: Mapping[str, Any], *, defaults: dict) -> dict:
    """``raw`` over ``defaults``: the supervised checks for the shared names, beta's range."""
    raw = dict(raw)
    unknown = set(raw) - set(DPO_HYPERPARAMETERS)
    if unknown:
        raise TrainingError(f"Unknown DPO hyperparameters: {', '.join(sorted(unknown))}.")
    beta = raw.pop("beta", None)
    shared = {name: value for name, value in defaults.items() if name != "beta"}
    cleaned = clean_hyperparameters(raw, defaults=shared)
    if beta in (None, ""):
        beta = defaults["beta"]
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        raise TrainingError("beta must be a number.") from None
    low, high = BETA_LIMITS
    if not low <= beta <= high:
        raise TrainingError(f"beta must be between {low} and {high}.")
    return cleaned | {"beta": beta}


def clean_pairs(pairs: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The rows a DPO job stores: exactly prompt, chosen and rejected, non-empty texts."""
    if isinstance(pairs, str | bytes) or not isinstance(pairs, Sequence) or not pairs:
        raise TrainingError("A DPO fine-tune needs at least one preference pair.")
    if len(pairs) > MAX_PAIRS:
        raise TrainingError(f"At most {MAX_PAIRS} preference pairs.")
    rows = []
    for index, pair in enumerate(pairs):
        if not isinstance(pair, Mapping) or set(pair) != _PAIR_KEYS:
            raise TrainingError(f"Pair {index}: expected exactly prompt, chosen and rejected.")
        texts = [pair[key] for key in ("prompt", "chosen", "rejected")]
        if not all(isinstance(t, str) and t.strip() and len(t) <= MAX_TEXT_CHARS for t in texts):
            raise TrainingError(f"Pair {index}: each text must be non-empty and not too long.")
        if pair["chosen"] == pair["rejected"]:
            raise TrainingError(f"Pair {index}: the chosen and rejected answers are the same.")
        rows.append({"prompt": texts[0], "chosen": texts[1], "rejected": texts[2]})
    return rows


def _dpo_arm(start_version: ModelVersion, arm: str | None) -> tuple[str, bool]:
    """The arm of the DPO'd model: the start version's (DPO keeps what SFT made it); from a
    base version the caller names it, recorded as an override (no dataset gives it one)."""
    trained = start_version.trained_arm
    arms = {ModelVersion.Arm.VALUES_TARGETED, ModelVersion.Arm.CONTROL}
    if arm in (None, ""):
        if trained not in arms:
            raise TrainingError(
                f"{start_version.name} has no values-targeted or control arm: name the arm "
                "the DPO'd model counts as."
            )
        return trained, False
    if arm not in arms:
        raise TrainingError("A DPO fine-tune's arm is values-targeted or control.")
    return arm, arm != trained


def _start_model(start_version: ModelVersion, backend: str) -> None:
    """A local DPO starts from weights on this side; a hosted one from a model its own
    provider serves (the base model, or an earlier fine-tune there)."""
    if backend == FineTuneJob.Backend.LOCAL:
        if start_version.remote_model_id or not (
            start_version.path or start_version.arm == ModelVersion.Arm.BASE
        ):
            raise TrainingError(f"{start_version.name} has no local weights to start from.")
        return
    if start_version.arm != ModelVersion.Arm.BASE and not start_version.remote_model_id:
        raise TrainingError(
            f"{start_version.name} is a local model: a hosted DPO starts from a model its "
            "provider serves."
        )


@transaction.atomic
def dpo_launch(
    *,
    start_version: ModelVersion,
    pairs: Sequence[Mapping[str, Any]],
    preference_snapshot_hash: str,
    profile_id: int | None = None,
    source: str = "",
    method: str = FineTuneJob.Method.FULL,
    backend: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    arm: str | None = None,
    user=None,
) -> FineTuneJob:
    """Queue a DPO fine-tune of ``start_version`` on ``pairs`` (a preference snapshot's
    frozen rows, addressed by ``preference_snapshot_hash``). Local by default; a version of
    a hosted model goes to its provider (OpenAI ``method: dpo`` until its cut-off, Together
    preference jobs). Anything refused raises TrainingError and creates nothing."""
    if not _HASH.fullmatch(preference_snapshot_hash or ""):
        raise TrainingError("The preference snapshot hash is a 64-character SHA-256.")
    if method not in FineTuneJob.Method.values:
        raise TrainingError(f"Unknown method {method!r}.")
    rows = clean_pairs(pairs)
    base_model = start_version.base_model
    backend = check_backend(base_model, backend, method)
    _start_model(start_version, backend)
    if method == FineTuneJob.Method.LORA and start_version.is_adapter:
        raise TrainingError(f"{start_version.name} is a LoRA adapter: DPO on it is 'full'.")
    arm, arm_override = _dpo_arm(start_version, arm)
    hp = clean_dpo_hyperparameters(
        hyperparameters or {}, defaults=dpo_defaults(start_version, method)
    )
    provider = provider_for_backend(backend)
    if provider and len(rows) < provider.min_examples:
        raise TrainingError(
            f"The {provider.label} fine-tuning API needs at least {provider.min_examples} pairs."
        )
    words = sum(len(" ".join(row.values()).split()) for row in rows)
    job = FineTuneJob.objects.create(
        base_model=base_model, objective=FineTuneJob.Objective.DPO, arm=arm,
        arm_override=arm_override, method=method, backend=backend, hyperparameters=hp,
        estimated_tokens=round(words * 4 / 3 + 24 * len(rows)) * hp["epochs"],
        start_version=start_version, preference_pairs=rows,
        preference_snapshot_hash=preference_snapshot_hash, preference_source=source[:300],
        preference_profile_id=profile_id,
        created_by=user,
    )  # fmt: skip
    from training import tasks

    tasks.run_finetune.delay_on_commit(job.pk, devices=1)
    return job


# --- running on a worker -------------------------------------------------------------------------


class DpoProgress(FineTuneProgress):
    """The fine-tune's progress, plus each step's reward margin and accuracy."""

    def __init__(self, job: FineTuneJob, reporter: JobReporter) -> None:
        super().__init__(job, reporter)
        self.reward_history: list[list[float]] = []

    def step_fields(self, event) -> dict:
        self.reward_history.append(
            [event.step, round(event.reward_margin, 5), round(event.reward_accuracy, 4)]
        )
        return {"reward_history": list(self.reward_history)}


def dpo_run_local(job: FineTuneJob, reporter: JobReporter) -> ModelVersion:
    """Run a claimed local DPO job to its saved model version (errors propagate)."""
    from training.engine.dpo import run_dpo
    from training.engine.finetune import FineTuneConfig

    start_path = version_local_path(job.start_version, reporter)
    reporter.log(f"starting from {job.start_version.name} at {start_path}")
    FineTuneJob.objects.filter(pk=job.pk).update(
        loss_history=[], reward_history=[], progress_done=0
    )
    output_dir = artifacts_dir() / "model-versions" / f"finetune-{job.pk}"
    if output_dir.exists():
        shutil.rmtree(output_dir)  # a re-run after a crash starts clean
    hp = job.hyperparameters
    reporter.log(
        f"{len(job.preference_pairs)} preference pairs from snapshot "
        f"{job.preference_snapshot_hash[:12]}, beta {hp['beta']}"
    )
    reporter.phase("loading the model, encoding the pairs and computing reference log-probs")
    config = FineTuneConfig(
        method=job.method, epochs=hp["epochs"], learning_rate=hp["learning_rate"],
        batch_size=hp["batch_size"], grad_accum=hp["grad_accum"], max_seq_len=hp["max_seq_len"],
        warmup_steps=hp["warmup_steps"], seed=hp["seed"], lora_r=hp.get("lora_r", 16),
        lora_alpha=hp.get("lora_alpha", 32),
        activation_checkpointing=settings.FINETUNE_ACTIVATION_CHECKPOINTING,
    )  # fmt: skip
    result = run_dpo(
        base_model_path=start_path, pairs=job.preference_pairs, output_dir=output_dir,
        config=config, beta=hp["beta"], on_progress=DpoProgress(job, reporter),
        should_cancel=reporter.should_cancel, metadata=dpo_provenance(job),
    )  # fmt: skip
    reporter.log(
        f"trained {result.total_steps} steps in {result.duration_seconds:.0f} s "
        f"({result.tokens_per_second:.0f} tokens/s)"
    )
    return _save_dpo_version(job, output_dir)


def dpo_provenance(job: FineTuneJob) -> dict:
    """What a DPO'd version records about its data: the preference snapshot's hash, and the
    start version's dataset kind, so its arm keeps following the data (``trained_arm``)."""
    start = job.start_version
    start_meta = (start.metadata or {}) if start else {}
    provenance = {
        "objective": "dpo",
        "preference_snapshot_hash": job.preference_snapshot_hash,
        "preference_source": job.preference_source,
        "preference_pairs": len(job.preference_pairs),
        "dpo_beta": job.hyperparameters.get("beta"),
        "finetune_job_id": job.pk,
        "start_version_id": job.start_version_id,
        "start_snapshot_hash": start_meta.get("snapshot_hash"),
        "base_model": job.base_model.name,
        "code_version": code_version(),
        "arm": job.arm,
        "arm_override": job.arm_override,
    }
    if start_meta.get("dataset_kind"):
        provenance["dataset_kind"] = start_meta["dataset_kind"]
    return provenance


def dpo_version_name(job: FineTuneJob, model: str) -> str:
    arm = dict(ModelVersion.Arm.choices)[job.arm]
    return f"{model} · {arm} + DPO · {job.preference_snapshot_hash[:12]} · #{job.pk}"


def _save_dpo_version(job: FineTuneJob, output_dir: Path) -> ModelVersion:
    metadata = json.loads((output_dir / "palms_metadata.json").read_text())
    return ModelVersion.objects.create(
        base_model=job.base_model,
        name=dpo_version_name(job, job.base_model.name),
        arm=job.arm,
        path=str(output_dir),
        is_adapter=job.method == FineTuneJob.Method.LORA,
        parameter_count=job.base_model.parameter_count,
        metadata=metadata,
    )
