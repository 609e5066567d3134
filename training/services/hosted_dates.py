"""Hosted providers' dates: from when a provider takes no new fine-tuning jobs, and when a
hosted model, with every model fine-tuned from it, shuts down.

The dates are settings (``HOSTED_PROVIDER_DATES``), keyed by provider, so a moved date or a
new provider is configuration, not code. Which provider serves a base model is decided in
one place, :func:`provider_of`. "Today" is :func:`today`, which tests move with the
``HOSTED_DATES_TODAY`` setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from training.models import BaseModel, ModelVersion
from training.services.errors import HostedCutoffError

# Where a version's shutdown date came from.
FROM_PROVIDER = "provider"  # the provider's model listing, read when the fine-tune succeeded
FROM_SETTINGS = "configured"  # HOSTED_PROVIDER_DATES, by the model's family
# A dated snapshot of a family: "gpt-4o-mini-2024-07-18" is of "gpt-4o-mini".
SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")
PROVIDER_FOR_KIND = {BaseModel.Kind.OPENAI: "openai", BaseModel.Kind.TOGETHER: "together"}


def today() -> date:
    """The day the cut-off and shutdown dates are compared with."""
    fixed = getattr(settings, "HOSTED_DATES_TODAY", None)
    return _parse_date(fixed, "HOSTED_DATES_TODAY") if fixed else timezone.localdate()


def provider_of(base_model: BaseModel) -> str | None:
    """The hosted provider that fine-tunes and serves ``base_model`` (None: not hosted, or
    a provider with no dates configured)."""
    return PROVIDER_FOR_KIND.get(base_model.kind)


@dataclass(frozen=True)
class ProviderDates:
    provider: str
    label: str
    no_new_jobs_from: date | None
    model_shutdowns: dict[str, date]


def provider_dates(provider: str | None) -> ProviderDates | None:
    """The configured dates of ``provider``; None when it has none."""
    raw = settings.HOSTED_PROVIDER_DATES.get(provider) if provider else None
    if raw is None:
        return None
    where = f"HOSTED_PROVIDER_DATES[{provider!r}]"
    cutoff = raw.get("no_new_jobs_from")
    return ProviderDates(
        provider=provider,
        label=raw.get("label") or provider,
        no_new_jobs_from=_parse_date(cutoff, f"{where}.no_new_jobs_from") if cutoff else None,
        model_shutdowns={
            family: _parse_date(day, f"{where}.model_shutdowns[{family!r}]")
            for family, day in raw.get("model_shutdowns", {}).items()
        },
    )


def _parse_date(value, where: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ImproperlyConfigured(f"{where} must be a date (YYYY-MM-DD), not {value!r}.") from None


# --- new jobs ---------------------------------------------------------------------------------


def check_new_job_allowed(base_model: BaseModel) -> None:
    """Refuse a new fine-tuning job at a provider that takes none from today on."""
    dates = provider_dates(provider_of(base_model))
    if dates is None or dates.no_new_jobs_from is None:
        return
    if today() >= dates.no_new_jobs_from:
        raise HostedCutoffError(
            f"{dates.label} accepts no new fine-tuning jobs from "
            f"{dates.no_new_jobs_from.isoformat()} (it has wound down self-serve "
            f"fine-tuning), so {base_model} cannot be fine-tuned there; nothing was launched. "
            f"Fine-tune a local model, or one at another hosted provider. {_serving_note(dates)}"
        )


def training_not_available_reason(base_model: BaseModel, server_message: str) -> str:
    """The failure reason of a job the provider refused with ``training_not_available``:
    what happened, the cut-off it follows from, and what to do instead."""
    dates = provider_dates(provider_of(base_model))
    label = dates.label if dates else "The provider"
    cutoff = (
        f" {label} stops taking fine-tuning jobs from anyone on "
        f"{dates.no_new_jobs_from.isoformat()}, and earlier for accounts without recent "
        "fine-tuned-model use."
        if dates and dates.no_new_jobs_from
        else ""
    )
    said = f" {label} said: {server_message}" if server_message else ""
    return (
        f"{label} refused to create the fine-tuning job: fine-tuning is no longer available "
        f"to this account (HTTP 403 training_not_available).{cutoff} Fine-tune a local "
        f"model, or one at another hosted provider.{said}"
    )


def _serving_note(dates: ProviderDates) -> str:
    if not dates.model_shutdowns:
        return ""
    last = max(dates.model_shutdowns.values()).isoformat()
    return (
        f"Models already fine-tuned there can still be sampled until their base model shuts "
        f"down (at the latest {last})."
    )


# --- shutdown dates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Shutdown:
    """When a hosted model version stops answering, and where that date came from."""

    on: date
    source: str

    def days_left(self, day: date | None = None) -> int:
        return (self.on - (day or today())).days

    @property
    def source_label(self) -> str:
        return "from the provider" if self.source == FROM_PROVIDER else "configured"


def model_family(model_id: str) -> str:
    """The family a hosted model id belongs to: a fine-tune's ("ft:gpt-4o-mini-2024-07-18:
    org:suffix:id") is its base model's, and a dated snapshot's is the undated name."""
    name = model_id.strip()
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    return SNAPSHOT_SUFFIX.sub("", name)


def configured_shutdown(base_model: BaseModel, model_id: str) -> date | None:
    """The configured shutdown date of ``model_id``'s family at ``base_model``'s provider."""
    dates = provider_dates(provider_of(base_model))
    if dates is None or not model_id:
        return None
    return dates.model_shutdowns.get(model_family(model_id))


def version_shutdown(version: ModelVersion) -> Shutdown | None:
    """When ``version`` shuts down: the date its provider listed when the fine-tune
    succeeded, else the configured date of its family, else that of its base model's
    family (a fine-tune goes with the model it was fine-tuned from, and a Together
    fine-tune's name, ``user/Model-suffix-id``, names no family); None for models nobody
    retires (local ones, endpoints without dates)."""
    listed = (version.metadata or {}).get("shutdown_date")
    if listed:
        return Shutdown(on=date.fromisoformat(listed), source=FROM_PROVIDER)
    base = version.base_model
    configured = configured_shutdown(base, version.remote_model_id) or configured_shutdown(
        base, base.model_id
    )
    return Shutdown(on=configured, source=FROM_SETTINGS) if configured else None
