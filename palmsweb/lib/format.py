"""Numbers as the pages print them, for code that builds text outside a template."""

from __future__ import annotations

import math


def format_p(p: float | None) -> str:
    """A p-value as the report prints it: "< 0.001", else three decimals; "—" for none."""
    if p is None or not isinstance(p, int | float) or not math.isfinite(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def format_signed(value: float | None, places: int = 2) -> str:
    """+0.45 / −0.30 (a real minus sign); "—" for none."""
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return "—"
    text = f"{abs(value):.{places}f}"
    return f"+{text}" if value > 0 else (f"−{text}" if value < 0 else text)
