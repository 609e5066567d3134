"""DRF serializers for the training API.

Input serializers validate what a client sends (and refuse keys they do not know); output
serializers render models. Views pass validated data to ``training.services``.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from curation.models import Snapshot
from palmsweb.lib.drf import RejectUnknownFieldsMixin
from palmsweb.lib.keyenv import KeyEnvError, check_endpoint, check_key_env
from training.engine.distributed_plan import MAX_DEVICES_PER_NODE, MAX_NODES
from training.forms import (
    ARM_CHOICES,
    MAX_PROMPT_CHARS,
    REGISTRABLE_KINDS,
    endpoint_url,
    env_var_name,
)
from training.models import (
    BaseModel,
    FineTuneJob,
    Generation,
    JobStatus,
    ModelVersion,
    SamplingJob,
)
from training.services import (
    DEFAULT_KEY_ENV,
    MAX_PROMPTS,
    MAX_SAMPLES_PER_PROMPT,
    REMOTE_KINDS,
    sampling_default_for,
    version_shutdown,
)

# Named enum components: "status" and "arm" also name other choice sets in the schema
# (sample status; the two fine-tune arms), which drf-spectacular would otherwise number.


@extend_schema_field({"type": "string", "enum": JobStatus.values}, component_name="JobStatusEnum")
class JobStatusField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=JobStatus.choices, **kwargs)


@extend_schema_field(
    {"type": "string", "enum": ModelVersion.Arm.values}, component_name="ModelArmEnum"
)
class ModelArmField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=ModelVersion.Arm.choices, **kwargs)


@extend_schema_field(
    {"type": "string", "enum": [value for value, _ in ARM_CHOICES]},
    component_name="FineTuneArmEnum",
)
class FineTuneArmField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=ARM_CHOICES, **kwargs)


# --- base models and versions ---------------------------------------------------------------


class SamplingDefaultSerializer(serializers.Serializer):
    size = serializers.CharField()
    below = serializers.FloatField(allow_null=True, help_text="Parameters (exclusive).")
    temperature = serializers.FloatField()
    top_p = serializers.FloatField()
    max_new_tokens = serializers.IntegerField()
    reason = serializers.CharField()


class BaseModelSerializer(serializers.ModelSerializer):
    size_label = serializers.CharField(read_only=True)
    # Blank for local models: a plain string, not a "uri" (which "" is not).
    base_url = serializers.CharField(read_only=True)
    sampling_default = serializers.SerializerMethodField(
        help_text="Recommended sampling for a model of this size, with the reason; null when "
        "the size is unknown (training/services/sampling_defaults.py)."
    )

    class Meta:
        model = BaseModel
        fields = [
            "id",
            "name",
            "kind",
            "path",
            "model_id",
            "base_url",
            "api_key_env",
            "parameter_count",
            "size_label",
            "is_default",
            "created_at",
            "sampling_default",
        ]
        read_only_fields = fields

    @extend_schema_field(SamplingDefaultSerializer(allow_null=True))
    def get_sampling_default(self, base_model: BaseModel) -> dict | None:
        default = sampling_default_for(base_model.parameter_count)
        return default.as_dict() if default else None


class BaseModelCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=REGISTRABLE_KINDS)
    path = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)
    model_id = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    base_url = serializers.CharField(
        max_length=200, required=False, default="", allow_blank=True, validators=[endpoint_url]
    )
    api_key_env = serializers.CharField(
        max_length=100,
        required=False,
        default="",
        allow_blank=True,
        validators=[env_var_name],
        help_text="Name of the environment variable holding the key; never the key itself. "
        "Blank: the provider's usual one (OPENAI_API_KEY; TOGETHER_API_KEY for together).",
    )
    parameter_count = serializers.IntegerField(min_value=1, required=False, allow_null=True)

    def validate(self, attrs):
        attrs["api_key_env"] = attrs.get("api_key_env") or DEFAULT_KEY_ENV.get(
            attrs["kind"], "OPENAI_API_KEY"
        )
        # Only remote models send a key; the operator's allow-lists apply to them.
        if attrs["kind"] in REMOTE_KINDS:
            for field, check in (("api_key_env", check_key_env), ("base_url", check_endpoint)):
                try:
                    check(attrs.get(field))
                except KeyEnvError as error:
                    raise serializers.ValidationError({field: [str(error)]}) from None
        return attrs


class ModelVersionSerializer(serializers.ModelSerializer):
    arm = ModelArmField(read_only=True)
    base_model_name = serializers.CharField(source="base_model.name", read_only=True)
    size_label = serializers.CharField(read_only=True)
    shutdown_date = serializers.SerializerMethodField(
        help_text="When the hosted model stops answering (every model fine-tuned from it "
        "with it); null for models nobody retires."
    )
    shutdown_date_source = serializers.SerializerMethodField(
        help_text='"provider": its model listing gave the date when the fine-tune '
        'succeeded; "configured": HOSTED_PROVIDER_DATES, by model family.'
    )

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "name",
            "arm",
            "base_model",
            "base_model_name",
            "path",
            "remote_model_id",
            "is_adapter",
            "parameter_count",
            "size_label",
            "metadata",
            "shutdown_date",
            "shutdown_date_source",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DateField(allow_null=True))
    def get_shutdown_date(self, version: ModelVersion) -> str | None:
        shutdown = version_shutdown(version)
        return shutdown.on.isoformat() if shutdown else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_shutdown_date_source(self, version: ModelVersion) -> str | None:
        shutdown = version_shutdown(version)
        return shutdown.source if shutdown else None


# --- jobs -----------------------------------------------------------------------------------


JOB_FIELDS = [
    "status",
    "percent",
    "progress_done",
    "progress_total",
    "eta_seconds",
    "phase",
    "progress_at",
    "error",
    "cancel_requested",
    "attempts",
    "created_by",
    "created_at",
    "started_at",
    "finished_at",
    "compute",
]


class JobSerializerMixin(serializers.Serializer):
    status = JobStatusField(read_only=True)
    compute = serializers.JSONField(
        read_only=True,
        help_text="A finished local job's accounting, {} until then (and for hosted jobs): "
        "kind, device_type, device_name, device_count, wall_seconds, device_seconds, tokens, "
        "flops (estimated: 6 x parameters x tokens to train, 2 x to generate), energy_kwh, "
        "energy_method, energy_estimated (true when a power model, not the hardware's "
        "counters, gave the energy), grid_g_per_kwh (the configured grid intensity), co2e_kg.",
    )
    percent = serializers.IntegerField(read_only=True)
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )


class FineTuneJobSerializer(JobSerializerMixin, serializers.ModelSerializer):
    arm = FineTuneArmField(read_only=True)
    strategy = serializers.ChoiceField(
        choices=[("", "one device"), ("ddp", "DDP"), ("fsdp", "FSDP2")], read_only=True,
        help_text="How a fine-tune on several devices spreads: ddp (a replica per device) or "
        "fsdp (FSDP2, sharded), chosen at launch by size; blank on one device.",
    )  # fmt: skip
    snapshot_hash = serializers.CharField(
        source="snapshot.content_hash", read_only=True, allow_null=True,
        help_text="The dataset snapshot's hash; null for DPO (see preference_snapshot_hash).",
    )  # fmt: skip
    dataset_kind = serializers.CharField(
        source="snapshot.dataset.kind", read_only=True, allow_null=True,
        help_text="The kind of the snapshot's dataset; the arm follows it unless "
        "arm_override.",
    )
    profile = serializers.IntegerField(
        source="profile_id", read_only=True, allow_null=True,
        help_text="The value profile whose snapshot (for DPO: whose preference pairs) this "
        "fine-tune trained on (fixed: a dataset never changes profile).",
    )  # fmt: skip

    class Meta:
        model = FineTuneJob
        fields = [
            "id",
            "base_model",
            "snapshot",
            "snapshot_hash",
            "dataset_kind",
            "profile",
            "objective",
            "preference_snapshot_hash",
            "arm",
            "arm_override",
            "method",
            "backend",
            "hyperparameters",
            "estimated_tokens",
            "tokens_per_second",
            "result",
            "remote_job_id",
            "devices",
            "nodes",
            "strategy",
            "retrained_from",
            *JOB_FIELDS,
        ]
        read_only_fields = fields


class FineTuneJobDetailSerializer(FineTuneJobSerializer):
    validation_loss = serializers.JSONField(
        source="validation_loss_history", read_only=True,
        help_text="[[step, loss], ...]: the mean answer-only loss of the validation examples, "
        "at step 0 (the starting weights), every eval_every_steps steps and each epoch end.",
    )  # fmt: skip
    reward_history = serializers.JSONField(
        read_only=True,
        help_text="DPO: [[step, mean reward margin, reward accuracy], ...] after each step.",
    )
    provider_hyperparameters = serializers.JSONField(
        read_only=True,
        help_text="A hosted job's hyperparameters in its provider's own names: what was sent, "
        "with the values the provider filled in ({} for a local job).",
    )

    remote_checkpoints = serializers.JSONField(
        source="provider_checkpoints", read_only=True,
        help_text="A hosted job's checkpoints at its provider, mirrored on every poll: "
        '[{"step", "id", "model", "train_loss", "validation_loss"}, ...] ([] for a local job).',
    )

    class Meta(FineTuneJobSerializer.Meta):
        fields = [
            *FineTuneJobSerializer.Meta.fields,
            "start_version",
            "checkpoint_steps",
            "track_persona",
            "persona_track",
            "loss_history",
            "validation_snapshot",
            "held_out_items",
            "validation_loss",
            "reward_history",
            "provider_hyperparameters",
            "remote_checkpoints",
            "log",
        ]
        read_only_fields = fields


class HyperparametersSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """The hyperparameters a fine-tune accepts; any left out take the model's defaults.
    Ranges are the service's (a value out of range is refused with its message)."""

    epochs = serializers.IntegerField(required=False)
    learning_rate = serializers.FloatField(required=False)
    batch_size = serializers.IntegerField(required=False)
    grad_accum = serializers.IntegerField(required=False)
    max_seq_len = serializers.IntegerField(required=False)
    warmup_steps = serializers.IntegerField(required=False)
    seed = serializers.IntegerField(required=False)
    lora_r = serializers.IntegerField(required=False)
    lora_alpha = serializers.IntegerField(required=False)
    max_steps = serializers.IntegerField(required=False)
    validation_share = serializers.FloatField(
        required=False,
        help_text="Hold out this share (0 to 0.5) of each category of the training snapshot "
        "for validation; 0 or left out: none. Not with validation_snapshot.",
    )
    eval_every_steps = serializers.IntegerField(
        required=False,
        help_text="Also measure the validation loss every this many steps (it is always "
        "measured at step 0 and each epoch end).",
    )
    keep_best_validation = serializers.BooleanField(
        required=False,
        help_text="Save the weights of the lowest validation loss instead of the last step's "
        "(local models, with validation); the version's metadata records the step "
        "(saved_checkpoint).",
    )


class FineTuneCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    base_model = serializers.PrimaryKeyRelatedField(queryset=BaseModel.objects.all())
    snapshot = serializers.PrimaryKeyRelatedField(queryset=Snapshot.objects.all())
    arm = FineTuneArmField(
        required=False, default=None, allow_null=True,
        help_text="Leave out: the arm the snapshot's dataset trains (values-targeted or "
        "control). Another arm needs allow_arm_mismatch.",
    )
    allow_arm_mismatch = serializers.BooleanField(
        default=False,
        help_text="Confirm an arm other than the snapshot's dataset's; recorded on the job "
        "(arm_override). Without it such a launch is refused (400).",
    )
    method = serializers.ChoiceField(
        choices=FineTuneJob.Method.choices, default=FineTuneJob.Method.FULL
    )
    hyperparameters = HyperparametersSerializer(required=False, default=dict)
    track_persona = serializers.BooleanField(
        default=False,
        help_text="Measure the misaligned-persona projection before training and after each "
        "epoch (local models).",
    )
    validation_snapshot = serializers.PrimaryKeyRelatedField(
        queryset=Snapshot.objects.all(), required=False, allow_null=True, default=None,
        help_text="A snapshot (any dataset kind) whose answer-only loss is measured during "
        "training (hosted models: uploaded as the provider's validation file).",
    )  # fmt: skip
    devices = serializers.IntegerField(
        default=1, min_value=1, max_value=MAX_DEVICES_PER_NODE,
        help_text="Accelerators per node (local models). More than one trains under torchrun, "
        "with DDP or FSDP2 chosen by the model's size (the job's strategy), on a worker that "
        "has that many; not with checkpoints or persona tracking.",
    )  # fmt: skip
    nodes = serializers.IntegerField(
        default=1, min_value=1, max_value=MAX_NODES,
        help_text="Machines, each with `devices` accelerators and a gpu worker; they meet at "
        "the first node's c10d rendezvous.",
    )  # fmt: skip


class SamplingJobSerializer(JobSerializerMixin, serializers.ModelSerializer):
    n_prompts = serializers.SerializerMethodField()
    profile = serializers.IntegerField(
        source="profile_id", read_only=True, allow_null=True,
        help_text="The value profile whose prompts the job samples (a study's, a check on a "
        "snapshot): only its members see the job. Null: launched on its own, shared.",
    )

    class Meta:
        model = SamplingJob
        fields = [
            "id",
            "name",
            "model_versions",
            "n_prompts",
            "n_samples",
            "temperature",
            "top_p",
            "max_new_tokens",
            "seed",
            "system_prompt",
            "profile",
            *JOB_FIELDS,
        ]
        read_only_fields = fields

    def get_n_prompts(self, job: SamplingJob) -> int:
        return len(job.prompts)


class SamplingPromptSerializer(serializers.Serializer):
    text = serializers.CharField()
    category = serializers.CharField(required=False, allow_blank=True)


class SamplingJobDetailSerializer(SamplingJobSerializer):
    prompts = SamplingPromptSerializer(many=True, read_only=True)

    class Meta(SamplingJobSerializer.Meta):
        fields = [*SamplingJobSerializer.Meta.fields, "prompts", "log"]
        read_only_fields = fields


class SamplingPromptInputSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    text = serializers.CharField(max_length=MAX_PROMPT_CHARS)
    category = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)


class SamplingCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    prompts = SamplingPromptInputSerializer(
        many=True, required=False, default=list, max_length=MAX_PROMPTS
    )
    use_demo_prompts = serializers.BooleanField(
        default=False,
        help_text="Sample the 40 PALMS demo evaluation prompts (before any given in prompts).",
    )
    model_versions = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.all(), many=True, allow_empty=False
    )
    n_samples = serializers.IntegerField(min_value=1, max_value=MAX_SAMPLES_PER_PROMPT, default=3)
    temperature = serializers.FloatField(min_value=0, max_value=2, default=0.7)
    top_p = serializers.FloatField(min_value=0.01, max_value=1, default=0.9)
    max_new_tokens = serializers.IntegerField(min_value=1, max_value=4096, default=200)
    seed = serializers.IntegerField(min_value=0, max_value=2**63 - 1, default=0)
    system_prompt = serializers.CharField(
        max_length=MAX_PROMPT_CHARS, required=False, default="", allow_blank=True
    )

    def validate(self, attrs):
        if not attrs["prompts"] and not attrs["use_demo_prompts"]:
            raise serializers.ValidationError(
                {"prompts": ["Give at least one prompt, or set use_demo_prompts."]}
            )
        return attrs


class GenerationSerializer(serializers.ModelSerializer):
    model_version_name = serializers.CharField(source="model_version.name", read_only=True)

    class Meta:
        model = Generation
        fields = [
            "id",
            "model_version",
            "model_version_name",
            "prompt_index",
            "sample_index",
            "prompt_text",
            "text",
            "tokens_generated",
            "temperature",
            "top_p",
            "max_new_tokens",
            "seed",
            "sampler_backend",
            "sampler_version",
            "created_at",
        ]
        read_only_fields = fields


class RetrainSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    base_model = serializers.PrimaryKeyRelatedField(
        queryset=BaseModel.objects.all(),
        help_text="A local model, or one at another hosted provider than the job's.",
    )
    method = serializers.ChoiceField(
        choices=FineTuneJob.Method.choices, required=False,
        help_text="Default: the job's, unless the new provider cannot run it.",
    )  # fmt: skip
