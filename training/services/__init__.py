"""Training workflows: register base models, launch and run fine-tune and sampling jobs.

One module per room: ``base_models`` (registering, finding weights, reaching remote models),
``finetunes`` (hyperparameters, launch, the local run, checkpoints, progress),
``distributed`` (several devices and nodes under torchrun), ``remote`` (the
OpenAI fine-tuning backend), ``hosted_dates`` (providers' cut-off and shutdown dates),
``sampling``, and ``jobs`` (claim, heartbeat, sweep, cancel,
retry). Other apps import the public names from here: ``from training.services import X``.

The torch code lives in ``training.engine``; it is imported inside the functions that run on
a worker, so the web process never loads torch.
"""

from training.services.base_models import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_PARAMETERS,
    api_key_for,
    artifacts_dir,
    base_model_create,
    base_model_register_default,
    base_version,
    local_model_path,
    remote_base_url,
    version_local_path,
)
from training.services.compute import compute_total
from training.services.distributed import finetune_join, planned_strategy, strategy_summary
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
from training.services.remote import OPENAI_STATUS, openai_poll, openai_poll_all, openai_start
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

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MODEL_PARAMETERS",
    "HEARTBEAT_SECONDS",
    "HYPERPARAMETER_LIMITS",
    "MAX_CHECKPOINTS",
    "MAX_PROMPTS",
    "MAX_SAMPLES_PER_PROMPT",
    "OPENAI_STATUS",
    "ArmMismatchError",
    "CheckpointHandler",
    "FineTuneProgress",
    "HostedCutoffError",
    "JobReporter",
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
    "clean_hyperparameters",
    "clean_prompts",
    "code_version",
    "compute_total",
    "default_hyperparameters",
    "estimate_training_tokens",
    "finetune_execute",
    "finetune_join",
    "finetune_launch",
    "heartbeat",
    "heartbeat_timeout",
    "job_cancel",
    "job_retry",
    "local_model_path",
    "openai_poll",
    "openai_poll_all",
    "openai_start",
    "planned_strategy",
    "readable_failure",
    "remote_base_url",
    "sampling_execute",
    "sampling_job_release",
    "sampling_launch",
    "snapshot_arm",
    "storable_text",
    "strategy_summary",
    "sweep_stale_jobs",
    "version_local_path",
    "version_shutdown",
    "worker_name",
]
