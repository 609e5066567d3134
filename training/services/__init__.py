"""Training workflows: register base models, launch and run fine-tune and sampling jobs.

One module per room: ``base_models`` (registering, finding weights, reaching remote models),
``finetunes`` (hyperparameters, launch, the local run, checkpoints, progress),
``distributed`` (several devices and nodes under torchrun), ``hosted`` (the
hosted providers, their backends, retrain elsewhere), ``remote`` (running and mirroring a
hosted fine-tune), ``hosted_dates`` (providers' cut-off and shutdown dates), ``sampling``
(and ``sampling_defaults`` per model size), ``sweeps`` (grids of fine-tunes), and ``jobs``
(claim, heartbeat, sweep, cancel, retry). Other apps import the public names from here:
``from training.services import X``.

The torch code lives in ``training.engine``; it is imported inside the functions that run on
a worker, so the web process never loads torch.
"""

from training.services.base_models import (
    DEFAULT_KEY_ENV,
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_PARAMETERS,
    REMOTE_KINDS,
    api_key_for,
    artifacts_dir,
    base_model_create,
    base_model_register_default,
    base_version,
    local_model_path,
    remote_base_url,
    version_local_path,
)
from training.services.compute import compute_total, energy_meter
from training.services.distributed import finetune_join, planned_strategy, strategy_summary
from training.services.dpo import (
    DPO_HYPERPARAMETERS,
    clean_dpo_hyperparameters,
    dpo_defaults,
    dpo_launch,
)
from training.services.errors import ArmMismatchError, HostedCutoffError, TrainingError
from training.services.finetunes import (
    HYPERPARAMETER_LIMITS,
    MAX_CHECKPOINTS,
    CheckpointHandler,
    FineTuneProgress,
    arm_mismatch,
    clean_hyperparameters,
    default_hyperparameters,
    estimate_training_tokens,
    finetune_execute,
    finetune_launch,
    snapshot_arm,
)
from training.services.hosted import (
    HOSTED_BACKENDS,
    PROVIDERS,
    finetune_retrain_elsewhere,
    hosted_backend,
    provider_for_kind,
    retrain_targets,
)
from training.services.hosted_dates import (
    Shutdown,
    check_new_job_allowed,
    version_shutdown,
)
from training.services.jobs import (
    HEARTBEAT_SECONDS,
    JobReporter,
    claim_job,
    code_version,
    heartbeat,
    heartbeat_timeout,
    job_cancel,
    job_retry,
    readable_failure,
    sweep_stale_jobs,
    worker_name,
)
from training.services.remote import (
    OPENAI_STATUS,
    hosted_poll,
    hosted_poll_all,
    hosted_start,
    openai_poll,
    openai_poll_all,
    openai_start,
)
from training.services.sampling import (
    MAX_PROMPTS,
    MAX_SAMPLES_PER_PROMPT,
    SamplingProgress,
    clean_prompts,
    sampling_execute,
    sampling_job_release,
    sampling_launch,
    storable_text,
)
from training.services.sampling_defaults import (
    SAMPLING_DEFAULTS,
    SamplingDefault,
    sampling_default_for,
)
from training.services.sweeps import (
    MAX_SWEEP_RUNS,
    clean_grid,
    sweep_cancel,
    sweep_defaults,
    sweep_delete_losing_weights,
    sweep_launch,
    sweep_promote,
    sweep_ranking,
    sweep_status,
)

__all__ = [
    "DEFAULT_KEY_ENV",
    "REMOTE_KINDS",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MODEL_PARAMETERS",
    "DPO_HYPERPARAMETERS",
    "HEARTBEAT_SECONDS",
    "HOSTED_BACKENDS",
    "HYPERPARAMETER_LIMITS",
    "MAX_CHECKPOINTS",
    "MAX_PROMPTS",
    "MAX_SAMPLES_PER_PROMPT",
    "MAX_SWEEP_RUNS",
    "OPENAI_STATUS",
    "PROVIDERS",
    "SAMPLING_DEFAULTS",
    "ArmMismatchError",
    "CheckpointHandler",
    "FineTuneProgress",
    "HostedCutoffError",
    "JobReporter",
    "SamplingDefault",
    "SamplingProgress",
    "Shutdown",
    "TrainingError",
    "api_key_for",
    "arm_mismatch",
    "artifacts_dir",
    "base_model_create",
    "base_model_register_default",
    "base_version",
    "check_new_job_allowed",
    "claim_job",
    "clean_dpo_hyperparameters",
    "clean_grid",
    "clean_hyperparameters",
    "clean_prompts",
    "code_version",
    "compute_total",
    "energy_meter",
    "default_hyperparameters",
    "dpo_defaults",
    "dpo_launch",
    "estimate_training_tokens",
    "finetune_execute",
    "finetune_join",
    "finetune_launch",
    "finetune_retrain_elsewhere",
    "heartbeat",
    "heartbeat_timeout",
    "hosted_backend",
    "hosted_poll",
    "hosted_poll_all",
    "hosted_start",
    "job_cancel",
    "job_retry",
    "local_model_path",
    "openai_poll",
    "openai_poll_all",
    "openai_start",
    "planned_strategy",
    "provider_for_kind",
    "readable_failure",
    "remote_base_url",
    "retrain_targets",
    "sampling_default_for",
    "sampling_execute",
    "sampling_job_release",
    "sampling_launch",
    "snapshot_arm",
    "storable_text",
    "sweep_cancel",
    "sweep_defaults",
    "sweep_delete_losing_weights",
    "sweep_launch",
    "sweep_promote",
    "sweep_ranking",
    "strategy_summary",
    "sweep_stale_jobs",
    "sweep_status",
    "version_local_path",
    "version_shutdown",
    "worker_name",
]
