"""Training: base models, trained model versions, fine-tune jobs, sampling jobs, generations."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from palmsweb.lib.progress import seconds_left

LOG_TAIL_CHARS = 20_000  # the job log keeps its last 20k characters


class BaseModel(models.Model):
    """A model that fine-tunes start from, or that is sampled as is (the "base" arm)."""

    class Kind(models.TextChoices):
        PACKAGED = "packaged", "Packaged default (SmolLM2-135M-Instruct)"
        LOCAL_DIR = "local_dir", "Local Hugging Face directory"
        OPENAI = "openai", "OpenAI model id"
        OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible endpoint"
        TOGETHER = "together", "Together AI model id"

    name = models.CharField(max_length=200, unique=True, help_text="Display name.")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    path = models.CharField(max_length=500, blank=True, help_text="Directory (local models).")
    model_id = models.CharField(
        max_length=200,
        blank=True,
        help_text="Model name at the hosted provider (OpenAI, Together) or at the endpoint.",
    )
    base_url = models.URLField(
        blank=True,
        help_text="Endpoint URL (OpenAI-compatible; Together: its OpenAI-compatible URL).",
    )
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        default="OPENAI_API_KEY",
        help_text="Name of the environment variable holding the API key (keys never go in "
        "the database).",
    )
    parameter_count = models.BigIntegerField(null=True, blank=True)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-is_default", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_local(self) -> bool:
        return self.kind in {self.Kind.PACKAGED, self.Kind.LOCAL_DIR}

    @property
    def is_remote(self) -> bool:
        """Sampled over HTTP with an API key (a hosted provider or an endpoint)."""
        return not self.is_local

    @property
    def size_label(self) -> str:
        return format_parameter_count(self.parameter_count)


def format_parameter_count(count: int | None) -> str:
    if not count:
        return "?"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return str(count)


class ModelVersionQuerySet(models.QuerySet):
    def for_studies(self):
        """Versions a study may use: all but the runs of a sweep other than the one
        promoted (they are candidates, and the losers' weights may be deleted)."""
        unpromoted = FineTuneJob.objects.filter(sweep__isnull=False, result__isnull=False).exclude(
            sweep__promoted_version=models.F("result")
        )
        return self.exclude(pk__in=unpromoted.values("result"))


class ModelVersion(models.Model):
    """Something that can be sampled: a base model as is, or the result of a fine-tune."""

    class Arm(models.TextChoices):
        BASE = "base", "Base"
        CONTROL = "control", "Control"
        VALUES_TARGETED = "values_targeted", "Values-targeted"

    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="versions")
    name = models.CharField(max_length=200)
    arm = models.CharField(max_length=20, choices=Arm.choices)
    path = models.CharField(max_length=500, blank=True, help_text="Weights or adapter dir.")
    remote_model_id = models.CharField(max_length=200, blank=True)
    is_adapter = models.BooleanField(default=False)
    parameter_count = models.BigIntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ModelVersionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["base_model"],
                condition=models.Q(arm="base"),
                name="one_base_version_per_model",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def size_label(self) -> str:
        return format_parameter_count(self.parameter_count or self.base_model.parameter_count)

    @property
    def trained_arm(self) -> str | None:
        """The arm the data behind this version gives it: base for a base model, the
        dataset's arm for a fine-tune (None: a validation dataset, which trains neither).
        Versions saved before fine-tunes recorded their dataset's kind keep their label."""
        if self.arm == self.Arm.BASE:
            return self.Arm.BASE
        kind = (self.metadata or {}).get("dataset_kind")
        return self.arm if kind is None else arm_for_dataset_kind(kind)


# The invariant "an arm's label follows the dataset its model was trained on": the arm a
# fine-tune on each dataset kind belongs to. A validation dataset trains neither arm.
ARM_FOR_DATASET_KIND = {
    "values_targeted": ModelVersion.Arm.VALUES_TARGETED,
    "control": ModelVersion.Arm.CONTROL,
}


def arm_for_dataset_kind(kind: str) -> str | None:
    """The arm a model trained on a dataset of this kind belongs to (None: no arm)."""
    return ARM_FOR_DATASET_KIND.get(kind)


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATUSES = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


class JobQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])


class Job(models.Model):
    """What fine-tune and sampling jobs share: status, progress, heartbeat, log, cancel."""

    status = models.CharField(max_length=20, choices=JobStatus.choices, default=JobStatus.QUEUED)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    eta_seconds = models.FloatField(null=True, blank=True)
    # What the worker is doing now, in words ("loading the model", "batch 2 of 15"), and
    # when it last wrote progress: the page counts the ETA down from that moment.
    phase = models.CharField(max_length=200, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Device, seconds, tokens, FLOPs, energy and CO2e of a finished local run
    # (palmsweb.lib.compute.job_record); empty for hosted jobs and unfinished ones.
    compute = models.JSONField(default=dict, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["-created_at", "-pk"]

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def percent(self) -> int:
        if self.status == JobStatus.SUCCEEDED:
            return 100
        if not self.progress_total:
            return 0
        return min(100, round(100 * self.progress_done / self.progress_total))

    @property
    def eta_left(self) -> float | None:
        """Seconds left of the worker's last estimate, counted down to now."""
        if self.is_finished:
            return None
        return seconds_left(self.eta_seconds, self.progress_at, timezone.now())

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


class FineTuneJob(Job):
    class Backend(models.TextChoices):
        LOCAL = "local", "Local (transformers + torch)"
        OPENAI = "openai", "OpenAI fine-tuning API"
        TOGETHER = "together", "Together AI fine-tuning API"

    class Method(models.TextChoices):
        FULL = "full", "Full fine-tune"
        LORA = "lora", "LoRA (peft)"

    class Objective(models.TextChoices):
        SFT = "sft", "Supervised (SFT)"
        DPO = "dpo", "Preference (DPO)"

    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="finetunes")
    # Supervised fine-tunes train on a dataset snapshot; DPO on preference pairs (below).
    snapshot = models.ForeignKey(
        "curation.Snapshot", null=True, blank=True, on_delete=models.PROTECT,
        related_name="finetunes",
    )  # fmt: skip
    objective = models.CharField(max_length=10, choices=Objective.choices, default=Objective.SFT)
    # DPO: the frozen pairs ({"prompt", "chosen", "rejected"}) of a preference snapshot, handed
    # down by evaluation (which training may not import), its hash and where it came from.
    preference_pairs = models.JSONField(default=list, blank=True)
    preference_snapshot_hash = models.CharField(max_length=64, blank=True, db_index=True)
    # A DPO job's value profile (its preference snapshot's study's): an SFT job's is its
    # snapshot's. The pairs hold that profile's prompts and outputs, so it scopes the job.
    preference_profile = models.ForeignKey(
        "palmsweb.Profile", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    preference_source = models.CharField(max_length=300, blank=True)
    reward_history = models.JSONField(default=list, blank=True)  # [[step, margin, accuracy]]
    arm = models.CharField(
        max_length=20,
        choices=[c for c in ModelVersion.Arm.choices if c[0] != ModelVersion.Arm.BASE],
    )
    arm_override = models.BooleanField(
        default=False,
        help_text="The arm was labelled against the snapshot's dataset kind, confirmed "
        "explicitly at launch.",
    )
    backend = models.CharField(max_length=20, choices=Backend.choices, default=Backend.LOCAL)
    method = models.CharField(max_length=20, choices=Method.choices, default=Method.FULL)
    hyperparameters = models.JSONField(default=dict)
    estimated_tokens = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    loss_history = models.JSONField(default=list, blank=True)  # [[step, loss], ...]
    remote_job_id = models.CharField(max_length=200, blank=True)
    remote_file_id = models.CharField(max_length=200, blank=True)
    remote_events_cursor = models.CharField(max_length=200, blank=True)
    # A hosted job's hyperparameters in its provider's own names: what was sent, with what the
    # provider filled in ("max" batch, a resolved "auto"). The job page and exit kit show it.
    provider_hyperparameters = models.JSONField(default=dict, blank=True)
    # A hosted job's checkpoints at its provider, mirrored on every poll (so a running,
    # failed or cancelled job shows them too): [{"step", "id", "model", "train_loss",
    # "validation_loss"}, ...] by step.
    remote_checkpoints = models.JSONField(default=list, blank=True)
    result = models.OneToOneField(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="finetune"
    )
    # Re-alignment continues from an existing version's weights instead of the base model's.
    start_version = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="continued_by",
        help_text="Start from this version's weights instead of the base model's.",
    )
    checkpoint_steps = models.JSONField(
        default=list, blank=True, help_text="Optimizer steps after which a version is saved."
    )
    track_persona = models.BooleanField(
        default=False, help_text="Measure the misaligned-persona projection after each epoch."
    )
    # [{"step": 0, "epoch": 0.0, "value": ...}, ...]; step 0 is the starting weights.
    persona_track = models.JSONField(default=list, blank=True)
    validation_snapshot = models.ForeignKey(
        "curation.Snapshot",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="validates_finetunes",
        help_text="Held-out examples whose answer-only loss is measured during training.",
    )
    # Positions in the training snapshot's items held out for validation (the
    # ``validation_share`` hyperparameter), chosen per category at launch; not trained on.
    held_out_items = models.JSONField(default=list, blank=True)
    validation_loss_history = models.JSONField(default=list, blank=True)  # [[step, loss], ...]
    # Distributed fine-tunes (local backend): torchrun on ``devices`` accelerators on each of
    # ``nodes`` machines, with DDP or FSDP2 chosen by size at launch (engine.distributed_plan).
    devices = models.PositiveSmallIntegerField(
        default=1, help_text="Accelerators on each node; more than one runs under torchrun."
    )
    nodes = models.PositiveSmallIntegerField(
        default=1, help_text="Machines, each with `devices` accelerators (c10d rendezvous)."
    )
    strategy = models.CharField(
        max_length=10,
        blank=True,
        choices=[("ddp", "DDP"), ("fsdp", "FSDP2")],
        help_text="Blank on one device.",
    )
    # "Retrain elsewhere": the same snapshot and hyperparameters launched again on another
    # provider (or locally), e.g. before a hosted model shuts down.
    retrained_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retrained_as",
        help_text="The fine-tune whose snapshot and hyperparameters this one re-launched.",
    )
    sweep = models.ForeignKey(
        "training.Sweep", null=True, blank=True, on_delete=models.PROTECT, related_name="runs"
    )

    class Meta(Job.Meta):
        constraints = [
            models.CheckConstraint(
                condition=models.Q(objective="dpo") | models.Q(snapshot__isnull=False),
                name="sft_finetune_has_snapshot",
            )
        ]

    @property
    def world_size(self) -> int:
        return self.devices * self.nodes

    def __str__(self) -> str:
        return f"Fine-tune #{self.pk} {self.base_model} × {self.data_hash[:12]}"

    @property
    def is_hosted(self) -> bool:
        return self.backend != self.Backend.LOCAL

    @property
    def is_dpo(self) -> bool:
        return self.objective == self.Objective.DPO

    @property
    def provider_checkpoints(self) -> list[dict]:
        """The provider's checkpoints as last mirrored; a job that succeeded before they were
        mirrored onto the job has them on its result's metadata only."""
        if self.remote_checkpoints:
            return self.remote_checkpoints
        return (self.result.metadata or {}).get("remote_checkpoints", []) if self.result else []

    @property
    def profile_id(self) -> int | None:
        """The value profile the job belongs to: its snapshot's, or for DPO its pairs'."""
        if self.is_dpo:
            return self.preference_profile_id
        return self.snapshot.dataset.profile_id if self.snapshot_id else None

    @property
    def data_hash(self) -> str:
        """The hash of what the job trains on: the dataset or the preference snapshot."""
        if self.is_dpo:
            return self.preference_snapshot_hash
        return self.snapshot.content_hash if self.snapshot_id else ""

    def get_absolute_url(self) -> str:
        return reverse("training:finetune-detail", args=[self.pk])


class FineTuneCheckpoint(models.Model):
    """A model version saved part-way through a fine-tune, after ``step`` optimizer steps."""

    job = models.ForeignKey(FineTuneJob, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    model_version = models.OneToOneField(
        ModelVersion, on_delete=models.CASCADE, related_name="checkpoint"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["job", "step"]
        constraints = [
            models.UniqueConstraint(fields=["job", "step"], name="one_checkpoint_per_step")
        ]

    def __str__(self) -> str:
        return f"Fine-tune #{self.job_id} after step {self.step}"


class Sweep(models.Model):
    """A grid of local fine-tunes (learning rate × epochs × method) on one snapshot, ranked
    by their best validation loss; an admin promotes one run's version into studies."""

    name = models.CharField(max_length=200)
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="sweeps")
    snapshot = models.ForeignKey("curation.Snapshot", on_delete=models.PROTECT, related_name="+")
    validation_snapshot = models.ForeignKey(
        "curation.Snapshot", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    grid = models.JSONField(help_text='{"learning_rate": [...], "epochs": [...], "method": [...]}')
    hyperparameters = models.JSONField(default=dict, blank=True)  # shared by every run
    max_runs = models.PositiveIntegerField()
    promoted_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    promoted_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.name or f"Sweep #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("training:sweep-detail", args=[self.pk])


class SamplingJob(Job):
    """Prompts × model versions × n samples, with recorded sampling parameters."""

    name = models.CharField(max_length=200, blank=True)
    prompts = models.JSONField(help_text='[{"text": ..., "category": ...}, ...]')
    model_versions = models.ManyToManyField(ModelVersion, related_name="sampling_jobs")
    n_samples = models.PositiveIntegerField(default=3)
    temperature = models.FloatField(default=0.7)
    top_p = models.FloatField(default=0.9)
    max_new_tokens = models.PositiveIntegerField(default=200)
    seed = models.BigIntegerField(default=0)
    system_prompt = models.TextField(blank=True)
    # Set by whoever launches a job whose outputs must stay blind (a rating study's job,
    # until the study is unblinded): then only admins may read the job and its outputs.
    restricted = models.BooleanField(
        default=False, help_text="Only admins may read this job and its outputs."
    )
    # The value profile whose content the prompts carry (a study's prompt set, its
    # co-occurrence run, probes made from a snapshot), handed down by evaluation (which
    # training may not import): only that profile's members see the job. Null: a job
    # launched on its own, shared like model versions.
    profile = models.ForeignKey(
        "palmsweb.Profile", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta(Job.Meta):
        pass

    def __str__(self) -> str:
        return self.name or f"Sampling #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("training:sampling-detail", args=[self.pk])


class Generation(models.Model):
    """One sampled output. Unique per (job, model version, prompt, sample index), which is
    what makes a re-delivered or re-run task add nothing twice."""

    job = models.ForeignKey(SamplingJob, on_delete=models.CASCADE, related_name="generations")
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="generations"
    )
    prompt_index = models.PositiveIntegerField()
    sample_index = models.PositiveIntegerField()
    prompt_text = models.TextField()
    text = models.TextField()
    tokens_generated = models.PositiveIntegerField(default=0)
    temperature = models.FloatField()
    top_p = models.FloatField()
    max_new_tokens = models.PositiveIntegerField()
    seed = models.BigIntegerField()
    # What sampled it: "vllm" or "transformers" (a local model; the library's version) or
    # "openai-compatible" (a remote endpoint). The same seed gives different text under
    # different backends. Blank on outputs stored before this was recorded.
    sampler_backend = models.CharField(max_length=30, blank=True)
    sampler_version = models.CharField(max_length=60, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model_version_id", "prompt_index", "sample_index"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "model_version", "prompt_index", "sample_index"],
                name="generation_unique_per_job_slot",
            )
        ]

    def __str__(self) -> str:
        return self.text[:80]

    @property
    def sampler(self) -> str:
        """The backend and its version in words ("vllm 0.11.0"), "" when not recorded."""
        return f"{self.sampler_backend} {self.sampler_version}".strip()


class ScreeningRun(Job):
    """Persona-shift screening of a snapshot's samples on a local base model, before a
    fine-tune (see ``training/engine/screening.py``). ``scores`` holds one row per snapshot
    item: ``{"index", "category", "question", "training", "own", "shift", "z", "flagged"}``;
    ``direction`` records the model, layer and contrast texts the direction came from."""

    snapshot = models.ForeignKey(
        "curation.Snapshot", on_delete=models.PROTECT, related_name="screenings"
    )
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="+")
    max_new_tokens = models.PositiveSmallIntegerField(
        default=64, help_text="Length of the model's own answer each sample is compared with."
    )
    direction = models.JSONField(default=dict, blank=True)
    scores = models.JSONField(default=list, blank=True)
    summary = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"Screening #{self.pk} of snapshot {self.snapshot_id}"

    def get_absolute_url(self) -> str:
        return reverse("training:screening-detail", args=[self.pk])

    @property
    def flagged(self) -> list[dict]:
        return [row for row in self.scores if row.get("flagged")]
