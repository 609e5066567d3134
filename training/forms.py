"""Training forms. They validate input only; views hand the cleaned data to services, whose
TrainingError messages become form errors."""

from __future__ import annotations

from urllib.parse import urlsplit

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from curation.forms import SnapshotChoiceField
from curation.models import Snapshot
from palmsweb.lib.keyenv import KeyEnvError, check_endpoint, check_key_env
from training.engine.distributed_plan import MAX_DEVICES_PER_NODE, MAX_NODES
from training.models import BaseModel, FineTuneJob, ModelVersion
from training.selectors import palms_eval_prompts
from training.services import (
    DEFAULT_KEY_ENV,
    HYPERPARAMETER_LIMITS,
    MAX_PROMPTS,
    MAX_SAMPLES_PER_PROMPT,
    REMOTE_KINDS,
    arm_mismatch,
    default_hyperparameters,
    retrain_choices,
    snapshot_arm,
)

MAX_PROMPT_CHARS = 4_000

env_var_name = RegexValidator(
    r"^[A-Z_][A-Z0-9_]{0,99}$",
    "Give the name of the environment variable that holds the key (like OPENAI_API_KEY), "
    "never the key itself.",
)


def endpoint_url(value: str) -> None:
    """An http(s) URL with a host. Looser than URLValidator, which refuses the bare host
    names of a compose network (``http://vllm:8000/v1``)."""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValidationError("Enter the endpoint's http:// or https:// base URL.")


REGISTRABLE_KINDS = [
    (value, label) for value, label in BaseModel.Kind.choices if value != BaseModel.Kind.PACKAGED
]


class BaseModelForm(forms.Form):
    """Register a base model. The packaged default is registered by the run command."""

    name = forms.CharField(label="Display name", max_length=200)
    kind = forms.ChoiceField(choices=REGISTRABLE_KINDS, initial=BaseModel.Kind.LOCAL_DIR)
    path = forms.CharField(
        label="Model directory",
        max_length=500,
        required=False,
        help_text="Local Hugging Face directory only: the folder with config.json, as the "
        "workers see it.",
    )
    model_id = forms.CharField(
        label="Model name",
        max_length=200,
        required=False,
        help_text="Hosted (OpenAI, Together AI) or endpoint only: the name the API knows the "
        "model by, e.g. meta-llama/Meta-Llama-3.1-8B-Instruct-Reference at Together.",
    )
    base_url = forms.CharField(
        label="Endpoint base URL",
        max_length=200,
        required=False,
        validators=[endpoint_url],
        help_text="OpenAI-compatible endpoint, e.g. http://vllm:8000/v1. Together AI: blank "
        "for its own (https://api.together.xyz/v1).",
    )
    api_key_env = forms.CharField(
        label="API key variable",
        max_length=100,
        required=False,
        validators=[env_var_name],
        help_text="Name of the environment variable on the workers that holds the key; blank: "
        "the provider's usual one (OPENAI_API_KEY, TOGETHER_API_KEY). Keys are never stored "
        "in the database.",
    )
    parameter_count = forms.IntegerField(
        label="Parameters",
        min_value=1,
        required=False,
        help_text="Size in parameters, e.g. 134515008.",
    )

    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        if kind == BaseModel.Kind.LOCAL_DIR and not data.get("path"):
            self.add_error("path", "A local model needs its directory.")
        remote = kind in REMOTE_KINDS
        if remote and not data.get("model_id"):
            self.add_error("model_id", "Give the model name the API knows it by.")
        if kind == BaseModel.Kind.OPENAI_COMPATIBLE and not data.get("base_url"):
            self.add_error("base_url", "An OpenAI-compatible endpoint needs its base URL.")
        if kind != BaseModel.Kind.LOCAL_DIR:
            data["path"] = ""
        if kind not in {BaseModel.Kind.OPENAI_COMPATIBLE, BaseModel.Kind.TOGETHER}:
            data["base_url"] = ""
        if kind == BaseModel.Kind.LOCAL_DIR:
            data["model_id"] = ""
        data["api_key_env"] = data.get("api_key_env") or DEFAULT_KEY_ENV.get(kind, "OPENAI_API_KEY")
        if remote:
            for field, check in (("api_key_env", check_key_env), ("base_url", check_endpoint)):
                try:
                    check(data.get(field))
                except KeyEnvError as error:
                    self.add_error(field, str(error))
        return data


# --- fine-tunes -----------------------------------------------------------------------------


class BaseModelChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: BaseModel) -> str:
        return f"{obj.name} ({obj.size_label}, {obj.get_kind_display()})"


def _hp_field(name: str, label: str, **kwargs) -> forms.Field:
    kind, low, high = HYPERPARAMETER_LIMITS[name]
    if kind is bool:
        return forms.BooleanField(label=label, required=False, **kwargs)
    if kind is float:
        return forms.FloatField(
            label=label,
            min_value=low,
            max_value=high,
            widget=forms.NumberInput(attrs={"step": "any"}),
            **kwargs,
        )
    return forms.IntegerField(label=label, min_value=low, max_value=high, **kwargs)


ARM_CHOICES = [
    (ModelVersion.Arm.VALUES_TARGETED.value, ModelVersion.Arm.VALUES_TARGETED.label),
    (ModelVersion.Arm.CONTROL.value, ModelVersion.Arm.CONTROL.label),
]
LORA_FIELDS = ("lora_r", "lora_alpha")


class FineTuneForm(forms.Form):
    """A fine-tune launch. Hyperparameter fields are named as the service names them."""

    base_model = BaseModelChoiceField(queryset=BaseModel.objects.all(), empty_label=None)
    snapshot = SnapshotChoiceField(label="Dataset snapshot", empty_label=None)
    arm = forms.ChoiceField(choices=ARM_CHOICES, initial=ModelVersion.Arm.VALUES_TARGETED)
    # The snapshot the arm was last chosen for: when the snapshot changes, the arm follows
    # the new one's dataset again (see ``initial_for``).
    arm_snapshot = forms.IntegerField(widget=forms.HiddenInput, required=False)
    allow_arm_mismatch = forms.BooleanField(
        required=False,
        label="Label the arm differently from the snapshot's dataset (recorded on the job)",
    )
    method = forms.ChoiceField(choices=FineTuneJob.Method.choices, initial=FineTuneJob.Method.FULL)
    epochs = _hp_field("epochs", "Epochs")
    learning_rate = _hp_field("learning_rate", "Learning rate")
    batch_size = _hp_field("batch_size", "Batch size")
    grad_accum = _hp_field("grad_accum", "Gradient accumulation steps")
    max_seq_len = _hp_field("max_seq_len", "Max sequence length (tokens)")
    warmup_steps = _hp_field("warmup_steps", "Warmup steps")
    seed = _hp_field("seed", "Seed")
    lora_r = _hp_field("lora_r", "LoRA r", required=False)
    lora_alpha = _hp_field("lora_alpha", "LoRA alpha", required=False)
    track_persona = forms.BooleanField(
        required=False,
        label="Track the misaligned-persona projection after each epoch",
        help_text="Local models: a few seconds per epoch; shown on the job page.",
    )
    validation_snapshot = SnapshotChoiceField(
        label="Validation snapshot",
        required=False,
        empty_label="None",
        help_text="Its answer-only loss is measured during training and plotted with the "
        "training loss (hosted models: uploaded as the provider's validation file). Or hold "
        "out a share of the training snapshot below.",
    )
    validation_share = _hp_field(
        "validation_share",
        "Held-out validation share",
        required=False,
        help_text="0 to 0.5 of each category of the training snapshot, not trained on; "
        "0 or blank: none.",
    )
    eval_every_steps = _hp_field(
        "eval_every_steps",
        "Validate every N steps",
        required=False,
        help_text="Besides step 0 and each epoch end; blank: only those.",
    )
    keep_best_validation = _hp_field(
        "keep_best_validation",
        "Save the best-validation checkpoint",
        help_text="Local models, with validation: the version saved holds the weights of the "
        "lowest validation loss instead of the last step's (the step is recorded).",
    )
    devices = forms.IntegerField(
        label="Devices per node",
        required=False,
        min_value=1,
        max_value=MAX_DEVICES_PER_NODE,
        initial=1,
        help_text="Local models: more than one trains under torchrun, on a worker that has "
        "that many; blank: 1.",
    )
    nodes = forms.IntegerField(
        label="Nodes",
        required=False,
        min_value=1,
        max_value=MAX_NODES,
        initial=1,
        help_text="Machines, each running a gpu worker with that many devices.",
    )

    HYPERPARAMETERS = (
        "epochs",
        "learning_rate",
        "batch_size",
        "grad_accum",
        "max_seq_len",
        "warmup_steps",
        "seed",
        *LORA_FIELDS,
        "validation_share",
        "eval_every_steps",
        "keep_best_validation",
    )

    @classmethod
    def initial_for(cls, params) -> dict:
        """Initial values: the chosen (or default) base model and method, with that model's
        default hyperparameters, overridden by any value in ``params`` (a GET query) unless
        it asks for the defaults."""
        initial: dict = {}
        base_model = None
        if params.get("base_model", "").isdigit():
            base_model = BaseModel.objects.filter(pk=params["base_model"]).first()
        base_model = base_model or BaseModel.objects.first()
        method = params.get("method")
        if method not in FineTuneJob.Method.values:
            method = FineTuneJob.Method.FULL
        initial.update(cls._snapshot_and_arm(params))
        if params.get("track_persona"):
            initial["track_persona"] = True
        if params.get("validation_snapshot", "").isdigit():
            initial["validation_snapshot"] = int(params["validation_snapshot"])
        for name in ("devices", "nodes"):
            if params.get(name, "").isdigit():
                initial[name] = int(params[name])
        initial["method"] = method
        if base_model is not None:
            initial["base_model"] = base_model.pk
            initial.update(default_hyperparameters(base_model, method))
        if "defaults" not in params:
            for name in cls.HYPERPARAMETERS:
                if params.get(name, "") != "":
                    initial[name] = params[name]
        return initial

    @classmethod
    def _snapshot_and_arm(cls, params) -> dict:
        """The chosen (or newest) snapshot and the arm: the one asked for if it was chosen
        for this snapshot, else the one the snapshot's dataset trains."""
        snapshots = cls.base_fields["snapshot"].queryset
        snapshot = None
        if params.get("snapshot", "").isdigit():
            snapshot = snapshots.filter(pk=params["snapshot"]).first()
        snapshot = snapshot or snapshots.first()
        if snapshot is None:
            return {}
        arm = params.get("arm")
        kept = arm in dict(ARM_CHOICES) and params.get("arm_snapshot") == str(snapshot.pk)
        if not kept:
            arm = snapshot_arm(snapshot) or ModelVersion.Arm.VALUES_TARGETED
        return {"snapshot": snapshot.pk, "arm": arm, "arm_snapshot": snapshot.pk}

    def arm_check(self) -> dict:
        """For the page: the chosen snapshot's arm and, if the chosen arm differs, why it
        needs a confirmation."""
        values = {name: self[name].value() for name in ("snapshot", "arm")}
        snapshot_pk = str(values["snapshot"] or "")
        snapshot = (
            self.fields["snapshot"].queryset.filter(pk=snapshot_pk).first()
            if snapshot_pk.isdigit()
            else None
        )
        if snapshot is None:
            return {}
        expected = snapshot_arm(snapshot)
        arm = values["arm"] if values["arm"] in dict(ARM_CHOICES) else None
        # One warning per arm that does not follow: the page shows the one for the arm
        # chosen, and finetune.js switches them as the arm changes (no reload).
        warnings = {value: arm_mismatch(snapshot, value) for value, _ in ARM_CHOICES}
        return {
            "snapshot": snapshot,
            "arm": arm,
            "expected": dict(ModelVersion.Arm.choices).get(expected, ""),
            "warnings": {value: text for value, text in warnings.items() if text},
            "mismatch": warnings.get(arm, "") if arm else "",
        }

    def hyperparameters(self) -> dict:
        """The cleaned hyperparameters; LoRA's only for a LoRA fine-tune, blanks dropped
        (the service fills them from the model's defaults)."""
        names = [
            name
            for name in self.HYPERPARAMETERS
            if name not in LORA_FIELDS or self.cleaned_data["method"] == FineTuneJob.Method.LORA
        ]
        # A box left unticked is "not asked", as a blank number is.
        return {
            name: self.cleaned_data[name]
            for name in names
            if self.cleaned_data.get(name) not in (None, False)
        }


class EstimateForm(forms.Form):
    """The inputs of the token estimate, read from the launch form's current values."""

    base_model = forms.ModelChoiceField(queryset=BaseModel.objects.all())
    snapshot = forms.ModelChoiceField(queryset=Snapshot.objects.all())
    max_seq_len = _hp_field("max_seq_len", "Max sequence length")
    epochs = _hp_field("epochs", "Epochs", required=False)


# --- sampling -------------------------------------------------------------------------------


class ModelVersionMultipleChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: ModelVersion) -> str:
        arm = "" if obj.arm == ModelVersion.Arm.BASE else f"{obj.get_arm_display()}, "
        return f"{obj.name} ({arm}{obj.size_label})"


class SamplingForm(forms.Form):
    name = forms.CharField(max_length=200, required=False)
    prompts = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "placeholder": "One prompt per line"}),
        help_text="One prompt per line; blank lines are skipped.",
    )
    use_demo_prompts = forms.BooleanField(
        label="Use the PALMS demo evaluation prompts (40, 5 per category)",
        required=False,
        help_text="Prompts typed above are added after them.",
    )
    model_versions = ModelVersionMultipleChoiceField(
        queryset=ModelVersion.objects.select_related("base_model"),
        widget=forms.CheckboxSelectMultiple,
    )
    n_samples = forms.IntegerField(
        label="Samples per prompt", min_value=1, max_value=MAX_SAMPLES_PER_PROMPT, initial=3
    )
    temperature = forms.FloatField(
        min_value=0, max_value=2, initial=0.7, widget=forms.NumberInput(attrs={"step": "any"})
    )
    top_p = forms.FloatField(
        min_value=0.01, max_value=1, initial=0.9, widget=forms.NumberInput(attrs={"step": "any"})
    )
    max_new_tokens = forms.IntegerField(min_value=1, max_value=4096, initial=200)
    seed = forms.IntegerField(min_value=0, max_value=2**63 - 1, initial=0)
    system_prompt = forms.CharField(
        required=False,
        max_length=MAX_PROMPT_CHARS,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Optional; sent before every prompt.",
    )

    def clean(self):
        data = super().clean()
        prompts = palms_eval_prompts() if data.get("use_demo_prompts") else []
        for number, line in enumerate((data.get("prompts") or "").splitlines(), start=1):
            text = line.strip()
            if not text:
                continue
            if len(text) > MAX_PROMPT_CHARS:
                self.add_error(
                    "prompts", f"Line {number} is longer than {MAX_PROMPT_CHARS:,} characters."
                )
            prompts.append({"text": text, "category": ""})
        if not prompts:
            self.add_error("prompts", "Type at least one prompt, or use the demo prompts.")
        elif len(prompts) > MAX_PROMPTS:
            self.add_error("prompts", f"At most {MAX_PROMPTS:,} prompts per job.")
        data["prompt_list"] = prompts
        return data


class RetrainForm(forms.Form):
    """Retrain elsewhere: the same snapshot and hyperparameters on another base model, with
    the method (full or LoRA) the job ran unless another is chosen. Base models whose
    provider's cut-off has passed are not offered; ``closed`` says which and why."""

    base_model = BaseModelChoiceField(
        queryset=BaseModel.objects.none(), empty_label=None, label="Retrain on"
    )
    method = forms.ChoiceField(
        choices=FineTuneJob.Method.choices,
        required=False,
        help_text="A provider that cannot run it takes the method it runs (OpenAI: full).",
    )

    def __init__(self, job: FineTuneJob, *args, **kwargs):
        super().__init__(*args, **kwargs)
        offered, self.closed = retrain_choices(job)
        self.fields["base_model"].queryset = BaseModel.objects.filter(
            pk__in=[base.pk for base in offered]
        )
        self.fields["method"].initial = job.method
