"""Automatic scores: toxicity, co-occurrence, capability, held-out adherence and the LLM
judge.

The public names of the scoring modules, so that callers need not know which module of the
package holds each (``from evaluation import scoring``; ``scoring.scoring_run_start``).
"""

from evaluation.scoring.adherence import adherence_execute, default_adherence_snapshot
from evaluation.scoring.capability import capability_execute, capability_preset
from evaluation.scoring.common import SCORING, ScoringError
from evaluation.scoring.cooccurrence import (
    COOCCURRENCE_DEFAULTS,
    clean_cooccurrence_options,
    clean_template_sets,
    cooccurrence_advance,
    cooccurrence_advance_all,
    cooccurrence_preset,
)
from evaluation.scoring.runs import latest_runs, scoring_run_start, scoring_runs_sweep_stale
from evaluation.scoring.summaries import adherence_summary, judge_run_summary, report_sections
from evaluation.scoring.toxicity import available_scorers, build_scorer, toxicity_execute

__all__ = [
    "COOCCURRENCE_DEFAULTS",
    "SCORING",
    "ScoringError",
    "adherence_execute",
    "adherence_summary",
    "available_scorers",
    "build_scorer",
    "capability_execute",
    "capability_preset",
    "clean_cooccurrence_options",
    "clean_template_sets",
    "cooccurrence_advance",
    "cooccurrence_advance_all",
    "cooccurrence_preset",
    "default_adherence_snapshot",
    "judge_run_summary",
    "latest_runs",
    "report_sections",
    "scoring_run_start",
    "scoring_runs_sweep_stale",
    "toxicity_execute",
]
