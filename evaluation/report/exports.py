"""Exports of a study's ratings (CSV, JSON Lines, Parquet) and the study bundle (a zip
with the three files, the HTML report, a manifest and SHA256SUMS).

Rows are streamed from a chunked queryset and written as they come, so memory stays flat
whatever the study's size; the SHA-256 of each file is computed while it is written.
Arms, model versions and snapshot hashes (which would tell the arms apart) appear only
in exports of an unblinded study (``Export.includes_arms``). Raters appear as a
pseudonym that is stable within a study and says nothing about the username.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Count, OuterRef, Q, Subquery
from django.utils import timezone

from evaluation.models import AutomaticScore, Export, Rating, Study, StudyOutput
from evaluation.studies.blinding import rater_pseudonym
from evaluation.studies.positions import frozen_numbers, position_records, profile_record
from palmsweb.lib import csvsafe
from palmsweb.lib.jobs import Lifecycle, claim, fail, finish, readable_failure, sweep_stale

log = logging.getLogger(__name__)

CHUNK_SIZE = 1_000
STALE_SECONDS = 2 * 3600  # a running export older than this lost its worker
EXTENSIONS = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet", "bundle": "zip"}
CONTENT_TYPES = {
    "csv": "text/csv",
    "jsonl": "application/jsonl",
    "parquet": "application/vnd.apache.parquet",
    "bundle": "application/zip",
}
# position_version: the category's position version frozen when the study opened.
BASE_COLUMNS = [
    "rater", "output_id", "prompt_id", "prompt", "category", "position_version", "output_text",
    "score", "comment", "display_position", "sample_index", "claimed_at", "completed_at",
    "temperature", "top_p", "max_new_tokens", "seed",
]  # fmt: skip
# The sampler (backend and version) is per model, so it names the arm as surely as the model
# does: it is exported with the arms, after unblinding only.
# arm_label: the arm's free label ("values-targeted + DPO"), blank for a role's plain arm.
ARM_COLUMNS = ["arm", "arm_label", "size_tag", "model_version", "snapshot_hash", "sampler"]
INT_COLUMNS = {"prompt_id", "score", "display_position", "sample_index", "max_new_tokens", "seed",
               "revisions", "position_version"}  # fmt: skip
FLOAT_COLUMNS = {"temperature", "top_p"}


class ExportError(Exception):
    pass


# --- helpers --------------------------------------------------------------------------------


def score_columns(study: Study) -> list[tuple[str, str, str]]:
    """(column name, metric, scorer) for every automatic score stored for the study."""
    pairs = (
        AutomaticScore.objects.filter(output__study=study)
        .values_list("metric", "scorer")
        .distinct()
        .order_by("metric", "scorer")
    )
    return [(f"auto_{metric}__{scorer}", metric, scorer) for metric, scorer in pairs]


def columns_for(study: Study, *, includes_arms: bool, scores=None) -> list[str]:
    scores = score_columns(study) if scores is None else scores
    return BASE_COLUMNS + (ARM_COLUMNS if includes_arms else []) + [name for name, _m, _s in scores]


def export_dir() -> Path:
    return Path(settings.ARTIFACTS_DIR) / "exports"


def export_path(export: Export) -> Path:
    return Path(export.path) if export.path else Path()


def content_type(export: Export) -> str:
    return CONTENT_TYPES.get(export.format, "application/octet-stream")


def b64_digest(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode() if hex_digest else ""


class HashingWriter(io.RawIOBase):
    """A write-only binary file that hashes and counts what passes through it."""

    def __init__(self, raw):
        self._raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        self.hash.update(data)
        self.size += len(data)
        self._raw.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._raw.flush()

    @property
    def hexdigest(self) -> str:
        return self.hash.hexdigest()


@dataclass(frozen=True)
class Written:
    path: Path
    sha256: str
    size: int
    rows: int


# --- rows -----------------------------------------------------------------------------------


def _rating_rows(study: Study):
    position = (
        Rating.objects.filter(study=study, rater=OuterRef("rater"))
        .filter(Q(claimed_at__lt=OuterRef("claimed_at")))
        .order_by()
        .values("rater")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        Rating.objects.filter(study=study, status=Rating.Status.COMPLETED)
        .exclude(output__screening=StudyOutput.Screening.EXCLUDED)
        .annotate(before=Subquery(position))
        .order_by("output__prompt__order", "output__prompt_id", "output_id", "claimed_at", "pk")
        .values(
            "rater_id",
            "output_id",
            "output__public_id",
            "output__prompt_id",
            "output__text",
            "output__prompt__text",
            "output__prompt__category__name",
            "output__prompt__category_id",
            "score",
            "comment",
            "before",
            "output__sample_index",
            "claimed_at",
            "completed_at",
            "output__generation__temperature",
            "output__generation__top_p",
            "output__generation__max_new_tokens",
            "output__generation__seed",
            "output__arm__arm",
            "output__arm__label",
            "output__arm__size_tag",
            "output__arm__model_version__name",
            "output__arm__model_version__metadata",
            "output__generation__sampler_backend",
            "output__generation__sampler_version",
        )
    )


def _chunks(iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in iterator:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def iter_row_chunks(
    study: Study, *, includes_arms: bool, chunk_size: int = CHUNK_SIZE, scores=None
) -> Iterator[list[dict]]:
    """Export rows in chunks of at most ``chunk_size``, read with ``.iterator()``."""
    scores = score_columns(study) if scores is None else scores
    names = {(metric, scorer): name for name, metric, scorer in scores}
    versions = frozen_numbers(study)
    rows = _rating_rows(study).iterator(chunk_size=chunk_size)
    for chunk in _chunks(rows, chunk_size):
        auto: dict[int, dict[str, float | None]] = {}
        if names:
            for output_id, metric, scorer, value in AutomaticScore.objects.filter(
                output_id__in={r["output_id"] for r in chunk}
            ).values_list("output_id", "metric", "scorer", "value"):
                auto.setdefault(output_id, {})[names[(metric, scorer)]] = value
        out = []
        for r in chunk:
            row = {
                "rater": rater_pseudonym(study, r["rater_id"]),
                "output_id": r["output__public_id"],
                "prompt_id": r["output__prompt_id"],
                "prompt": r["output__prompt__text"],
                "category": r["output__prompt__category__name"],
                "position_version": versions.get(r["output__prompt__category_id"]),
                "output_text": r["output__text"],
                "score": r["score"],
                "comment": r["comment"],
                "display_position": (r["before"] or 0) + 1,
                "sample_index": r["output__sample_index"],
                "claimed_at": r["claimed_at"].isoformat() if r["claimed_at"] else None,
                "completed_at": r["completed_at"].isoformat() if r["completed_at"] else None,
                "temperature": r["output__generation__temperature"],
                "top_p": r["output__generation__top_p"],
                "max_new_tokens": r["output__generation__max_new_tokens"],
                "seed": r["output__generation__seed"],
            }
            if includes_arms:
                meta = r["output__arm__model_version__metadata"] or {}
                row.update(
                    arm=r["output__arm__arm"],
                    arm_label=r["output__arm__label"],
                    size_tag=r["output__arm__size_tag"],
                    model_version=r["output__arm__model_version__name"],
                    snapshot_hash=meta.get("snapshot_hash"),
                    sampler=" ".join(filter(None, (r["output__generation__sampler_backend"],
                                                   r["output__generation__sampler_version"]))),
                )  # fmt: skip
            values = auto.get(r["output_id"], {})
            for name, _m, _s in scores:
                row[name] = values.get(name)
            out.append(row)
        yield out


# --- writers --------------------------------------------------------------------------------


def _write_csv(sink: HashingWriter, chunks, columns: list[str]) -> int:
    text = io.TextIOWrapper(sink, encoding="utf-8", newline="", write_through=True)
    writer = csvsafe.DictWriter(text, fieldnames=columns, extrasaction="raise")
    writer.writeheader()
    n = 0
    for chunk in chunks:
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in chunk)
        n += len(chunk)
    text.flush()
    text.detach()
    return n


def _write_jsonl(sink: HashingWriter, chunks, columns: list[str]) -> int:
    n = 0
    for chunk in chunks:
        sink.write(
            "".join(
                json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False) + "\n"
                for row in chunk
            ).encode()
        )
        n += len(chunk)
    return n


def _arrow_schema(columns: list[str]):
    import pyarrow as pa

    def kind(c):
        if c in INT_COLUMNS:
            return pa.int64()
        if c in FLOAT_COLUMNS or c.startswith("auto_"):
            return pa.float64()
        return pa.string()

    return pa.schema([(c, kind(c)) for c in columns])


def _write_parquet(sink: HashingWriter, chunks, columns: list[str]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema(columns)
    n = 0
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for chunk in chunks:  # one row group per chunk
            table = pa.Table.from_pydict(
                {c: [row.get(c) for row in chunk] for c in columns}, schema=schema
            )
            writer.write_table(table)
            n += len(chunk)
    return n


WRITERS = {"csv": _write_csv, "jsonl": _write_jsonl, "parquet": _write_parquet}


def write_ratings(
    study: Study, fmt: str, path: Path, *, includes_arms: bool, chunk_size: int = CHUNK_SIZE
) -> Written:
    """Write the ratings of ``study`` to ``path`` as ``fmt`` (csv, jsonl or parquet)."""
    if fmt not in WRITERS:
        raise ExportError(f"Unknown ratings format {fmt!r}.")
    scores = score_columns(study)
    columns = columns_for(study, includes_arms=includes_arms, scores=scores)
    chunks = iter_row_chunks(
        study, includes_arms=includes_arms, chunk_size=chunk_size, scores=scores
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw:
        sink = HashingWriter(raw)
        rows = WRITERS[fmt](sink, chunks, columns)
        sink.flush()
    return Written(path, sink.hexdigest, sink.size, rows)


def study_design(study: Study, *, includes_arms: bool) -> dict:
    """The study's design for a manifest: arms only when unblinded."""
    records = position_records(study)
    design = {
        "id": study.pk,
        "name": study.name,
        "status": study.status,
        "mode": study.mode,
        "prompt_set": study.prompt_set.name,
        "prompts": study.prompt_set.prompts.count(),
        "samples_per_prompt": study.samples_per_prompt,
        "raters_per_output": study.raters_per_output,
        "sampling": {
            "temperature": study.temperature,
            "top_p": study.top_p,
            "max_new_tokens": study.max_new_tokens,
            "seed": study.seed,
        },
        "rubric": list(study.rubric),
        "closed_at": study.closed_at.isoformat() if study.closed_at else None,
        "unblinded_at": study.unblinded_at.isoformat() if study.unblinded_at else None,
        "arm_count": study.arms.count(),
        # The position versions raters judged against, frozen when the study opened, and
        # the value profile (application context) they are positions of.
        "positions": [{k: p[k] for k in ("category", "version", "sha256")} for p in records],
        "profile": profile_record(study),
    }
    if includes_arms:
        design["arms"] = [
            {
                "arm": arm.arm,
                "label": arm.label,
                "size_tag": arm.size_tag,
                "model_version": arm.model_version.name,
                "snapshot_hash": (arm.model_version.metadata or {}).get("snapshot_hash"),
            }
            for arm in study.arms.select_related("model_version")
        ]
    return design


def _silent(phase: str) -> None:
    pass


def _write_positions(study: Study, path: Path) -> dict:
    """positions.json: category, version number, text and sha256 of each frozen position."""
    data = json.dumps(position_records(study), indent=2, ensure_ascii=False).encode()
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    return {"name": path.name, "sha256": digest, "size": len(data), "rows": None}


def _write_adherence(study: Study, path: Path) -> list[dict]:
    """adherence.json (bundles with arms): the held-out adherence section and, per arm,
    each held-out sample's answer NLL and token count; nothing without a succeeded run."""
    from evaluation.scoring import adherence_summary
    from evaluation.scoring.common import latest_succeeded

    run = latest_succeeded(study, "adherence")
    if run is None:
        return []
    labels = {arm.pk: str(arm.model_version) for arm in study.arms.select_related("model_version")}
    raw = {labels.get(int(pk), pk): {k: v for k, v in data.items() if k != "categories"}
           for pk, data in run.result.get("arms", {}).items()}  # fmt: skip
    body = {"section": adherence_summary(study, blinded=False), "per_sample": raw,
            "sample_categories": run.result.get("sample_categories", [])}  # fmt: skip
    data = json.dumps(body, indent=2, ensure_ascii=False, default=str).encode()
    path.write_bytes(data)
    return [{"name": path.name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
             "rows": None}]  # fmt: skip


def write_bundle(
    study: Study, path: Path, *, includes_arms: bool, user=None, on_phase=_silent
) -> Written:
    """The study bundle: ratings in three formats, the HTML report, manifest.json and
    SHA256SUMS, zipped. Rows counts the ratings. ``on_phase`` hears each step."""
    from evaluation.report.cost import study_cost
    from evaluation.report.document import render_report_document
    from evaluation.report.pairwise_exports import manifest_analysis, rows_writer
    from training.services import code_version

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        tmpdir = Path(tmp)
        files: list[dict] = []
        rows = 0
        stem, write_rows = rows_writer(study)
        for fmt in ("csv", "jsonl", "parquet"):
            on_phase(f"writing {stem}.{fmt}")
            written = write_rows(study, fmt, tmpdir / f"{stem}.{fmt}", includes_arms=includes_arms)
            rows = written.rows
            files.append(
                {
                    "name": written.path.name,
                    "sha256": written.sha256,
                    "size": written.size,
                    "rows": written.rows,
                }
            )
        mode = "arms" if includes_arms else "arm-free"
        on_phase("writing the HTML report")
        html = render_report_document(study, mode).encode()
        (tmpdir / "report.html").write_bytes(html)
        files.append(
            {
                "name": "report.html",
                "sha256": hashlib.sha256(html).hexdigest(),
                "size": len(html),
                "rows": None,
            }
        )
        files.append(_write_positions(study, tmpdir / "positions.json"))
        if includes_arms:
            files += _write_adherence(study, tmpdir / "adherence.json")
        manifest = {
            "kind": "palmsweb study bundle",
            "generated_at": timezone.now().isoformat(),
            "code_version": code_version(),
            "includes_arms": includes_arms,
            "study": study_design(study, includes_arms=includes_arms),
            "files": files,
            **manifest_analysis(study, mode, includes_arms=includes_arms),
            "cost": study_cost(study),  # one total, naming no arm
        }
        manifest_bytes = json.dumps(manifest, indent=2, ensure_ascii=False).encode()
        (tmpdir / "manifest.json").write_bytes(manifest_bytes)
        sums = [(f["sha256"], f["name"]) for f in files]
        sums.append((hashlib.sha256(manifest_bytes).hexdigest(), "manifest.json"))
        (tmpdir / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for h, n in sums))
        on_phase("zipping the bundle")
        with path.open("wb") as raw:
            sink = HashingWriter(raw)
            with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for name in [f["name"] for f in files] + ["manifest.json", "SHA256SUMS"]:
                    zf.write(tmpdir / name, arcname=f"study-{study.pk}/{name}")
            sink.flush()
    return Written(path, sink.hexdigest, sink.size, rows)


def replay_record(report) -> dict:
    """What ``manage.py replay_report`` needs besides ratings.csv: the analysis settings
    (seed, sizes, resamples, the row-order contract) and every number of the report."""
    return {
        "settings": report.settings,
        "numbers": report.numbers,
        "replay": "python manage.py replay_report <this bundle>.zip",
    }


def check_exportable(study: Study) -> None:
    """Ratings leave the app only once rating is over: while a study is open, its ratings
    next to output texts are a per-output score table that nobody outside the admins
    should hold before the study is closed and unblinded."""
    if study.status != Study.Status.CLOSED:
        raise ExportError("Ratings can be exported once the study is closed.")


def write_export(
    study: Study, fmt: str, path: Path, *, includes_arms: bool, on_phase=_silent
) -> Written:
    """Write any export format to ``path`` (through a ``.part`` file, renamed at the end).
    Closed studies only; arms only when ``includes_arms`` (an unblinded study).
    ``on_phase`` hears what is being written."""
    check_exportable(study)
    if includes_arms and not study.is_unblinded:
        raise ExportError("Arms are exported only once the study is unblinded.")
    part = path.with_name(path.name + ".part")
    try:
        if fmt == "bundle":
            written = write_bundle(study, part, includes_arms=includes_arms, on_phase=on_phase)
        else:
            from evaluation.report.pairwise_exports import rows_writer

            stem, write_rows = rows_writer(study)
            on_phase(f"writing the {stem} as {dict(Export.Format.choices)[fmt]}")
            written = write_rows(study, fmt, part, includes_arms=includes_arms)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return Written(path, written.sha256, written.size, written.rows)


# --- services -------------------------------------------------------------------------------


# How an export is claimed and ends (palmsweb.lib.jobs). Export has no started_at: the claim
# writes its time into created_at, and a running export whose created_at is older than
# STALE_SECONDS lost its worker (acks_late + reject_on_worker_lost re-deliver the task, and
# writing is idempotent), so it may be claimed again.
EXPORT = Lifecycle(
    model=Export,
    claimable=(Export.Status.QUEUED,),
    reclaim_after=lambda: timedelta(seconds=STALE_SECONDS),
    heartbeat_field="created_at",
)


@transaction.atomic
def export_create(*, study: Study, fmt: str, user=None) -> Export:
    """Record an export and queue it on the default queue once the transaction commits.
    Closed studies only; arms are included only when the study is unblinded now."""
    if fmt not in Export.Format.values:
        raise ExportError(f"Unknown format {fmt!r}.")
    check_exportable(study)
    export = Export.objects.create(
        study=study, format=fmt, includes_arms=study.is_unblinded, created_by=user
    )
    from evaluation.tasks import run_export

    run_export.delay_on_commit(export.pk)
    return export


def export_execute(export_id: int) -> Export | None:
    """Write a queued export (the Celery task calls this). Claims the row first, so a
    task delivered twice writes the file once; a missing row is a no-op."""
    if not claim(EXPORT, export_id):
        return Export.objects.filter(pk=export_id).first()
    export = Export.objects.select_related("study__prompt_set").get(pk=export_id)
    study = export.study
    name = f"study-{study.pk}-export-{export.pk}.{EXTENSIONS[export.format]}"
    path = export_dir() / f"study-{study.pk}" / name

    def on_phase(text: str) -> None:
        Export.objects.filter(pk=export_id).update(phase=text)

    try:
        written = write_export(
            study, export.format, path, includes_arms=export.includes_arms, on_phase=on_phase
        )
    except Exception as exc:
        log.exception("export %s failed", export_id)
        reason = readable_failure(exc, out_of_memory="Out of memory while writing the export.")
        fail(EXPORT, export_id, reason[:2000])
    else:
        finish(
            EXPORT,
            export_id,
            Export.Status.SUCCEEDED,
            path=str(written.path),
            sha256=written.sha256,
            size_bytes=written.size,
            row_count=written.rows,
        )
    return Export.objects.get(pk=export_id)


def exports_sweep_stale() -> int:
    """Mark exports left "running" by a dead worker as failed (periodic task)."""
    return sweep_stale(
        EXPORT,
        older_than=timedelta(seconds=STALE_SECONDS),
        by="created_at",
        error="The worker stopped before the export finished; start it again.",
    )
