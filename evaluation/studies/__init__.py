"""Prompt sets, studies, blinding and the blinded rating queue."""
