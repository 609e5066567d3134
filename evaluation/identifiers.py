"""Random identifiers of evaluation rows (kept apart from the models so they can be
imported by migrations and services alike)."""

from __future__ import annotations

import secrets


def new_public_id() -> str:
    """An opaque id for an output: random, so it says nothing about arm, model or order.
    Never starting with "-", which a spreadsheet would take for a formula (CSV exports
    would then carry it escaped, and it would no longer match the JSONL)."""
    while (public_id := secrets.token_urlsafe(12)).startswith("-"):
        pass
    return public_id


def new_order_salt() -> str:
    return secrets.token_hex(16)
