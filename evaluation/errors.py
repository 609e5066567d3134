"""Domain exceptions of evaluation: services raise them, views and the API turn them into
form errors or status codes."""


class EvaluationError(Exception):
    """A rule refused the request; the message is shown to the user as is."""


class StudyStateError(EvaluationError):
    """The study is not in a state that allows this."""


class RatingError(EvaluationError):
    """A rating action was refused (not claimed, already done, lease lost, …)."""


class OutputNotFound(RatingError):
    """No output has this public id."""


class NotARater(EvaluationError):
    """The user may not rate in this study."""


class StaleAnswerError(EvaluationError):
    """Someone saved a curator's answer after the version this edit started from."""

    def __init__(self, message: str, *, current):
        super().__init__(message)
        self.current = current
