"""What every scoring run shares: the domain error, how a run is claimed and ends (its
:class:`~palmsweb.lib.jobs.Lifecycle`), the reason a failed run shows, and the shipped presets
(``evaluation/presets``)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from evaluation.errors import EvaluationError
from evaluation.models import ScoringRun, Study
from palmsweb.lib.jobs import Lifecycle, readable_failure

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"


class ScoringError(EvaluationError):
    """A scoring rule refused the request; the message is shown as is."""


# How a scoring run is claimed and ends (palmsweb.lib.jobs): only a queued run is claimed; a
# running one is never claimed again (its worker's death is found by the sweep below).
SCORING = Lifecycle(model=ScoringRun, claimable=(ScoringRun.Status.QUEUED,))


def readable_scoring_failure(exc: BaseException) -> str:
    """The reason a failed scoring run shows: scorer and evaluation errors verbatim."""
    from palmsweb.lib.toxicity import ScorerConfigError

    return readable_failure(
        exc,
        expected=(ScorerConfigError, EvaluationError),
        out_of_memory="Out of memory while scoring.",
    )


@cache
def _preset(name: str) -> dict:
    return json.loads((PRESETS_DIR / name).read_text(encoding="utf-8"))


def shipped_preset(name: str) -> dict:
    """A preset file as shipped, a fresh copy the caller may change."""
    return json.loads(json.dumps(_preset(name)))


def latest_succeeded(study: Study, kind: str) -> ScoringRun | None:
    """The study's newest succeeded run of ``kind`` (what the report shows)."""
    return (
        study.scoring_runs.filter(kind=kind, status=ScoringRun.Status.SUCCEEDED)
        .order_by("-finished_at", "-pk")
        .first()
    )
