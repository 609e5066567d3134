"""Progress figures every long job shows: durations in words, a throughput-based ETA, and
the seconds left of an estimate made a while ago (so a page can count it down between the
worker's updates)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime


def format_duration(seconds: float | None) -> str:
    """ "1 h 02 min", "4 min 05 s", "12 s"; empty when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def seconds_left(eta_seconds: float | None, estimated_at: datetime | None, now: datetime) -> (
    float | None
):
    """What is left of an estimate of ``eta_seconds`` made at ``estimated_at``: it keeps
    counting down between the worker's updates, and stops at 0 (never negative)."""
    if eta_seconds is None or not math.isfinite(eta_seconds):
        return None
    if estimated_at is None:
        return max(0.0, eta_seconds)
    return max(0.0, eta_seconds - (now - estimated_at).total_seconds())


class Throughput:
    """An ETA for ``total`` units of work from the rate measured so far.

    The first observation's rate counts from ``start`` (so a model load is in it); from
    the second on, the rate counts from the first observation, which leaves the one-off
    start-up time out once there is real throughput to measure.
    """

    def __init__(self, total: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.clock = clock
        self.started = clock()
        self._first: tuple[float, int] | None = None

    def eta(self, done: int) -> float | None:
        """Seconds left after ``done`` units; None until something is done."""
        now = self.clock()
        if done <= 0:
            return None
        if self._first is None:
            self._first = (now, done)
        first_at, first_done = self._first
        if done > first_done and now > first_at:
            rate = (done - first_done) / (now - first_at)
        else:
            rate = done / max(now - self.started, 1e-9)
        return max(0, self.total - done) / rate
