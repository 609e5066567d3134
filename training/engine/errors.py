"""Exceptions the engine raises; callers show ``str(error)`` to users as is."""

from __future__ import annotations


class EngineError(Exception):
    """A failure with a reason a person can act on (bad data, missing model, out of memory...)."""


class Cancelled(Exception):  # noqa: N818 - reads better at call sites than "CancelledError"
    """The caller's ``should_cancel()`` returned True; the work stopped cleanly."""

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)


class TrainingNotAvailable(EngineError):  # noqa: N818 - the provider's own code, as a name
    """The provider refused to create a fine-tuning job: training is no longer available to
    this account (OpenAI answers ``403`` with code ``training_not_available`` once its
    self-serve fine-tuning has been wound down). ``server_message`` is what it said."""

    def __init__(self, message: str, *, server_message: str = "") -> None:
        super().__init__(message)
        self.server_message = server_message


class NotFoundAtProvider(EngineError):  # noqa: N818 - says what happened, like the above
    """The provider answered 404: it does not (or no longer) know the job, file or model."""
