"""Recommended sampling settings per model size, each with the reason it was chosen. The
study form shows them beside its sampling fields and the base-model API reports the one
that applies; a study records whatever values it was opened with."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SamplingDefault:
    size: str  # the size range in words
    below: float | None  # parameters (exclusive); None: no upper bound
    temperature: float
    top_p: float
    max_new_tokens: int
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


SAMPLING_DEFAULTS = (
    SamplingDefault(
        "under 500M parameters", 500e6, 0.2, 0.9, 120,
        "Small models lose the thread quickly: at temperature 0.7 the raters of our 135M "
        "study (issue 16) called many outputs incoherent, and SmolLM2's own model card "
        "samples at 0.2 with top p 0.9. 120 new tokens is what palms_loop rated: longer "
        "outputs of a small model mostly repeat themselves and slow rating down.",
    ),
    SamplingDefault(
        "500M to 3B parameters", 3e9, 0.5, 0.9, 200,
        "Mid-sized models hold a paragraph together at moderate temperature; 200 tokens "
        "gives room for a short PALMS-style answer (about 150 words).",
    ),
    SamplingDefault(
        "3B parameters and more", None, 0.7, 0.9, 400,
        "Large models stay coherent at 0.7, which keeps the outputs varied across the "
        "samples of one prompt; 400 tokens leaves room for an answer as long as PALMS's "
        "longest (340 words).",
    ),
)  # fmt: skip


def sampling_default_for(parameter_count: int | None) -> SamplingDefault | None:
    """The recommendation for a model of this size (None when the size is unknown)."""
    if not parameter_count:
        return None
    for default in SAMPLING_DEFAULTS:
        if default.below is None or parameter_count < default.below:
            return default
    return None
