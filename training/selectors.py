"""Training reads that are more than one queryset call: listings, job progress for display,
the loss curve as SVG geometry, and the PALMS demo evaluation prompts."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from django.conf import settings
from django.db.models import Count, QuerySet, Sum

from curation.services import PRESETS_DIR
from training.models import (
    BaseModel,
    FineTuneJob,
    Generation,
    JobStatus,
    ModelVersion,
    SamplingJob,
)

EVAL_PROMPTS_FILE = PRESETS_DIR / "palms_eval_prompts.jsonl"
MAX_CURVE_POINTS = 600  # a polyline this long already fills any screen


# --- listings -------------------------------------------------------------------------------


def base_model_list() -> QuerySet[BaseModel]:
    """Base models with how many model versions each has, in one query."""
    # Meta.ordering is dropped from GROUP BY queries, so it is repeated here.
    return BaseModel.objects.annotate(n_versions=Count("versions")).order_by(
        *BaseModel._meta.ordering
    )


def model_version_list() -> QuerySet[ModelVersion]:
    """Model versions with their base model and the fine-tune that made them (if any)."""
    return ModelVersion.objects.select_related("base_model", "finetune")


def finetune_list() -> QuerySet[FineTuneJob]:
    """Fine-tunes for the list page, without their biggest columns."""
    return FineTuneJob.objects.select_related(
        "base_model", "snapshot__dataset", "created_by", "result"
    ).defer("log", "loss_history", "snapshot__content")


def sampling_list() -> QuerySet[SamplingJob]:
    """Sampling jobs for the list page, with their output count, without the log (filter
    them with ``training.access.in_readable_profiles``)."""
    return (
        SamplingJob.objects.select_related("created_by")
        .annotate(n_generations=Count("generations", distinct=True))
        .prefetch_related("model_versions")
        .defer("log")
        .order_by(*SamplingJob._meta.ordering)
    )


def sampling_outputs(job: SamplingJob) -> QuerySet[Generation]:
    return job.generations.select_related("model_version")


# --- progress -------------------------------------------------------------------------------


def job_phase(job: FineTuneJob | SamplingJob) -> str:
    """What the job does now, in words: the worker's own phase while it runs."""
    if job.status == JobStatus.QUEUED:
        return "waiting for a worker on the gpu queue"
    if job.status == JobStatus.RUNNING:
        return job.phase or "starting"
    return ""


ASSUMED_TOKENS_PER_SECOND = 100.0  # the default model, batched, on two CPU cores


@dataclass(frozen=True)
class SamplingSpeed:
    tokens_per_second: float
    measured: bool  # False: no local sampling job has finished here yet; an assumption


def local_sampling_speed() -> SamplingSpeed:
    """Generated tokens per second of the latest finished sampling job of local models,
    from its start to its end (model loading included, as a new job will have it too)."""
    local = [BaseModel.Kind.PACKAGED, BaseModel.Kind.LOCAL_DIR]
    recent = SamplingJob.objects.filter(
        status=JobStatus.SUCCEEDED, started_at__isnull=False, finished_at__isnull=False
    ).order_by("-finished_at")[:5]
    for job in recent:
        if job.generations.exclude(model_version__base_model__kind__in=local).exists():
            continue  # a remote endpoint's speed says nothing about this machine
        tokens = job.generations.aggregate(total=Sum("tokens_generated"))["total"] or 0
        seconds = (job.finished_at - job.started_at).total_seconds()
        if tokens >= 100 and seconds > 0:
            return SamplingSpeed(tokens / seconds, measured=True)
    return SamplingSpeed(ASSUMED_TOKENS_PER_SECOND, measured=False)


def packaged_model_needs_conversion() -> bool:
    """Whether the next job on the packaged default model converts it first (~15 s)."""
    from training.engine.loading import default_model_converted

    return not default_model_converted(Path(settings.ARTIFACTS_DIR))


# --- the loss curve -------------------------------------------------------------------------


def _finite_history(history) -> list[tuple[float, float]]:
    points = []
    for entry in history or []:
        try:
            step, loss = float(entry[0]), float(entry[1])
        except (TypeError, ValueError, IndexError):
            continue
        if math.isfinite(step) and math.isfinite(loss):
            points.append((step, loss))
    points.sort(key=lambda point: point[0])
    return points


def _thin(points: list, limit: int) -> list:
    """Keep at most ``limit`` evenly spaced points, always the first and the last."""
    if len(points) <= limit:
        return points
    stride = (len(points) - 1) / (limit - 1)
    return [points[round(index * stride)] for index in range(limit)]


def loss_curve_svg_points(
    history, width: float, height: float, *, max_points: int = MAX_CURVE_POINTS, bounds=None
) -> list[tuple[float, float]]:
    """Map a loss history ``[[step, loss], ...]`` into a ``width`` × ``height`` SVG box.

    Steps run left to right across the full width; the lowest loss sits on the bottom edge
    and the highest on the top (SVG's y grows downwards). Entries that are not finite
    numbers are dropped; a flat curve is drawn across the middle; long histories are
    thinned to ``max_points``. ``bounds`` (lowest and highest step, lowest and highest
    loss) sets the box's range instead of the history's own, so two curves share axes.
    """
    points = _thin(_finite_history(history), max_points)
    if not points:
        return []
    step_low, step_high, loss_low, loss_high = bounds or _bounds(points)
    step_span, loss_span = step_high - step_low, loss_high - loss_low
    mapped = []
    for step, loss in points:
        x = (step - step_low) / step_span * width if step_span else 0.0
        y = height - (loss - loss_low) / loss_span * height if loss_span else height / 2
        mapped.append((round(x, 1), round(y, 1)))
    return mapped


@dataclass(frozen=True)
class Tick:
    position: float  # x for the step axis, y for the loss axis, in SVG units
    label: str


@dataclass(frozen=True)
class LossChart:
    """What the inline SVG of a loss curve needs: the plot box, the polyline and the ticks."""

    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    points: str = ""
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    last_step: float | None = None
    last_loss: float | None = None
    last_x: float = 0.0
    last_y: float = 0.0
    # The validation loss on the same axes, when the fine-tune measured one.
    validation_points: str = ""
    last_validation_step: float | None = None
    last_validation_loss: float | None = None
    best_validation_step: float | None = None
    best_validation_loss: float | None = None

    @property
    def right(self) -> int:
        return self.left + self.plot_width

    @property
    def bottom(self) -> int:
        return self.top + self.plot_height

    @property
    def center_x(self) -> float:
        return self.left + self.plot_width / 2

    @property
    def center_y(self) -> float:
        return self.top + self.plot_height / 2

    @property
    def has_curve(self) -> bool:
        return bool(self.points or self.validation_points)

    @property
    def vertices(self) -> list[tuple[float, float]]:
        """The curve's points, for markers where each one is a measurement."""
        return [tuple(map(float, pair.split(","))) for pair in self.points.split()]


def _loss_label(value: float) -> str:
    return f"{value:.3g}"


def loss_chart(history, *, validation=None, width: int = 640, height: int = 240) -> LossChart:
    """The loss curve of a fine-tune as SVG geometry, with three ticks on each axis; with
    ``validation`` (its validation loss history) both curves share the axes."""
    left, right, top, bottom = 72, 16, 12, 40  # room for tick labels like "0.00632"
    plot_width, plot_height = width - left - right, height - top - bottom
    box = {
        "width": width,
        "height": height,
        "left": left,
        "top": top,
        "plot_width": plot_width,
        "plot_height": plot_height,
    }
    data, checks = _finite_history(history), _finite_history(validation)
    if not data and not checks:
        return LossChart(**box)
    bounds = _bounds(data + checks)
    # Alone, the training curve keeps its own range, as it always has.
    mapped = loss_curve_svg_points(data, plot_width, plot_height, bounds=checks and bounds)
    checked = loss_curve_svg_points(checks, plot_width, plot_height, bounds=bounds)
    extra = {}
    if checks:
        extra = {
            "validation_points": _svg_points(checked, left, top),
            "last_validation_step": checks[-1][0],
            "last_validation_loss": checks[-1][1],
            "best_validation_step": min(checks, key=lambda point: point[1])[0],
            "best_validation_loss": min(loss for _, loss in checks),
        }
    if mapped:
        extra |= {
            "points": _svg_points(mapped, left, top),
            "last_step": data[-1][0],
            "last_loss": data[-1][1],
            "last_x": mapped[-1][0] + left,
            "last_y": mapped[-1][1] + top,
        }
    x_ticks, y_ticks = _ticks(bounds, data + checks, left, top, plot_width, plot_height)
    return LossChart(**box, x_ticks=x_ticks, y_ticks=y_ticks, **extra)


def _bounds(points: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    """(lowest step, highest step, lowest loss, highest loss) of ``points``."""
    steps = [step for step, _ in points]
    losses = [loss for _, loss in points]
    return min(steps), max(steps), min(losses), max(losses)


def _svg_points(mapped: list[tuple[float, float]], left: int, top: int) -> str:
    return " ".join(f"{x + left:g},{y + top:g}" for x, y in mapped)


def _ticks(bounds, points, left, top, plot_width, plot_height) -> tuple[list[Tick], list[Tick]]:
    """Three ticks on each axis (one where the range is a single value)."""
    step_low, step_high, loss_low, loss_high = bounds
    if step_high > step_low:
        middle = (step_low + step_high) / 2
        if step_high - step_low >= 2 and all(step.is_integer() for step, _ in points):
            middle = float(round(middle))  # whole steps get a whole-step tick
        x_ticks = [
            Tick(left + (v - step_low) / (step_high - step_low) * plot_width, f"{v:g}")
            for v in (step_low, middle, step_high)
        ]
    else:
        x_ticks = [Tick(left, f"{step_low:g}")]
    if loss_high > loss_low:
        y_values = [loss_low, (loss_low + loss_high) / 2, loss_high]
        y_ticks = [
            Tick(
                top + plot_height - (v - loss_low) / (loss_high - loss_low) * plot_height,
                _loss_label(v),
            )
            for v in y_values
        ]
    else:
        y_ticks = [Tick(top + plot_height / 2, _loss_label(loss_low))]
    return x_ticks, y_ticks


# --- prompts --------------------------------------------------------------------------------


@cache
def _eval_prompts() -> tuple[tuple[str, str], ...]:
    rows = []
    for line in EVAL_PROMPTS_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows.append((row["prompt"], row.get("category") or ""))
    return tuple(rows)


def palms_eval_prompts() -> list[dict]:
    """The 40 PALMS demo evaluation prompts as ``[{"text", "category"}, ...]``."""
    return [{"text": text, "category": category} for text, category in _eval_prompts()]


def persona_points(track: list[dict]) -> list[dict]:
    """A fine-tune's persona track with each point's shift from the starting weights."""
    if not track:
        return []
    start = track[0]["value"]
    return [point | {"shift": point["value"] - start} for point in track]


# --- sweeps: several validation curves on one chart --------------------------------------------

SERIES_COLOURS = ("#2b6cb0", "#d9822b", "#4a9d5b", "#9b4dca", "#c53030", "#718096")


@dataclass(frozen=True)
class ChartSeries:
    label: str
    points: str  # an SVG polyline's points
    colour: str


def overlay_chart(
    series: list[tuple[str, list]], *, width: int = 640, height: int = 260
) -> tuple[LossChart, list[ChartSeries]]:
    """Several loss histories (``[(label, [[step, loss], ...]), ...]``) on shared axes, as
    ``loss_chart`` draws one: the box and ticks, and each curve's polyline and colour."""
    histories = [(label, _finite_history(history)) for label, history in series]
    everything = [point for _, history in histories for point in history]
    box = loss_chart(everything, width=width, height=height)
    if not everything:
        return box, []
    bounds = _bounds(everything)
    curves = []
    for index, (label, history) in enumerate(histories):
        mapped = loss_curve_svg_points(history, box.plot_width, box.plot_height, bounds=bounds)
        if mapped:
            colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
            curves.append(ChartSeries(label, _svg_points(mapped, box.left, box.top), colour))
    return box, curves


def latest_screenings(limit: int = 20) -> list:
    """The most recent successful screening of each snapshot (newest first), for the
    fine-tune launch form: the risk of a snapshot's samples before it is trained on."""
    from training.models import ScreeningRun

    runs = ScreeningRun.objects.filter(status=JobStatus.SUCCEEDED).select_related(
        "snapshot__dataset", "base_model"
    )
    latest: dict[int, ScreeningRun] = {}
    for run in runs.order_by("-finished_at", "-pk")[: limit * 5]:
        latest.setdefault(run.snapshot_id, run)
    return list(latest.values())[:limit]
