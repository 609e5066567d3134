"""Formula cells in CSV are escaped (OWASP), reversibly; other cells are untouched."""

from __future__ import annotations

import csv
import io

import pytest

from palmsweb.lib import csvsafe

FORMULAS = ["=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\r=x"]


@pytest.mark.parametrize("cell", FORMULAS)
def test_formula_cells_get_an_apostrophe(cell):
    assert csvsafe.escape_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["plain", "", "a=b", " =1", "'quoted", 5, -3, 2.5, None])
def test_other_cells_are_written_as_they_are(cell):
    assert csvsafe.escape_cell(cell) == cell


@pytest.mark.parametrize("cell", [*FORMULAS, "'=1", "''@x", "'plain", "plain", ""])
def test_escaping_round_trips(cell):
    assert csvsafe.unescape_cell(csvsafe.escape_cell(cell)) == cell


def test_writers_escape_every_cell():
    out = io.StringIO()
    csvsafe.writer(out).writerow(["=A1", "ok", 3])
    writer = csvsafe.DictWriter(out, fieldnames=["a", "b"])
    writer.writeheader()
    writer.writerows([{"a": "@x", "b": -1}])
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows == [["'=A1", "ok", "3"], ["a", "b"], ["'@x", "-1"]]
