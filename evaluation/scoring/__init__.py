"""Automatic scores: toxicity, co-occurrence, capability and the LLM judge."""
