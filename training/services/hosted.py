"""Hosted providers: which one fine-tunes a base model, its backend (with the key read
now), our job in its terms, and "retrain elsewhere".

A provider is picked when a base model is registered (its kind); everything downstream asks
here. Adding a provider is one :class:`Provider` row, one backend in
``training.engine.hosted`` and one ``BaseModel.Kind``/``FineTuneJob.Backend`` choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import transaction

from training.models import BaseModel, FineTuneJob
from training.services import base_models, hosted_dates
from training.services.errors import HostedCutoffError, TrainingError
from training.services.validation import VALIDATION_HYPERPARAMETERS

if TYPE_CHECKING:
    from training.engine.hosted.base import HostedBackend, HostedJobSpec


@dataclass(frozen=True)
class Provider:
    name: str  # the key of HOSTED_PROVIDER_DATES
    label: str
    kind: str  # BaseModel.Kind
    backend: str  # FineTuneJob.Backend
    min_examples: int  # the fewest training examples the provider's API takes
    methods: tuple[str, ...]  # FineTuneJob.Method values it can run


PROVIDERS = {
    "openai": Provider(
        "openai",
        "OpenAI",
        BaseModel.Kind.OPENAI,
        FineTuneJob.Backend.OPENAI,
        10,
        (FineTuneJob.Method.FULL,),
    ),
    "together": Provider(
        "together",
        "Together AI",
        BaseModel.Kind.TOGETHER,
        FineTuneJob.Backend.TOGETHER,
        1,
        (FineTuneJob.Method.LORA, FineTuneJob.Method.FULL),
    ),
}
HOSTED_BACKENDS = frozenset(p.backend for p in PROVIDERS.values())
HOSTED_KINDS = frozenset(p.kind for p in PROVIDERS.values())  # base models a provider serves


def provider_for_kind(kind: str) -> Provider | None:
    """The provider that fine-tunes base models of ``kind`` (None: local or an endpoint)."""
    return next((p for p in PROVIDERS.values() if p.kind == kind), None)


def provider_for_backend(backend: str) -> Provider | None:
    return next((p for p in PROVIDERS.values() if p.backend == backend), None)


def hosted_backend(base_model: BaseModel) -> HostedBackend:
    """The fine-tuning API client of ``base_model``'s provider, with its key read now."""
    if base_model.kind == BaseModel.Kind.OPENAI:
        # Looked up on the module, so tests can swap in a client bound to a fake server.
        return base_models.openai_backend(base_model)
    if base_model.kind == BaseModel.Kind.TOGETHER:
        from training.engine.hosted.together import TogetherFineTuneBackend

        return TogetherFineTuneBackend(
            api_key=base_models.api_key_for(base_model),
            base_url=base_models.remote_base_url(base_model),
        )
    raise TrainingError(f"{base_model} is not fine-tuned by a hosted provider.")


# Together evaluates a validation file n_evals times over the run: once per epoch, within
# the max_num_evals its model limits list (10 for the models we have seen).
MAX_EVALS = 10


def job_spec(
    job: FineTuneJob,
    training_file: str,
    validation_file: str | None = None,
    *,
    examples: int | None = None,
) -> HostedJobSpec:
    """``job`` in the backends' shared terms (each maps them to its provider's names).
    ``examples``: how many training examples were uploaded (for the warm-up's share)."""
    from training.engine.hosted.base import HostedJobSpec

    hp = job.hyperparameters
    start = job.start_version
    base_id = job.base_model.model_id
    # A DPO may start from an earlier fine-tune at the same provider (OpenAI and Together
    # both fine-tune their fine-tuned models); the base model's own version is no such start.
    start_from = (
        start.remote_model_id
        if start and start.remote_model_id and start.remote_model_id != base_id
        else None
    )
    return HostedJobSpec(
        model=base_id,
        start_from=start_from,
        training_file=training_file,
        kind="preference" if job.is_dpo else "supervised",
        dpo_beta=hp.get("beta") if job.is_dpo else None,
        lora=job.method == FineTuneJob.Method.LORA,
        epochs=hp["epochs"],
        # OpenAI's batch size and learning rate stay "auto": its API takes a multiplier of
        # a rate it picks, which our absolute learning_rate does not translate into.
        batch_size="auto" if job.backend == FineTuneJob.Backend.OPENAI else hp["batch_size"],
        learning_rate=hp["learning_rate"],
        grad_accum=hp.get("grad_accum"),
        lora_r=hp.get("lora_r"),
        lora_alpha=hp.get("lora_alpha"),
        seed=hp["seed"],
        suffix=f"palms-{job.arm}{'-dpo' if job.is_dpo else ''}-{job.data_hash[:12]}",
        metadata={"palmsweb_job": str(job.pk), "snapshot": job.data_hash},
        validation_file=validation_file,
        n_evals=min(hp["epochs"], MAX_EVALS) if validation_file else None,
        max_seq_len=hp.get("max_seq_len"),
        warmup_ratio=warmup_ratio(hp, examples),
    )


def warmup_ratio(hp: dict, examples: int | None) -> float | None:
    """Our warm-up steps as the share of all optimizer steps that providers take instead
    (Together's ``warmup_ratio``). The steps are counted from examples, batch size and
    gradient accumulation; a provider that packs examples takes fewer steps, but the share
    of the run spent warming up is what the setting means. None when there is no warm-up or
    nothing to count from."""
    steps = hp.get("warmup_steps")
    if not steps or not examples or not isinstance(hp.get("batch_size"), int):
        return None
    per_step = hp["batch_size"] * (hp.get("grad_accum") or 1)
    total = math.ceil(examples / per_step) * int(hp["epochs"])
    return round(min(1.0, steps / total), 4)


# --- retrain elsewhere ------------------------------------------------------------------------


def _elsewhere(job: FineTuneJob) -> list[BaseModel]:
    """Every local model, and every hosted one whose provider differs from ``job``'s (the
    same provider would not outlive it)."""
    return [
        base
        for base in BaseModel.objects.all()
        if base.pk != job.base_model_id
        and (base.is_local or provider_for_kind(base.kind) is not None)
        and not (provider_for_kind(base.kind) and base.kind == job.base_model.kind)
    ]


def cutoff_note(base_model: BaseModel) -> str | None:
    """Why ``base_model``'s provider takes no new fine-tuning job today (its cut-off has
    passed), in a few words; None when it takes them."""
    try:
        hosted_dates.check_new_job_allowed(base_model)
    except HostedCutoffError:
        dates = hosted_dates.provider_dates(hosted_dates.provider_of(base_model))
        return f"{dates.label} takes no new fine-tuning jobs from {dates.no_new_jobs_from}"
    return None


def retrain_choices(job: FineTuneJob) -> tuple[list[BaseModel], list[tuple[BaseModel, str]]]:
    """Somewhere else to retrain ``job`` (:func:`_elsewhere`), from one read: the base
    models whose provider still takes new fine-tuning jobs, and those whose cut-off has
    passed with why (the retrain form says so instead of failing on submit)."""
    offered, closed = [], []
    for base in _elsewhere(job):
        note = cutoff_note(base)
        if note is None:
            offered.append(base)
        else:
            closed.append((base, note))
    return offered, closed


def retrain_targets(job: FineTuneJob) -> list[BaseModel]:
    """The base models ``job`` can be re-launched on (:func:`retrain_choices`)."""
    return retrain_choices(job)[0]


@transaction.atomic
def finetune_retrain_elsewhere(
    *, job: FineTuneJob, base_model: BaseModel, method: str | None = None, user=None
) -> FineTuneJob:
    """Launch ``job``'s snapshot and hyperparameters again on ``base_model`` (another
    provider, or a local model), linked to ``job`` (``retrained_from``). The arm, any arm
    override and the validation data (the validation snapshot, or the held-out share, which
    holds out the same items) carry over; the method too, unless the new provider cannot
    run it."""
    from training.services.finetunes import finetune_launch

    if job.is_dpo:
        raise TrainingError("Retrain a DPO fine-tune from its preference snapshot's page.")
    hosted_dates.check_new_job_allowed(base_model)  # the cut-off in its own words
    if base_model not in retrain_targets(job):
        raise TrainingError(
            f"{base_model} is not somewhere else to retrain #{job.pk}: choose a local model or "
            "one at another hosted provider."
        )
    provider = provider_for_kind(base_model.kind)
    method = method or job.method
    if provider is not None and method not in provider.methods:
        method = provider.methods[0]
    new = finetune_launch(
        base_model=base_model, snapshot=job.snapshot, arm=job.arm, method=method,
        hyperparameters=carried_hyperparameters(job, hosted=provider is not None),
        validation_snapshot=job.validation_snapshot, allow_arm_mismatch=job.arm_override,
        user=user,
    )  # fmt: skip
    FineTuneJob.objects.filter(pk=new.pk).update(retrained_from=job)
    new.retrained_from = job
    return new


RETRAIN_HYPERPARAMETERS = (
    "epochs",
    "learning_rate",
    "batch_size",
    "grad_accum",
    "max_seq_len",
    "warmup_steps",
    "seed",
    "lora_r",
    "lora_alpha",
    # The same share with the same seed holds out the same items (validation.held_out_indexes).
    "validation_share",
)


def carried_hyperparameters(job: FineTuneJob, *, hosted: bool) -> dict:
    """What a retrain of ``job`` takes: the names every backend understands, and on a local
    model also the local-only validation settings (when to validate, keeping the best
    step); a hosted provider validates on its own schedule, so those stay behind. max_steps
    (re-alignment's) stays behind too."""
    names = set(RETRAIN_HYPERPARAMETERS)
    if not hosted:
        names |= set(VALIDATION_HYPERPARAMETERS)
    return {k: v for k, v in job.hyperparameters.items() if k in names}
