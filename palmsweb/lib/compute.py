"""Compute and energy accounting for a job, and totals over several jobs.

A job's record is a plain dict (stored in a JSON field): the device type, name and count,
wall and device seconds, tokens, estimated FLOPs, energy and CO2e. FLOPs follow the usual
dense-transformer estimates (Kaplan et al. 2020): about 6 FLOPs per parameter per training
token (forward and backward) and 2 per parameter per generated token (forward only); a
scoring run that reads text with a local model counts 2 per parameter per token read. Where
no such estimate applies (a remote API did the work, or the scorer is not a transformer)
``flops`` is None and ``flops_note`` says why; totals add the estimates they have. CO2e is
the energy times the configured grid intensity (a setting: nothing is looked up online).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

TRAINING_FLOPS_PER_PARAMETER_TOKEN = 6
GENERATION_FLOPS_PER_PARAMETER_TOKEN = 2
KWH_PER_JOULE = 1 / 3.6e6


def training_flops(parameters: int, tokens: int) -> int:
    return TRAINING_FLOPS_PER_PARAMETER_TOKEN * parameters * tokens


def generation_flops(parameters: int, tokens: int) -> int:
    return GENERATION_FLOPS_PER_PARAMETER_TOKEN * parameters * tokens


def job_record(
    *, kind: str, device_type: str, device_name: str, device_count: int, wall_seconds: float,
    tokens: int, flops: int | None, energy_kwh: float, energy_method: str,
    energy_measured: bool, grid_g_per_kwh: float, flops_note: str = "",
) -> dict:  # fmt: skip
    """One job's accounting. ``energy_measured`` is False when the energy comes from a power
    model (TDP times load or time) rather than the hardware's own counters (RAPL, NVML).
    ``flops=None`` (with ``flops_note``) when no estimate applies."""
    return {
        "kind": kind,
        "device_type": device_type,
        "device_name": device_name,
        "device_count": device_count,
        "wall_seconds": round(wall_seconds, 3),
        "device_seconds": round(wall_seconds * device_count, 3),
        "tokens": tokens,
        "flops": flops,
        **({"flops_note": flops_note} if flops_note else {}),
        "energy_kwh": energy_kwh,
        "energy_method": energy_method,
        "energy_estimated": not energy_measured,
        "grid_g_per_kwh": grid_g_per_kwh,
        "co2e_kg": energy_kwh * grid_g_per_kwh / 1000,
    }


TOTALLED = ("wall_seconds", "device_seconds", "tokens", "flops", "energy_kwh", "co2e_kg")


def total(records: Iterable[dict]) -> dict:
    """The sum of several jobs' records (empty ones skipped); ``energy_estimated`` when any
    part was estimated, ``jobs`` how many were counted."""
    counted = [record for record in records if record]
    sums = {name: sum(record.get(name) or 0 for record in counted) for name in TOTALLED}
    estimated = any(record.get("energy_estimated", True) for record in counted)
    kinds = Counter(record.get("kind", "") for record in counted)
    return sums | {
        "jobs": len(counted),
        "energy_estimated": estimated,
        "jobs_by_kind": dict(sorted(kinds.items())),
        "flops_missing": sum(record.get("flops") is None for record in counted),
    }


def summary(record: dict) -> str:
    """One line for a page: "3.2 device-hours, 1.2e15 FLOPs, 0.41 kWh (estimated), 190 g
    CO2e"; "" for an empty record."""
    if not record:
        return ""
    hours = record.get("device_seconds", 0) / 3600
    energy = f"{record.get('energy_kwh', 0):.3g} kWh"
    if record.get("energy_estimated", True):
        energy += " (estimated)"
    co2e_g = record.get("co2e_kg", 0) * 1000
    flops = record.get("flops")
    flops_text = "FLOPs not estimated" if flops is None else f"{flops:.2g} FLOPs"
    if record.get("flops_missing"):  # a total with some jobs that have no estimate
        flops_text += f" ({record['flops_missing']} job(s) not estimated)"
    return f"{hours:.3g} device-hours, {flops_text}, {energy}, {co2e_g:.3g} g CO2e"


def for_page(record: dict) -> dict:
    """The record with the figures a page shows already written out; {} for none."""
    if not record:
        return {}
    per_token = {
        "fine-tune": "6 x parameters x tokens",
        "sampling": "2 x parameters x tokens",
        "scoring": "2 x parameters x tokens read",
    }
    flops = record.get("flops")
    if flops is None:
        flops_text, flops_rule = "not estimated", record.get("flops_note", "")
    else:
        flops_text, flops_rule = f"{flops:.3g}", per_token.get(record.get("kind", ""), "")
    return record | {
        "summary": summary(record),
        "flops_text": flops_text,
        "flops_rule": flops_rule,
        "co2e_g": f"{record.get('co2e_kg', 0) * 1000:.3g}",
        "energy_text": f"{record.get('energy_kwh', 0):.3g}",
    }
