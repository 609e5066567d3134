"""Emergent misalignment evals, persona measurements and re-alignment."""
