"""Sweep pages: the list, the launch form, and a sweep's page (its runs ranked by best
validation loss, their validation curves overlaid, promote, cancel all, delete the losing
runs' weights). Admins launch and change; curators and researchers read
(:mod:`training.access`). Every change goes through :mod:`training.services`."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.vary import vary_on_headers

from palmsweb.lib.htmx import is_partial
from palmsweb.lib.http import require_get, require_get_post, require_post
from palmsweb.roles import role_required
from training import selectors, services
from training.access import (
    READ_ROLES,
    WRITE_ROLES,
    can_write,
    get_finetune_for_user,
    get_sweep_for_user,
    in_readable_profiles,
)
from training.models import Sweep
from training.services import TrainingError
from training.sweep_forms import SweepForm

read_access = role_required(*READ_ROLES)
write_access = role_required(*WRITE_ROLES)


@require_get
@read_access
def sweep_list(request):
    sweeps = Sweep.objects.select_related("base_model", "snapshot__dataset")
    sweeps = in_readable_profiles(request.user, sweeps)[:100]
    rows = [(sweep, services.sweep_status(sweep), sweep.runs.count()) for sweep in sweeps]
    return render(
        request, "training/sweep_list.html", {"rows": rows, "can_write": can_write(request.user)}
    )


@require_get_post
@write_access
def sweep_create(request):
    form = SweepForm(request.POST or None)
    if request.method == "GET":
        first = form.fields["base_model"].queryset.first()
        if first is not None:
            grid = services.sweep_defaults(first)
            form.initial |= {
                "learning_rates": ", ".join(f"{x:g}" for x in grid["learning_rate"]),
                "epochs": ", ".join(str(x) for x in grid["epochs"]),
            }
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            sweep = services.sweep_launch(
                base_model=data["base_model"], snapshot=data["snapshot"], grid=form.grid(),
                max_runs=data["max_runs"], name=data["name"],
                hyperparameters=form.hyperparameters(),
                validation_snapshot=data["validation_snapshot"], user=request.user,
            )  # fmt: skip
        except services.ArmMismatchError as error:
            form.add_error("snapshot", str(error))
        except TrainingError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Queued {sweep.runs.count()} fine-tunes.")
            return redirect(sweep)
    return render(request, "training/sweep_form.html", {"form": form})


def _sweep_context(request, sweep: Sweep) -> dict:
    ranking = services.sweep_ranking(sweep)
    chart, curves = selectors.overlay_chart(
        [(r.label, r.job.validation_loss_history) for r in ranking]
    )
    status = services.sweep_status(sweep)
    return {
        "sweep": sweep,
        "status": status,
        "ranking": ranking,
        "chart": chart,
        "curves": curves,
        "poll": status == "running",
        "can_write": can_write(request.user),
    }


@require_get
@read_access
@vary_on_headers("HX-Request")
def sweep_detail(request, pk: int):
    sweep = get_sweep_for_user(request.user, pk)
    template = "training/sweep_detail.html"
    if is_partial(request):
        template += "#runs"
    return render(request, template, _sweep_context(request, sweep))


def _done(request, sweep: Sweep, *, error: str = "", done: str = ""):
    if error:
        messages.error(request, error)
    elif done:
        messages.success(request, done)
    return redirect(sweep)


@require_post
@write_access
def sweep_cancel(request, pk: int):
    sweep = get_sweep_for_user(request.user, pk, write=True)
    try:
        count = services.sweep_cancel(sweep=sweep)
    except TrainingError as error:
        return _done(request, sweep, error=str(error))
    return _done(request, sweep, done=f"Asked {count} run(s) to stop.")


@require_post
@write_access
def sweep_promote(request, pk: int):
    sweep = get_sweep_for_user(request.user, pk, write=True)
    run = request.POST.get("run", "")
    if not run.isdigit() or int(run) >= 2**63:
        return _done(request, sweep, error="Choose a run to promote.")
    job = get_finetune_for_user(request.user, int(run), write=True)
    try:
        version = services.sweep_promote(sweep=sweep, job=job)
    except TrainingError as error:
        return _done(request, sweep, error=str(error))
    return _done(request, sweep, done=f"Promoted {version.name}: studies can use it now.")


@require_post
@write_access
def sweep_delete_weights(request, pk: int):
    sweep = get_sweep_for_user(request.user, pk, write=True)
    try:
        cleared, freed = services.sweep_delete_losing_weights(sweep=sweep)
    except TrainingError as error:
        return _done(request, sweep, error=str(error))
    return _done(
        request, sweep, done=f"Deleted the weights of {cleared} run(s), {freed / 1e6:.1f} MB."
    )
