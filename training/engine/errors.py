"""Exceptions the engine raises; callers show ``str(error)`` to users as is."""

from __future__ import annotations


class EngineError(Exception):
    """A failure with a reason a person can act on (bad data, missing model, out of memory...)."""


class Cancelled(Exception):  # noqa: N818 - reads better at call sites than "CancelledError"
    """The caller's ``should_cancel()`` returned True; the work stopped cleanly."""

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)
