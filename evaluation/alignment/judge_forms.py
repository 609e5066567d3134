"""The optional LLM-judge fields that the re-alignment and gate forms share (the misalignment
probe's own form asks for the judge always; these two ask only when *use judge* is ticked)."""

from __future__ import annotations

from django import forms

from evaluation.alignment.misalignment_views import MisalignmentEvalForm

_PROBE_FIELDS = MisalignmentEvalForm.base_fields


class OptionalJudgeForm(forms.Form):
    """Judge settings, required only with ``use_judge`` (the service checks them then).
    Subclasses declare ``use_judge`` with their own label; templates render these fields
    with ``evaluation/_judge_fields.html``."""

    n_samples = _PROBE_FIELDS["n_samples"]
    max_new_tokens = _PROBE_FIELDS["max_new_tokens"]
    judge_base_url = _PROBE_FIELDS["judge_base_url"]
    judge_model = _PROBE_FIELDS["judge_model"]
    judge_key_env = _PROBE_FIELDS["judge_key_env"]
    judge_logprobs = _PROBE_FIELDS["judge_logprobs"]
    coherence_min = _PROBE_FIELDS["coherence_min"]
    misaligned_below = _PROBE_FIELDS["misaligned_below"]

    JUDGE_FIELDS = (
        "judge_base_url", "judge_model", "judge_key_env", "judge_logprobs", "n_samples",
        "max_new_tokens", "coherence_min", "misaligned_below",
    )  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self.JUDGE_FIELDS:
            self.fields[name].required = False

    def judge(self) -> dict:
        if not self.cleaned_data["use_judge"]:
            return {}
        return {name: self.cleaned_data[name] for name in self.JUDGE_FIELDS}
