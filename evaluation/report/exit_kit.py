"""The hosted exit kit: one zip that keeps a study reportable after the provider retires
the hosted models it sampled.

Per hosted fine-tune (``finetune-<pk>/``): ``job.json`` (the spec: provider, base model,
hyperparameters, those the provider ran with in its own names, remote ids, lineage),
``events.log`` (the mirrored log), ``metrics.json`` (losses, the provider's checkpoints as
the job last mirrored them), ``snapshot.jsonl`` (the training file exactly as uploaded: a job
with validation uploaded its held-out examples apart, as ``validation.jsonl``, which is here
too, and ``job.json`` says which items they are), ``result.json`` (the resulting
model id and its shutdown date) and ``outputs.jsonl`` (every output already sampled from the
model, with the ratings of each closed study that rated it). Per hosted model sampled as is,
a base arm such as plain gpt-4o-mini (``model-version-<pk>/``): ``version.json`` and
``outputs.jsonl``. For every closed study with an arm on one of these models, its study
bundle (``studies/study-<pk>.zip``, the same bundle an export writes), which ``manage.py
replay_report`` replays; ``exit-kit.json`` lists it all with SHA-256 sums, and
``README.txt`` says in words what is there and what is not.

Ratings leave the app only once rating is over (:func:`exports.check_exportable`): an open
study's outputs are in the kit without ratings. Its ratings stay in the database, which the
model's shutdown does not touch; close it and write the kit again. A closed study that is
not unblinded is bundled without arms (as a blinded export is): unblind it and write the
kit again to keep which model wrote which output in its bundle.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from evaluation.errors import EvaluationError
from evaluation.models import Rating, Study, StudyOutput
from evaluation.report.exit_kit_readme import kit_readme, study_note
from evaluation.report.exports import write_bundle
from evaluation.report.replay import BundleError, replay_bundle
from evaluation.studies.blinding import rater_pseudonym
from training.models import FineTuneJob, Generation, ModelVersion
from training.services import (
    HOSTED_BACKENDS,
    HOSTED_KINDS,
    code_version,
    upload_data,
    version_shutdown,
)

MANIFEST = "exit-kit.json"
README = "README.txt"
KIND = "palmsweb hosted exit kit"


class ExitKitError(EvaluationError):
    pass


@dataclass(frozen=True)
class ExitKit:
    path: Path
    finetunes: int
    outputs: int
    studies: int
    sha256: str
    model_versions: int = 0


@dataclass(frozen=True)
class KitScope:
    """What a kit covers: hosted fine-tunes, and hosted models sampled as is (base arms)."""

    finetunes: list[FineTuneJob]
    base_versions: list[ModelVersion]

    @property
    def version_ids(self) -> list[int]:
        ids = [job.result_id for job in self.finetunes if job.result_id]
        return ids + [version.pk for version in self.base_versions]


def hosted_finetunes(*, job_ids: Iterable[int] | None = None, base_model_id: int | None = None):
    """The hosted fine-tunes a kit covers: all of them, or those asked for."""
    jobs = FineTuneJob.objects.filter(backend__in=HOSTED_BACKENDS).select_related(
        "base_model", "snapshot__dataset", "result", "retrained_from", "created_by",
        "validation_snapshot",
    )
    if job_ids is not None:
        jobs = jobs.filter(pk__in=list(job_ids))
    if base_model_id is not None:
        jobs = jobs.filter(base_model_id=base_model_id)
    return jobs.order_by("pk")


def hosted_base_versions(*, base_model_id: int | None = None):
    """Model versions that sample a hosted model as is (no fine-tune made them): a study's
    base arm on gpt-4o-mini shuts down with the model just as a fine-tune of it does."""
    versions = ModelVersion.objects.filter(
        base_model__kind__in=HOSTED_KINDS, finetune__isnull=True
    ).select_related("base_model")
    if base_model_id is not None:
        versions = versions.filter(base_model_id=base_model_id)
    return versions.order_by("pk")


def kit_scope(*, job_ids: Iterable[int] | None = None, base_model_id: int | None = None):
    """Every hosted model (no filter), one base model's fine-tunes and plain versions, or
    only the fine-tunes asked for."""
    jobs = list(hosted_finetunes(job_ids=job_ids, base_model_id=base_model_id))
    if job_ids is not None:
        return KitScope(jobs, [])
    return KitScope(jobs, list(hosted_base_versions(base_model_id=base_model_id)))


def kit_dir() -> Path:
    return Path(settings.ARTIFACTS_DIR) / "exit-kits"


def default_kit_path() -> Path:
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    return kit_dir() / f"exit-kit-{stamp}.zip"


def check_scope(scope: KitScope) -> None:
    """ExitKitError when the kit would hold nothing."""
    if not scope.finetunes and not scope.base_versions:
        raise ExitKitError(
            "There is no hosted fine-tune (nor hosted model sampled as is) to write an exit "
            "kit for."
        )


def _silent(text: str) -> None:
    pass


def write_exit_kit(scope: KitScope, path: Path, *, on_phase=_silent) -> ExitKit:
    """Write the kit of ``scope`` to ``path``; ExitKitError when it is empty. ``on_phase``
    hears each step (the background job shows it)."""
    check_scope(scope)
    path.parent.mkdir(parents=True, exist_ok=True)
    files: list[dict] = []
    outputs = 0
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        root = Path(tmp)
        for job in scope.finetunes:
            on_phase(f"writing fine-tune #{job.pk}")
            written, count = _write_finetune(job, root / f"finetune-{job.pk}")
            files += written
            outputs += count
        for version in scope.base_versions:
            on_phase(f"writing model version #{version.pk}")
            written, count = _write_base_version(version, root / f"model-version-{version.pk}")
            files += written
            outputs += count
        studies = _studies_of(scope.version_ids)
        for study in studies["closed"]:
            on_phase(f"writing the bundle of study #{study.pk}")
            bundle = root / "studies" / f"study-{study.pk}.zip"
            write_bundle(study, bundle, includes_arms=study.is_unblinded)
            files.append(_entry(root, bundle))
        on_phase("zipping the kit")
        (root / README).write_text(kit_readme(scope, studies))
        files.append(_entry(root, root / README))
        manifest = _manifest(scope, studies, files)
        (root / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        _zip(root, [MANIFEST, *(f["name"] for f in files)], path)
    digest = _sha256_of(path)
    return ExitKit(
        path, len(scope.finetunes), outputs, len(studies["closed"]), digest,
        model_versions=len(scope.base_versions),
    )  # fmt: skip


def _zip(root: Path, names: list[str], path: Path) -> None:
    """Zip through a ``.part`` file, so a reader never finds half a kit at ``path``."""
    part = path.with_suffix(".zip.part")
    with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            zf.write(root / name, arcname=name)
    part.replace(path)


def _sha256_of(file: Path) -> str:
    """Streamed: a kit and its study bundles can be large, never read whole into memory."""
    with file.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _entry(root: Path, file: Path) -> dict:
    return {
        "name": file.relative_to(root).as_posix(),
        "sha256": _sha256_of(file),
        "size": file.stat().st_size,
    }


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def _write_finetune(job: FineTuneJob, folder: Path) -> tuple[list[dict], int]:
    """One fine-tune's files; returns their manifest entries and the number of outputs."""
    folder.mkdir(parents=True)
    _write_json(folder / "job.json", job_spec(job))
    (folder / "events.log").write_text(job.log or "")
    _write_json(folder / "metrics.json", {
        "loss_history": job.loss_history,
        "validation_loss_history": job.validation_loss_history,
        "remote_checkpoints": job.provider_checkpoints,
    })  # fmt: skip
    names = ["job.json", "events.log", "metrics.json", "snapshot.jsonl", "result.json"]
    # The bytes the upload sent (the same function makes both, so they cannot diverge).
    uploaded = upload_data(job)
    (folder / "snapshot.jsonl").write_bytes(uploaded.training)
    if uploaded.validation is not None:
        (folder / "validation.jsonl").write_bytes(uploaded.validation)
        names.append("validation.jsonl")
    _write_json(folder / "result.json", _result(job))
    count = _write_outputs(folder / "outputs.jsonl", job.result_id)
    return [_entry(folder.parent, folder / n) for n in [*names, "outputs.jsonl"]], count


def _write_base_version(version: ModelVersion, folder: Path) -> tuple[list[dict], int]:
    """A hosted model sampled as is: what it was and how it was reached, and its outputs."""
    folder.mkdir(parents=True)
    _write_json(folder / "version.json", _base_version_spec(version))
    count = _write_outputs(folder / "outputs.jsonl", version.pk)
    return [_entry(folder.parent, folder / n) for n in ("version.json", "outputs.jsonl")], count


def _write_outputs(path: Path, version_id: int | None) -> int:
    count = 0
    with path.open("w") as out:
        for row in output_rows(version_id):
            out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            count += 1
    return count


def _snapshot_spec(job: FineTuneJob) -> dict:
    if job.is_dpo:
        return {"preference_snapshot_hash": job.preference_snapshot_hash,
                "source": job.preference_source, "pairs": len(job.preference_pairs)}  # fmt: skip
    return {
        "id": job.snapshot_id,
        "content_hash": job.snapshot.content_hash,
        "dataset": job.snapshot.dataset.name,
        "samples": job.snapshot.sample_count,
    }


def _validation_spec(job: FineTuneJob) -> dict:
    """The held-out data, uploaded as the provider's validation file (validation.jsonl):
    a validation snapshot, or ``held_out_items`` (positions in the snapshot's items) drawn by
    ``validation_share`` with the job's seed; nulls and [] without validation."""
    validation = job.validation_snapshot
    return {
        "validation_share": job.hyperparameters.get("validation_share"),
        "validation_snapshot": {"id": validation.pk, "content_hash": validation.content_hash,
                                "samples": validation.sample_count} if validation else None,
        "held_out_items": list(job.held_out_items),
        "validation_file": "validation.jsonl" if validation or job.held_out_items else None,
    }  # fmt: skip


def _base_model_spec(base) -> dict:
    """Where the model is served; the key's variable name, never the key."""
    return {
        "name": base.name,
        "kind": base.kind,
        "model_id": base.model_id,
        "base_url": base.base_url,
        "api_key_env": base.api_key_env,
    }


def _shutdown_spec(version: ModelVersion) -> dict:
    shutdown = version_shutdown(version)
    return {
        "shutdown_date": shutdown.on.isoformat() if shutdown else None,
        "shutdown_date_source": shutdown.source if shutdown else None,
    }


def _base_version_spec(version: ModelVersion) -> dict:
    return {
        "model_version": version.pk,
        "name": version.name,
        "arm": version.arm,
        "base_model": _base_model_spec(version.base_model),
        "remote_model_id": version.remote_model_id or version.base_model.model_id,
        "sampled_through": version.base_model.base_url or "the provider's default endpoint",
        **_shutdown_spec(version),
        "metadata": version.metadata,
    }


def job_spec(job: FineTuneJob) -> dict:
    """What relaunching the job needs, and where it ran."""
    return {
        "finetune": job.pk,
        "provider": job.backend,
        "provider_label": job.get_backend_display(),
        "base_model": _base_model_spec(job.base_model),
        "method": job.method,
        "hyperparameters": job.hyperparameters,
        # What the provider was sent, in its own names (and what it filled in): what ran.
        "provider_hyperparameters": job.provider_hyperparameters,
        "arm": job.arm,
        "arm_override": job.arm_override,
        "objective": job.objective,
        "snapshot": _snapshot_spec(job),
        **_validation_spec(job),
        "status": job.status,
        "error": job.error,
        "remote_job_id": job.remote_job_id,
        "remote_file_id": job.remote_file_id,
        "retrained_from": job.retrained_from_id,
        "retrained_as": list(job.retrained_as.values_list("pk", flat=True)),
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    }


def _result(job: FineTuneJob) -> dict:
    version = job.result
    if version is None:
        return {"model_version": None, "remote_model_id": None}
    return {
        "model_version": version.pk,
        "name": version.name,
        "remote_model_id": version.remote_model_id,
        "sampled_through": job.base_model.base_url or "the provider's default endpoint",
        **_shutdown_spec(version),
        "metadata": version.metadata,
    }


def output_rows(version_id: int | None):
    """Every output sampled from the model version, with the studies that used it and, for
    closed studies, each completed rating (raters by their per-study pseudonym)."""
    if version_id is None:
        return
    used = {}
    for output in StudyOutput.objects.filter(arm__model_version_id=version_id).select_related(
        "study"
    ):
        used.setdefault(output.generation_id, []).append(output)
    generations = Generation.objects.filter(model_version_id=version_id).order_by(
        "job_id", "prompt_index", "sample_index"
    )
    for generation in generations.iterator():
        yield {
            "sampling_job": generation.job_id,
            "prompt_index": generation.prompt_index,
            "sample_index": generation.sample_index,
            "prompt": generation.prompt_text,
            "text": generation.text,
            "tokens_generated": generation.tokens_generated,
            "temperature": generation.temperature,
            "top_p": generation.top_p,
            "max_new_tokens": generation.max_new_tokens,
            "seed": generation.seed,
            "sampler": generation.sampler,
            "created_at": generation.created_at,
            "studies": [_study_use(output) for output in used.get(generation.pk, [])],
        }


def _study_use(output: StudyOutput) -> dict:
    study = output.study
    closed = study.status == Study.Status.CLOSED
    ratings = None
    if closed:
        ratings = [
            {"rater": rater_pseudonym(study, r.rater_id), "score": r.score,
             "comment": r.comment, "completed_at": r.completed_at}
            for r in output.ratings.filter(status=Rating.Status.COMPLETED).order_by("pk")
        ]  # fmt: skip
    return {
        "study": study.pk,
        "study_name": study.name,
        "study_status": study.status,
        "output": output.public_id,
        "screening": output.screening,
        "ratings": ratings,
        "ratings_note": "" if closed else "The study is open: ratings leave once it closes.",
    }


def _studies_of(version_ids: list[int]) -> dict[str, list[Study]]:
    """The studies with an arm on one of the kit's models, closed and not."""
    studies = Study.objects.filter(arms__model_version_id__in=version_ids).distinct().order_by("pk")
    closed = [s for s in studies if s.status == Study.Status.CLOSED]
    return {"closed": closed, "open": [s for s in studies if s.status != Study.Status.CLOSED]}


def _manifest(scope: KitScope, studies: dict, files: list[dict]) -> dict:
    return {
        "kind": KIND,
        "generated_at": timezone.now().isoformat(),
        "code_version": code_version(),
        "finetunes": [
            {
                "finetune": job.pk,
                "provider": job.backend,
                "status": job.status,
                "remote_model_id": job.result.remote_model_id if job.result else None,
                "folder": f"finetune-{job.pk}/",
            }
            for job in scope.finetunes
        ],  # fmt: skip
        "model_versions": [
            {
                "model_version": version.pk,
                "kind": version.base_model.kind,
                "remote_model_id": version.remote_model_id or version.base_model.model_id,
                "folder": f"model-version-{version.pk}/",
            }
            for version in scope.base_versions
        ],  # fmt: skip
        "studies": [
            {
                "study": s.pk,
                "name": s.name,
                "bundle": f"studies/study-{s.pk}.zip",
                "includes_arms": s.is_unblinded,
                "note": study_note(s),
            }
            for s in studies["closed"]
        ],  # fmt: skip
        "open_studies": [
            {"study": s.pk, "name": s.name, "status": s.status, "note": study_note(s)}
            for s in studies["open"]
        ],
        "files": files,
        "replay": "python manage.py replay_report <this kit>.zip",
    }


# --- replaying -----------------------------------------------------------------------------


def is_exit_kit(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return MANIFEST in zf.namelist()
    except zipfile.BadZipFile:
        return False


def replay_exit_kit(path: Path) -> list[tuple[str, dict, dict, list[tuple]]]:
    """Replay every study bundle in the kit: (bundle name, recorded, replayed, differences)
    per study, as :func:`replay.replay_bundle` gives them."""
    with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory() as tmp:
        manifest = json.loads(zf.read(MANIFEST))
        if manifest.get("kind") != KIND:
            raise BundleError(f"{path} is not a hosted exit kit.")
        results = []
        for study in manifest["studies"]:
            bundle = Path(tmp) / Path(study["bundle"]).name
            bundle.write_bytes(zf.read(study["bundle"]))
            results.append((study["bundle"], *replay_bundle(bundle)))
    return results
