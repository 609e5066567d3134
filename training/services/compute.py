"""Compute and energy of local jobs: the meter a worker runs a job under, and the record
stored on the job (``palmsweb.lib.compute``). Hosted fine-tunes and remote sampling run on
someone else's machines: they get no record."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain

from django.conf import settings
from django.db.models import Q, Sum

from palmsweb.lib.compute import generation_flops, job_record, training_flops
from training.models import BaseModel, FineTuneJob, Generation, ModelVersion, SamplingJob

LOCAL_KINDS = (BaseModel.Kind.LOCAL_DIR, BaseModel.Kind.PACKAGED)


def energy_meter(device_count: int = 1, *, device: str | None = None):
    """A CodeCarbon meter for a job on this worker (``training.engine.energy``); its fallback
    power is the configured watts per device times the devices the job uses. ``device``
    ("cpu" for a job that never touches an accelerator) skips asking torch, which a
    default-queue worker may not have."""
    from training.engine.energy import EnergyMeter

    if device is None:
        from training.engine.runtime import pick_device

        device = pick_device().type
    per_device = (
        settings.ENERGY_FALLBACK_WATTS_GPU
        if device == "cuda"
        else settings.ENERGY_FALLBACK_WATTS_CPU
    )
    return EnergyMeter(fallback_watts=per_device * device_count, device=device)


def _record(kind: str, reading, *, device: str, device_count: int, tokens: int | None,
            flops: int | None, flops_note: str = ""):  # fmt: skip
    cuda = device.startswith("cuda")
    return job_record(
        kind=kind, device_type="cuda" if cuda else "cpu",
        device_name=(reading.gpu_name if cuda else reading.cpu_name) or "",
        device_count=device_count, wall_seconds=reading.wall_seconds, tokens=tokens,
        flops=flops, flops_note=flops_note, energy_kwh=reading.kwh,
        energy_method=reading.method, energy_measured=reading.measured,
        grid_g_per_kwh=settings.GRID_CARBON_INTENSITY_G_PER_KWH,
    )  # fmt: skip


STOPPED_NOTE = "stopped before the end: the tokens it trained on were not counted"


def stopped_finetune_compute(job: FineTuneJob, meter) -> dict:
    """A local fine-tune that failed or was cancelled still held its devices: its wall
    time and energy are recorded. What it trained on is known only from a saved model, so
    its tokens are not counted (None) and no FLOPs are estimated (said in the record)."""
    if meter.reading is None:  # the meter never started
        return {}
    return _record(
        "fine-tune", meter.reading, device=meter.device, device_count=job.world_size,
        tokens=None, flops=None, flops_note=STOPPED_NOTE,
    )  # fmt: skip


def finetune_compute(job: FineTuneJob, version: ModelVersion, reading) -> dict:
    """A finished local fine-tune's record, from its saved metadata (tokens trained on, all
    ranks together; parameters) and the meter's reading."""
    meta = version.metadata
    tokens = int(meta.get("train_tokens") or 0)
    parameters = int(meta.get("parameters") or job.base_model.parameter_count or 0)
    return _record(
        "fine-tune", reading, device=str(meta.get("device", "cpu")),
        device_count=job.world_size, tokens=tokens, flops=training_flops(parameters, tokens),
    )  # fmt: skip


def sampling_compute(job: SamplingJob, reading, device: str) -> dict:
    """A finished sampling job's record over its local models' outputs (generated tokens;
    the prompts' tokens are not counted), or {} when every model was remote."""
    per_version = (
        Generation.objects.filter(job=job, model_version__base_model__kind__in=LOCAL_KINDS)
        .values("model_version")
        .annotate(tokens=Sum("tokens_generated"))
    )
    if not per_version:
        return {}
    versions = ModelVersion.objects.select_related("base_model").in_bulk(
        [row["model_version"] for row in per_version]
    )
    tokens = flops = 0
    for row in per_version:
        version = versions[row["model_version"]]
        parameters = version.parameter_count or version.base_model.parameter_count or 0
        tokens += row["tokens"] or 0
        flops += generation_flops(parameters, row["tokens"] or 0)
    return _record("sampling", reading, device=device, device_count=1, tokens=tokens,
                   flops=flops)  # fmt: skip


def lineage_finetunes(model_versions) -> set[int]:
    """The fine-tunes spent on making these versions (ids, or a query of ids), each once:
    the one that saved each version (as its result or as a checkpoint), then, version by
    version back to a base model, the fine-tunes that made the version each started from
    (an SFT before its DPO, a model before its re-alignment), and every run of a sweep one
    of them belonged to (the runs that lost were spent choosing the one promoted). One
    query per generation; the first takes ``model_versions`` as a subquery."""
    jobs: set[int] = set()
    seen: set[int] = set()
    frontier = model_versions
    while True:
        made = Q(result__in=frontier) | Q(checkpoints__model_version__in=frontier)
        sweeps = FineTuneJob.objects.filter(made, sweep__isnull=False).values("sweep")
        found = set(
            FineTuneJob.objects.filter(made | Q(sweep__in=sweeps)).values_list(
                "pk", "start_version_id"
            )
        )
        jobs |= {pk for pk, _ in found}
        if isinstance(frontier, set):
            seen |= frontier
        frontier = {start for _, start in found if start} - seen
        if not frontier:
            return jobs


def compute_total(*, model_versions, sampling_job_ids, extra: Iterable[dict] = ()) -> dict:
    """What the fine-tunes spent on ``model_versions`` (``lineage_finetunes``) and the
    sampling jobs cost together, with ``extra`` records (another app's jobs, such as
    scoring runs) added (``palmsweb.lib.compute.total`` plus a ``summary`` line); local
    jobs only, whatever their end: a failed job's record counts what it spent."""
    from palmsweb.lib.compute import summary, total

    finetune_ids = lineage_finetunes(model_versions)
    # No ordering: a compound statement (UNION) refuses ORDER BY in its parts.
    finetunes = FineTuneJob.objects.filter(pk__in=finetune_ids).order_by()
    sampling = SamplingJob.objects.filter(pk__in=[pk for pk in sampling_job_ids if pk]).order_by()
    rows = finetunes.values_list("compute").union(sampling.values_list("compute"), all=True)
    sums = total(chain((compute for (compute,) in rows), extra))
    return sums | {"summary": summary(sums) if sums["jobs"] else ""}
