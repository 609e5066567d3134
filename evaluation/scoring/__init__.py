"""Automatic scores: toxicity, co-occurrence, capability and the LLM judge."""

from evaluation.scoring.runs import report_sections

__all__ = ["report_sections"]
