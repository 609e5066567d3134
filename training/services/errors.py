"""The training rules' exceptions: their messages are shown to the user as they are."""

from __future__ import annotations


class TrainingError(Exception):
    """A training rule refused the request; the message is shown as is."""


class ArmMismatchError(TrainingError):
    """The arm asked for is not the one the snapshot's dataset trains, and the mismatch was
    not confirmed (``allow_arm_mismatch``)."""



class HostedCutoffError(TrainingError):
    """The hosted provider takes no new fine-tuning jobs from its cut-off date on."""
