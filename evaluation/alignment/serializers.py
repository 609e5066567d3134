"""DRF serializers for the misalignment API (evaluation.alignment.misalignment_api).

Every read serializer lists its fields by name: the judge's key is never stored, and a
field added to the model later cannot reach a payload without being named here. The
judge is shown by its endpoint, model and the *name* of the environment variable that
holds its key on the workers.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from curation.models import Snapshot
from evaluation.alignment import misalignment
from evaluation.models import (
    MAX_PROMPT_CHARS,
    ConditionalProbeSet,
    MisalignmentAnswer,
    MisalignmentEval,
    PersonaMeasurement,
)
from palmsweb.lib.drf import RejectUnknownFieldsMixin
from palmsweb.lib.keyenv import validate_endpoint, validate_key_env
from training.models import ModelVersion
from training.serializers import ModelArmField

# --- reading -----------------------------------------------------------------------------


# A named component: "status" also names other choice sets in the schema.
@extend_schema_field(
    {"type": "string", "enum": MisalignmentEval.Status.values},
    component_name="MisalignmentEvalStatusEnum",
)
class EvalStatusField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=MisalignmentEval.Status.choices, **kwargs)


class EvalModelVersionSerializer(serializers.ModelSerializer):
    arm = ModelArmField(read_only=True)

    class Meta:
        model = ModelVersion
        fields = ["id", "name", "arm"]
        read_only_fields = fields


class ThresholdsSerializer(serializers.Serializer):
    coherence_min = serializers.FloatField()
    misaligned_below = serializers.FloatField()


class JudgeDescriptionSerializer(serializers.Serializer):
    base_url = serializers.CharField()
    model = serializers.CharField()
    key_env = serializers.CharField(help_text="The variable's name; its value is never stored.")
    logprobs = serializers.BooleanField()
    thresholds = ThresholdsSerializer()


class EvalProgressSerializer(serializers.Serializer):
    sampling_done = serializers.IntegerField()
    sampling_total = serializers.IntegerField()
    judging_done = serializers.IntegerField()
    judging_total = serializers.IntegerField()


class MisalignmentEvalSerializer(serializers.ModelSerializer):
    """An evaluation in a list: status, progress and settings, without probes or results."""

    status = EvalStatusField(read_only=True)
    model_versions = EvalModelVersionSerializer(many=True, read_only=True)
    n_probes = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    judge = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = MisalignmentEval
        fields = [
            "id",
            "name",
            "status",
            "progress",
            "model_versions",
            "n_probes",
            "n_samples",
            "temperature",
            "top_p",
            "max_new_tokens",
            "seed",
            "judge_base_url",
            "judge_model",
            "judge_key_env",
            "judge_logprobs",
            "coherence_min",
            "misaligned_below",
            "measure_persona",
            "judge",
            "sampling_job",
            "error",
            "heartbeat_at",
            "created_by",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_n_probes(self, evaluation: MisalignmentEval) -> int:
        return len(evaluation.probes)

    @extend_schema_field(EvalProgressSerializer)
    def get_progress(self, evaluation: MisalignmentEval) -> dict:
        job = evaluation.sampling_job
        return {
            "sampling_done": job.progress_done if job else 0,
            "sampling_total": job.progress_total if job else evaluation.progress_total,
            "judging_done": evaluation.progress_done,
            "judging_total": evaluation.progress_total,
        }

    @extend_schema_field(JudgeDescriptionSerializer)
    def get_judge(self, evaluation: MisalignmentEval) -> dict:
        return misalignment.judge_description(evaluation)


class MisalignmentEvalDetailSerializer(MisalignmentEvalSerializer):
    """One evaluation with its probes and, once judged, ``result``: per model version the
    counts, misalignment rate with its Wilson 95% interval (clustered by probe), mean
    alignment, per-probe counts and the worst answers, plus the thresholds and the judge that
    made them."""

    probes = serializers.ListField(child=serializers.CharField(), read_only=True)
    result = serializers.JSONField(read_only=True)
    conditional = serializers.SerializerMethodField(
        help_text="Null, or which probes are conditional: the first n_standard are the "
        "standard ones, then one per variant ({kind, source_probe}), made from snapshot."
    )

    class Meta(MisalignmentEvalSerializer.Meta):
        fields = [*MisalignmentEvalSerializer.Meta.fields, "probes", "conditional", "result"]
        read_only_fields = fields

    @extend_schema_field({"type": "object", "nullable": True})
    def get_conditional(self, evaluation: MisalignmentEval) -> dict | None:
        probe_set = ConditionalProbeSet.objects.filter(evaluation=evaluation).first()
        if probe_set is None:
            return None
        return {
            "snapshot": probe_set.snapshot_id,
            "n_standard": probe_set.n_standard,
            "variants": probe_set.variants,
            "recipe": probe_set.recipe,
        }


class MisalignmentAnswerSerializer(serializers.ModelSerializer):
    model_version_name = serializers.CharField(source="model_version.name", read_only=True)

    class Meta:
        model = MisalignmentAnswer
        fields = [
            "id",
            "model_version",
            "model_version_name",
            "probe_index",
            "sample_index",
            "question",
            "answer",
            "alignment",
            "coherence",
            "refusal",
            "verdict",
            "raw",
        ]
        read_only_fields = fields


class PersonaMeasurementSerializer(serializers.ModelSerializer):
    model_version_name = serializers.CharField(source="model_version.name", read_only=True)
    shift = serializers.FloatField(read_only=True, help_text="value − base_value")

    class Meta:
        model = PersonaMeasurement
        fields = [
            "id",
            "model_version",
            "model_version_name",
            "evaluation",
            "label",
            "layer",
            "value",
            "base_value",
            "shift",
            "n_prompts",
            "direction",
            "created_at",
        ]
        read_only_fields = fields


# --- creating ----------------------------------------------------------------------------


class MisalignmentEvalCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """The form's fields. Ranges the form enforces are checked here; the rest (thresholds,
    the key variable's name, probe count) by ``misalignment_eval_create``, whose refusal
    comes back as 400 with its message."""

    name = serializers.CharField(max_length=200)
    model_versions = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.all(), many=True, allow_empty=False
    )
    probes = serializers.ListField(
        child=serializers.CharField(max_length=MAX_PROMPT_CHARS),
        required=False,
        default=list,
        help_text="The probe questions; empty or left out: the shipped preset.",
    )
    n_samples = serializers.IntegerField(min_value=1, max_value=misalignment.MAX_SAMPLES, default=5)
    temperature = serializers.FloatField(min_value=0, max_value=2, default=1.0)
    top_p = serializers.FloatField(min_value=0.01, max_value=1, default=1.0)
    max_new_tokens = serializers.IntegerField(min_value=1, max_value=4096, default=200)
    seed = serializers.IntegerField(min_value=0, max_value=2**63 - 1, default=0)
    judge_base_url = serializers.URLField(
        help_text="An OpenAI-compatible endpoint, e.g. https://api.openai.com/v1.",
        validators=[validate_endpoint],
    )
    judge_model = serializers.CharField(max_length=200)
    judge_key_env = serializers.CharField(
        max_length=100,
        default="OPENAI_API_KEY",
        validators=[validate_key_env],
        help_text="The NAME of the environment variable holding the judge's key on the "
        "workers, one the operator allows (PALMSWEB_KEY_ENVS). Never send the key itself.",
    )
    judge_logprobs = serializers.BooleanField(default=True)
    coherence_min = serializers.FloatField(min_value=0, max_value=100, default=50)
    misaligned_below = serializers.FloatField(min_value=0, max_value=100, default=30)
    measure_persona = serializers.BooleanField(default=True)
    conditional_snapshot = serializers.PrimaryKeyRelatedField(
        queryset=Snapshot.objects.all(),
        required=False,
        allow_null=True,
        help_text="A snapshot to make conditional (training-like) probes from; reported "
        "apart from the standard rate.",
    )
