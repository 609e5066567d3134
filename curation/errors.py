"""The exception every curation rule raises; its subclasses live next to their workflows."""

from __future__ import annotations


class CurationError(Exception):
    """A curation rule refused the action; the message is shown to the user as is."""
