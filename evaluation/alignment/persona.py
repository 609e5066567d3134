"""Persona measurements: how far a model version's activations on the probe questions lie
along its base model's misaligned-persona direction, beside the base model's own.

The direction and the probe preset are training's (``training.persona``); what evaluation
keeps is the measurement, a ``PersonaMeasurement`` row, taken for the local versions of a
misalignment evaluation, for a finished fine-tune, or per step of a re-alignment run. The
measuring runs on the gpu queue (the routes are in ``settings.CELERY_TASK_ROUTES``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from evaluation.alignment.misalignment import (
    MisalignmentError,
    local_versions,
    n_standard_probes,
)
from evaluation.models import MisalignmentEval, PersonaMeasurement
from training.models import FineTuneJob, JobStatus, ModelVersion
from training.persona import persona_direction_for, probe_preset

logger = logging.getLogger(__name__)


def persona_measure(
    *,
    model_version: ModelVersion,
    prompts: Sequence[str] | None = None,
    evaluation: MisalignmentEval | None = None,
    label: str = "",
    layer: int | None = None,
) -> PersonaMeasurement:
    """Mean projection of a local version's activations on the probe prompts, beside its
    base model's, on the direction computed on that base model."""
    from training.engine.persona import mean_projection
    from training.services import base_version, version_local_path

    base_model = model_version.base_model
    if not base_model.is_local:
        raise MisalignmentError(f"{model_version.name} is a remote model: no activations.")
    prompts = list(prompts or probe_preset()["probes"])
    base_path = version_local_path(base_version(base_model))
    direction = persona_direction_for(base_path, layer=layer)
    value = mean_projection(version_local_path(model_version), prompts, direction)
    base_value = mean_projection(base_path, prompts, direction)
    return PersonaMeasurement.objects.create(
        model_version=model_version,
        evaluation=evaluation,
        label=label or model_version.name,
        layer=direction.layer,
        value=value,
        base_value=base_value,
        n_prompts=len(prompts),
        direction={k: v for k, v in direction.meta.items() if k != "model_path"},
    )


def persona_execute(eval_id: int) -> int:
    """Measure every local version of an evaluation (the gpu task). A repeat replaces the
    evaluation's earlier measurements; a failure is recorded in ``result``."""
    evaluation = MisalignmentEval.objects.filter(pk=eval_id).first()
    if evaluation is None:
        return 0
    versions = local_versions(evaluation)
    # The standard probes only: a projection on the conditional variants would not compare
    # with the base model's or another evaluation's.
    prompts = evaluation.probes[: n_standard_probes(evaluation)]
    measured = []
    try:
        for version in versions:
            measured.append(
                persona_measure(model_version=version, prompts=prompts, evaluation=evaluation)
            )
    except Exception as exc:
        logger.exception("persona measurement of evaluation %s failed", eval_id)
        PersonaMeasurement.objects.filter(pk__in=[m.pk for m in measured]).delete()
        result = {**evaluation.result, "persona_error": f"{type(exc).__name__}: {exc}"}
        MisalignmentEval.objects.filter(pk=eval_id).update(result=result)
        return 0
    evaluation.persona_measurements.exclude(pk__in=[m.pk for m in measured]).delete()
    return len(measured)


def persona_track(*, finetune_job) -> PersonaMeasurement:
    """The persona projection of a finished local fine-tune's version against its base.

    Per-epoch tracking would need the fine-tune loop to keep epoch checkpoints, which it
    does not; this measures the end point, which is what the monitor compares across runs.
    """
    version = finetune_job.result
    if version is None:
        raise MisalignmentError("The fine-tune has not produced a model version yet.")
    return persona_measure(
        model_version=version, label=f"Fine-tune #{finetune_job.pk}: {version.name}"
    )


def finetune_persona_execute(job_id: int) -> PersonaMeasurement | None:
    """The gpu task's body: measure one fine-tune; a missing job is a no-op."""
    job = FineTuneJob.objects.select_related("result__base_model").filter(pk=job_id).first()
    if job is None or job.result is None:
        return None
    return persona_track(finetune_job=job)


def finetune_measurements():
    """Persona measurements taken outside an evaluation (fine-tunes), newest first."""
    return PersonaMeasurement.objects.filter(evaluation=None).select_related("model_version")


def measurable_finetunes():
    """Succeeded local fine-tunes, newest first: what the monitor can measure."""
    return (
        FineTuneJob.objects.filter(status=JobStatus.SUCCEEDED, result__isnull=False)
        .filter(backend=FineTuneJob.Backend.LOCAL)
        .select_related("result", "base_model")
        .order_by("-pk")[:50]
    )


def persona_measure_queue(*, evaluation: MisalignmentEval) -> None:
    """Queue (again) the persona measurement of the evaluation's local versions, once the
    request's transaction commits (the gpu route is in settings.CELERY_TASK_ROUTES)."""
    from evaluation import tasks

    tasks.measure_misalignment_persona.delay_on_commit(evaluation.pk)


def finetune_persona_queue(*, job: FineTuneJob) -> None:
    """Queue the persona measurement of a finished local fine-tune against its base."""
    from evaluation import tasks

    if job.result_id is None or job.backend != FineTuneJob.Backend.LOCAL:
        raise MisalignmentError("Only a finished local fine-tune can be measured.")
    tasks.measure_finetune_persona.delay_on_commit(job.pk)
