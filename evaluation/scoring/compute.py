"""Compute and energy of a scoring run (``palmsweb.lib.compute`` records, kind "scoring").

What each kind counts:
- adherence: the arms' local models read the held-out set: 2 x parameters x tokens read;
- toxicity with the offline scorer: a linear model over words, not a transformer, so no
  FLOPs estimate; with Perspective or OpenAI moderation, and the LLM judge, a remote API did
  the work: no FLOPs and no tokens, and the energy is this worker's only (waiting on HTTP);
- capability: device, time and energy; its multiple-choice passes are not counted in tokens,
  so no FLOPs estimate.
- co-occurrence: the run samples through a sampling job, which has its own record (the
  study's cost counts it); the run's own record is the counting (part-of-speech tagging on
  the CPU with spaCy or a word list, not a transformer): device, time and energy, no FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from palmsweb.lib.compute import generation_flops, job_record

REMOTE_NOTE = "a remote API did the work; its machines are not counted"
LINEAR_NOTE = "the offline scorer is a linear model over words, not a transformer"
COOCCURRENCE_NOTE = (
    "the counting tags words on the CPU (spaCy or a word list), not a transformer; the "
    "completions' generation is in its sampling job's record"
)
CAPABILITY_NOTE = "not estimated for capability runs (multiple-choice passes are not counted)"


def scoring_meter(*, on_device: bool):
    """The energy meter a scoring run works under; ``on_device`` for runs that load a
    model (the worker's accelerator, if any), else the CPU."""
    from training.services import energy_meter

    return energy_meter(device=None if on_device else "cpu")


@dataclass(frozen=True)
class ModelPass:
    """One local model's reading of text in a run: its size, the tokens it read, where."""

    parameters: int
    tokens: int
    device: str


def scoring_record(reading, *, device: str = "cpu", tokens: int | None = None,
                   flops: int | None = None, flops_note: str = "",
                   remote: bool = False) -> dict:  # fmt: skip
    """One run's record from the meter's ``reading`` (None when the meter never ran)."""
    if reading is None:
        return {}
    cuda = device.startswith("cuda")
    method = reading.method + ("; this worker only" if remote else "")
    return job_record(
        kind="scoring", device_type="cuda" if cuda else "cpu",
        device_name=(reading.gpu_name if cuda else reading.cpu_name) or "", device_count=1,
        wall_seconds=reading.wall_seconds, tokens=tokens, flops=flops, flops_note=flops_note,
        energy_kwh=reading.kwh, energy_method=method, energy_measured=reading.measured,
        grid_g_per_kwh=settings.GRID_CARBON_INTENSITY_G_PER_KWH,
    )  # fmt: skip


def toxicity_record(reading, scorer: str) -> dict:
    remote = scorer != "offline"
    return scoring_record(reading, flops_note=REMOTE_NOTE if remote else LINEAR_NOTE,
                          remote=remote)  # fmt: skip


def cooccurrence_record(reading) -> dict:
    return scoring_record(reading, flops_note=COOCCURRENCE_NOTE)


def judge_record(reading) -> dict:
    return scoring_record(reading, flops_note=REMOTE_NOTE, remote=True)


def local_models_record(reading, passes: list[ModelPass], *, note: str = "") -> dict:
    """A run whose local models read text: tokens and 2 x N x tokens over the models (or no
    FLOPs, with ``note``, where the tokens are not all counted)."""
    device = passes[0].device if passes else "cpu"
    tokens = sum(p.tokens for p in passes)
    flops = None if note else sum(generation_flops(p.parameters, p.tokens) for p in passes)
    return scoring_record(reading, device=device, tokens=tokens, flops=flops, flops_note=note)


def version_parameters(version) -> int:
    return int(version.parameter_count or version.base_model.parameter_count or 0)


def study_cost_parts(study) -> tuple[list[int], list[dict]]:
    """What a study's cost adds to its fine-tunes: the sampling jobs (the study's own and
    its co-occurrence runs') and its scoring runs' records, in one query."""
    sampling_ids = [study.sampling_job_id] if study.sampling_job_id else []
    records = []
    for kind, options, compute in study.scoring_runs.values_list("kind", "options", "compute"):
        if kind == "cooccurrence" and options.get("sampling_job_id"):
            sampling_ids.append(options["sampling_job_id"])
        if compute:
            records.append(compute)
    return sampling_ids, records
