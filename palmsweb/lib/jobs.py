"""The one job toolkit: how a background row (a fine-tune, a sampling job, a scoring run, an
export, a misalignment evaluation, a re-alignment run) is claimed by a worker, kept alive,
reports progress, and ends.

Every background kind describes its rules once, as a :class:`Lifecycle` next to its service
(which states a worker may claim, whether a dead worker's row may be claimed again, which
field carries the heartbeat), and then uses the same six verbs:

- :func:`claim` — a guarded update, so a task delivered twice runs once (STYLE.md, Celery);
- :func:`heartbeat` — a thread that keeps the row's heartbeat fresh while the worker is busy
  in code that cannot report (loading a model);
- :class:`ProgressWriter` — progress, phase and a throughput ETA, written at a bounded rate;
- :func:`finish` / :func:`fail` — only a running row ends, optionally fenced to its worker, so a
  late duplicate cannot overwrite the outcome of the run that won;
- :func:`sweep_stale` — rows whose worker died are failed with a reason a person can act on.

Model-free: the verbs take the model class from the Lifecycle and touch only the fields the
Lifecycle names plus the common ones (``status``, ``error``, ``started_at``, ``finished_at``,
and ``phase``/``eta_seconds``/``progress_*`` where the model has them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection
from django.db.models import F, Model, Q
from django.utils import timezone

from palmsweb.lib.progress import Throughput

PROGRESS_WRITE_SECONDS = 1.0  # progress reaches the database at most once a second


@dataclass(frozen=True)
class Lifecycle:
    """The claim and end rules of one kind of background row."""

    model: type[Model]
    claimable: tuple[str, ...] = ("queued",)
    running: str = "running"
    failed: str = "failed"
    # A RUNNING row whose heartbeat is older than this may be claimed again: its worker died
    # and the broker re-delivered the task. None: a running row is never re-claimed.
    reclaim_after: Callable[[], timedelta] | None = None
    heartbeat_field: str | None = None
    count_attempts: bool = False  # attempts = attempts + 1 on every claim

    def has_field(self, name: str) -> bool:
        return any(f.name == name for f in self.model._meta.concrete_fields)

    def rows(self, pk: int):
        return self.model._default_manager.filter(pk=pk)


def claim(kind: Lifecycle, pk: int, **fields) -> bool:
    """Move the row to RUNNING for this worker, exactly once; False when another worker has
    it or it already ended (a duplicate delivery then does nothing)."""
    now = timezone.now()
    claimable = Q(status__in=kind.claimable)
    if kind.reclaim_after is not None and kind.heartbeat_field:
        stale = {f"{kind.heartbeat_field}__lt": now - kind.reclaim_after()}
        claimable |= Q(status=kind.running, **stale)
    update = {"status": kind.running, "error": "", **fields}
    if kind.has_field("started_at"):  # exports and evaluations have no started_at
        update.setdefault("started_at", now)
    if kind.heartbeat_field:
        update[kind.heartbeat_field] = now
    if kind.count_attempts:
        update["attempts"] = F("attempts") + 1
    return bool(kind.rows(pk).filter(claimable).update(**update))


def finish(
    kind: Lifecycle, pk: int, status: str, *, error: str = "", fence: dict | None = None, **fields
) -> bool:
    """End a running row with ``status``; False when it was not running (or the fence, e.g.
    ``{"worker": me}``, says another worker owns it now)."""
    update = {"status": status, "error": error, "finished_at": timezone.now(), **fields}
    for name, cleared in (("phase", ""), ("eta_seconds", None)):
        if kind.has_field(name):
            update.setdefault(name, cleared)
    return bool(kind.rows(pk).filter(status=kind.running, **(fence or {})).update(**update))


def readable_failure(
    exc: BaseException,
    *,
    expected: tuple[type[BaseException], ...] = (),
    out_of_memory: str = "Out of memory.",
) -> str:
    """What a person reads on the job's page: a domain error's own words, running out of
    memory as ``out_of_memory`` (each kind gives its own advice), anything else as
    ``Type: message`` (never a traceback)."""
    if expected and isinstance(exc, expected):
        return str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return out_of_memory
    return f"{type(exc).__name__}: {exc}"


def fail(
    kind: Lifecycle,
    pk: int,
    exc: BaseException | str,
    *,
    expected: tuple[type[BaseException], ...] = (),
    fence: dict | None = None,
    **fields,
) -> bool:
    """End a running row as failed, with a readable reason (a string is used as it is)."""
    reason = exc if isinstance(exc, str) else readable_failure(exc, expected=expected)
    return finish(kind, pk, kind.failed, error=reason, fence=fence, **fields)


class ProgressWriter:
    """Writes a row's progress, phase and ETA: the phase at once, progress at most once per
    ``min_interval`` seconds. ``start`` items were done before this run (a resume), so the
    ETA measures this run's own speed."""

    def __init__(
        self,
        kind: Lifecycle,
        pk: int,
        *,
        total: int,
        start: int = 0,
        min_interval: float = PROGRESS_WRITE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kind, self.pk, self.total, self.start = kind, pk, total, start
        self.min_interval = min_interval
        self.clock = clock
        self.throughput = Throughput(max(total - start, 0), clock=clock)
        self._last = float("-inf")
        kind.rows(pk).update(progress_total=total, progress_done=start)

    def phase(self, text: str) -> None:
        self.kind.rows(self.pk).update(phase=text)

    def __call__(self, done: int, *, force: bool = False, phase: str = "") -> bool:
        """Record ``done`` items; True when it reached the database."""
        now = self.clock()
        if not force and now - self._last < self.min_interval:
            return False
        self._last = now
        fields = {
            "progress_done": min(done, self.total),
            "eta_seconds": self.throughput.eta(done - self.start),
            "progress_at": timezone.now(),
        }
        if phase:
            fields["phase"] = phase
        self.kind.rows(self.pk).update(**fields)
        return True


@contextmanager
def heartbeat(kind: Lifecycle, pk: int, *, every_seconds: float = 10) -> Iterator[None]:
    """Keep the row's heartbeat fresh from a thread while it runs, also while the worker is
    inside code that cannot report (a model loading or converting)."""
    if not kind.heartbeat_field:
        raise ValueError(f"{kind.model.__name__} has no heartbeat field")
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(every_seconds):
                kind.rows(pk).filter(status=kind.running).update(
                    **{kind.heartbeat_field: timezone.now()}
                )
        finally:
            connection.close()  # the thread's own connection

    thread = threading.Thread(target=beat, name=f"heartbeat-{kind.model.__name__}-{pk}")
    thread.daemon = True
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every_seconds + 5)


def sweep_stale(
    kind: Lifecycle,
    *,
    older_than: timedelta,
    error: str,
    by: str = "heartbeat_at",
    exclude: Q | None = None,
) -> int:
    """Fail every running row whose ``by`` timestamp is older than ``older_than``: its worker
    died. Returns how many."""
    rows = kind.model._default_manager.filter(
        status=kind.running, **{f"{by}__lt": timezone.now() - older_than}
    )
    if exclude is not None:
        rows = rows.exclude(exclude)
    update = {"status": kind.failed, "finished_at": timezone.now(), "error": error}
    if kind.has_field("phase"):
        update["phase"] = ""
    return rows.update(**update)
