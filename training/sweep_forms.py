"""The sweep launch form: the grid as comma-separated values, plus the settings every run
shares. It validates input only; ``services.sweep_launch`` checks the rules."""

from __future__ import annotations

from django import forms

from curation.forms import SnapshotChoiceField
from training.forms import BaseModelChoiceField
from training.models import BaseModel, FineTuneJob
from training.services import HYPERPARAMETER_LIMITS, MAX_SWEEP_RUNS

SHARED = ("batch_size", "max_seq_len", "seed", "validation_share", "eval_every_steps",
          "keep_best_validation")  # fmt: skip


def _shared_field(name: str, label: str) -> forms.Field:
    """An optional field within the service's limits for ``name``."""
    kind, low, high = HYPERPARAMETER_LIMITS[name]
    if kind is bool:
        return forms.BooleanField(label=label, required=False)
    field = forms.FloatField if kind is float else forms.IntegerField
    return field(label=label, min_value=low, max_value=high, required=False)


def _numbers(text: str, cast, name: str) -> list:
    values = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    if not values:
        raise forms.ValidationError(f"Give at least one {name}.")
    try:
        return [cast(value) for value in values]
    except ValueError:
        raise forms.ValidationError(f"Give {name}s as numbers separated by commas.") from None


class SweepForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Blank: model × snapshot.")
    base_model = BaseModelChoiceField(
        queryset=BaseModel.objects.filter(kind__in=[BaseModel.Kind.PACKAGED,
                                                   BaseModel.Kind.LOCAL_DIR]),
        empty_label=None,
    )  # fmt: skip
    snapshot = SnapshotChoiceField(label="Training snapshot", empty_label=None)
    learning_rates = forms.CharField(
        label="Learning rates", max_length=200, help_text="Comma-separated, e.g. 2e-5, 5e-5, 1e-4."
    )
    epochs = forms.CharField(
        label="Epochs", max_length=100, help_text="Comma-separated, e.g. 1, 3."
    )
    methods = forms.MultipleChoiceField(
        choices=FineTuneJob.Method.choices, widget=forms.CheckboxSelectMultiple,
        initial=[FineTuneJob.Method.FULL],
    )  # fmt: skip
    max_runs = forms.IntegerField(
        min_value=1, max_value=MAX_SWEEP_RUNS, initial=8,
        help_text=f"The grid may hold at most this many runs (at most {MAX_SWEEP_RUNS}).",
    )  # fmt: skip
    validation_snapshot = SnapshotChoiceField(
        label="Validation snapshot", required=False, empty_label="None",
        help_text="Runs are ranked by their best validation loss on it; or hold out a share.",
    )  # fmt: skip
    validation_share = _shared_field("validation_share", "Held-out validation share")
    eval_every_steps = _shared_field("eval_every_steps", "Validate every N steps")
    keep_best_validation = _shared_field(
        "keep_best_validation", "Each run saves its best-validation checkpoint"
    )
    batch_size = _shared_field("batch_size", "Batch size")
    max_seq_len = _shared_field("max_seq_len", "Max sequence length (tokens)")
    seed = _shared_field("seed", "Seed")

    def clean_learning_rates(self) -> list[float]:
        return _numbers(self.cleaned_data["learning_rates"], float, "learning rate")

    def clean_epochs(self) -> list[int]:
        return _numbers(self.cleaned_data["epochs"], int, "epoch count")

    def grid(self) -> dict:
        data = self.cleaned_data
        return {"learning_rate": data["learning_rates"], "epochs": data["epochs"],
                "method": list(data["methods"])}  # fmt: skip

    def hyperparameters(self) -> dict:
        # An unticked box is "not asked", as a blank number is.
        return {n: self.cleaned_data[n] for n in SHARED
                if self.cleaned_data.get(n) not in (None, False)}  # fmt: skip
