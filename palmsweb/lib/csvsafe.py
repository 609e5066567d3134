"""CSV that a spreadsheet opens as data, never as formulas (OWASP "CSV injection").

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is run as a
formula by Excel, LibreOffice and Google Sheets; a rater's comment or a model's output could
start that way. Every CSV palmsweb writes goes through :func:`writer` or :class:`DictWriter`,
which put an apostrophe in front of such a cell (the spreadsheet shows the text, without
the apostrophe). The escape is reversible: a cell that already starts with apostrophes
before a formula character gets one more, and :func:`unescape_cell` (used by the CSV
import) takes exactly one away, so a snapshot CSV imports back unchanged. JSONL and Parquet
are data formats, not spreadsheets: they keep the raw text.

Hand-written, because the csv module has no such option and the rule is four lines.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any

FORMULA_START = frozenset("=+-@\t\r")


def needs_escape(text: str) -> bool:
    """True when a spreadsheet would read ``text`` as a formula, or when ``text`` is an
    escaped cell (apostrophes before a formula character) that must survive a round trip."""
    bare = text.lstrip("'")
    return bare[:1] in FORMULA_START and bare != ""


def escape_cell(value: Any) -> Any:
    """The value to write: strings that would run as formulas get a leading apostrophe;
    numbers and everything else are returned as they are."""
    if isinstance(value, str) and needs_escape(value):
        return "'" + value
    return value


def unescape_cell(text: str) -> str:
    """Undo :func:`escape_cell` on a cell read back from one of our CSV files."""
    if text.startswith("'") and needs_escape(text[1:]):
        return text[1:]
    return text


class _SafeWriter:
    """csv.writer's interface, escaping every cell."""

    def __init__(self, stream, **kwargs):
        self._writer = csv.writer(stream, **kwargs)

    def writerow(self, row: Iterable[Any]):
        return self._writer.writerow([escape_cell(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(stream, **kwargs) -> _SafeWriter:
    """Like ``csv.writer``, with formula cells escaped."""
    return _SafeWriter(stream, **kwargs)


class DictWriter:
    """Like ``csv.DictWriter``, with formula cells escaped. Header names are the caller's
    own column names and are written as they are."""

    def __init__(self, stream, fieldnames, **kwargs):
        self._writer = csv.DictWriter(stream, fieldnames, **kwargs)

    def writeheader(self):
        return self._writer.writeheader()

    def writerow(self, row: dict):
        return self._writer.writerow({key: escape_cell(value) for key, value in row.items()})

    def writerows(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.writerow(row)
