"""System checks on the operator's settings (run by manage.py, e.g. ``check --deploy``)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register

from palmsweb.lib.keyenv import NEVER_SENT


@register()
def key_envs_hold_no_app_secret(app_configs, **kwargs) -> list[Error]:
    """PALMSWEB_KEY_ENVS may not name palmsweb's own secrets (they are never sent anyway,
    but a list that names them shows a misunderstanding worth stopping for)."""
    named = [name for name in settings.PALMSWEB_KEY_ENVS if name.upper() in NEVER_SENT]
    if not named:
        return []
    return [
        Error(
            f"PALMSWEB_KEY_ENVS names {', '.join(named)}, which hold palmsweb's own secrets.",
            hint="List only the variables that hold API keys for model and judge endpoints.",
            id="palmsweb.E001",
        )
    ]
