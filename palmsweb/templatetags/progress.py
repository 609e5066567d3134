"""Template filters for job progress: ``{{ seconds|duration }}`` reads "4 min 05 s"."""

from __future__ import annotations

from django import template

from palmsweb.lib.progress import format_duration

register = template.Library()


@register.filter
def duration(seconds: float | None) -> str:
    return format_duration(seconds)
