"""Replaying a report from its export bundle (``manage.py replay_report bundle.zip``).

The bundle's ``manifest.json`` holds, under ``analysis``, the settings of the report's
analysis (seed, sizes, resamples, the row-order contract) and ``numbers``: every number of
the analysis, flattened to ``path → value`` by :func:`report_numbers`. A replay reads
``ratings.csv``, runs the same analysis (:func:`evaluation.report.table.run_analysis`) and
lists each number that differs (:func:`differences`): none on an unchanged bundle. A
pairwise study's bundle replays the same way from ``judgments.csv``
(:func:`evaluation.report.pairwise_exports.replay_numbers`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evaluation.report.table import bundle_rows, run_analysis
from palmsweb.lib.analysis import StudyAnalysis

LABEL_FIELDS = ("a", "b", "arm", "size_tag", "category", "rater", "level", "comparator")
ARM_FREE_FIELDS = ("n_ratings", "n_outputs", "n_prompts", "n_raters", "agreement", "raters")


class BundleError(Exception):
    pass


def _label(item: Any, index: int) -> str:
    """A readable key for one element of a tuple of results: its arms, category…"""
    if not dataclasses.is_dataclass(item):
        return str(index)
    parts = []
    for name in LABEL_FIELDS:
        value = getattr(item, name, None)
        if isinstance(value, tuple):
            value = "/".join(str(v) for v in value if v != "")
        if value not in (None, ""):
            parts.append(f"{name}={value}")
    return ",".join(parts) or str(index)


def _flatten(value: Any, path: str, out: dict) -> None:
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            _flatten(getattr(value, f.name), f"{path}.{f.name}" if path else f.name, out)
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):
            _flatten(value[key], f"{path}[{key}]", out)
    elif isinstance(value, (tuple, list)) and value and dataclasses.is_dataclass(value[0]):
        for i, item in enumerate(value):
            _flatten(item, f"{path}[{_label(item, i)}]", out)
    elif isinstance(value, (tuple, list)):
        out[path] = [_plain(v) for v in value]
    else:
        out[path] = _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def report_numbers(analysis: StudyAnalysis, *, include_arms: bool) -> dict[str, Any]:
    """Every number of the analysis as a flat ``path → value`` dict (JSON-safe). Arm-free:
    only counts, agreement and raters."""
    out: dict[str, Any] = {}
    if include_arms:
        _flatten(analysis, "", out)
    else:
        for name in ARM_FREE_FIELDS:
            _flatten(getattr(analysis, name), name, out)
    return out


def differences(recorded: Mapping[str, Any], replayed: Mapping[str, Any]) -> list[tuple]:
    """(path, recorded, replayed) for every number that is not identical."""
    return [
        (key, recorded.get(key), replayed.get(key))
        for key in sorted(set(recorded) | set(replayed))
        if recorded.get(key, KeyError) != replayed.get(key, KeyError)
    ]


def read_bundle(path: Path) -> tuple[dict, list[dict[str, str]]]:
    """The manifest and the ratings.csv (or judgments.csv) records of a study bundle."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = {n.rsplit("/", 1)[-1]: n for n in zf.namelist()}
            # A pairwise study's bundle holds judgments.csv in place of ratings.csv.
            rows = "judgments.csv" if "judgments.csv" in names else "ratings.csv"
            if "manifest.json" not in names or rows not in names:
                raise BundleError(f"{path} is not a study bundle (no manifest or ratings.csv).")
            manifest = json.loads(zf.read(names["manifest.json"]))
            text = zf.read(names[rows]).decode("utf-8")
    except zipfile.BadZipFile as exc:
        raise BundleError(f"{path} is not a zip file.") from exc
    if "analysis" not in manifest:
        raise BundleError("The bundle predates replayable reports: its manifest has no analysis.")
    return manifest, list(csv.DictReader(io.StringIO(text, newline="")))


def replay_bundle(path: Path) -> tuple[dict, dict, list[tuple]]:
    """(recorded numbers, replayed numbers, differences) for a bundle."""
    manifest, records = read_bundle(path)
    settings = manifest["analysis"]["settings"]
    if settings.get("kind") == "pairwise":
        from evaluation.report.pairwise_exports import replay_numbers

        recorded, replayed = manifest["analysis"]["numbers"], replay_numbers(records, settings)
        return recorded, replayed, differences(recorded, replayed)
    include_arms = settings["includes_arms"]
    _table, analysis = run_analysis(bundle_rows(records, include_arms=include_arms), settings)
    replayed = json.loads(json.dumps(report_numbers(analysis, include_arms=include_arms)))
    recorded = manifest["analysis"]["numbers"]
    return recorded, replayed, differences(recorded, replayed)
