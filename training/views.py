"""Training pages: the base model registry, fine-tune launch and job pages, model versions,
sampling launch and job pages. Every page works without JavaScript; htmx polls job
progress and swaps partials in.

Admins launch, cancel and retry; curators and researchers read job pages and model
versions; everyone else gets 403 (the policy is :mod:`training.access`). Views call
:mod:`training.services` for every change.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.vary import vary_on_headers

from curation.models import Snapshot
from palmsweb.lib.compute import for_page as compute_for_page
from palmsweb.lib.htmx import is_partial
from palmsweb.lib.http import require_get, require_get_post, require_post
from palmsweb.lib.progress import format_duration
from palmsweb.roles import role_required
from training import selectors, services
from training.access import (
    READ_ROLES,
    WRITE_ROLES,
    can_write,
    get_finetune_for_user,
    get_sampling_job_for_user,
    in_readable_profiles,
)
from training.forms import BaseModelForm, EstimateForm, FineTuneForm, RetrainForm, SamplingForm
from training.models import BaseModel, FineTuneJob, JobStatus, SamplingJob
from training.services import TrainingError

JOBS_PER_PAGE = 50
OUTPUTS_PER_PAGE = 50
POLL_EVERY = "2s"
SAMPLING_FINISHED_EVENT = "sampling-finished"
SAMPLING_BATCH_EVENT = "sampling-batch"

read_access = role_required(*READ_ROLES)
write_access = role_required(*WRITE_ROLES)


# --- small helpers ----------------------------------------------------------------------


def _render(request, template: str, context: dict, *, partial: str = "", status: int = 200):
    """Render the page, or only its ``partial`` for htmx."""
    if partial and is_partial(request):
        template = f"{template}#{partial}"
    return render(request, template, context, status=status)


def _page(request, queryset, per_page: int):
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


def progress_context(job: FineTuneJob | SamplingJob) -> dict:
    """What a job's progress bar shows."""
    return {
        "percent": job.percent,
        "done": job.progress_done,
        "total": job.progress_total,
        "eta_left": job.eta_left,
        "phase": selectors.job_phase(job),
        "elapsed": format_duration(job.duration_seconds),
        "poll": not job.is_finished,
    }


# --- base models ------------------------------------------------------------------------


@require_get
@read_access
def basemodel_list(request):
    return render(
        request,
        "training/basemodel_list.html",
        {
            "base_models": selectors.base_model_list(),
            "can_write": can_write(request.user),
            "hosted_kinds": services.HOSTED_KINDS,  # PROVIDERS decides, not the template
        },
    )


@require_get_post
@write_access
def basemodel_create(request):
    form = BaseModelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            base_model = services.base_model_create(**form.cleaned_data)
        except TrainingError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Registered the base model {base_model.name}.")
            return redirect("training:basemodel-list")
    return render(request, "training/basemodel_form.html", {"form": form})


# --- fine-tunes -------------------------------------------------------------------------


@require_get
@read_access
@vary_on_headers("HX-Request")
def finetune_list(request):
    jobs = in_readable_profiles(request.user, selectors.finetune_list())
    page = _page(request, jobs, JOBS_PER_PAGE)
    context = {
        "page": page,
        "can_write": can_write(request.user),
        "poll": any(not job.is_finished for job in page),
    }
    return _render(request, "training/finetune_list.html", context, partial="jobs")


def _estimate_context(params) -> dict:
    """The estimated training tokens for the launch form's current values, or why not."""
    form = EstimateForm(params)
    if not form.is_valid():
        return {"estimate": None}
    data = form.cleaned_data
    epochs = data.get("epochs") or 1
    try:
        per_epoch = services.estimate_training_tokens(
            data["base_model"], data["snapshot"], data["max_seq_len"]
        )
    except TrainingError as error:
        return {"estimate": None, "estimate_error": str(error)}
    return {"estimate": {"per_epoch": per_epoch, "epochs": epochs, "total": per_epoch * epochs}}


@require_get_post
@write_access
@vary_on_headers("HX-Request")
def finetune_create(request):
    """The launch form, prefilled with the chosen model's defaults; htmx reloads the form
    (with new defaults) when the base model or method changes."""
    if request.method == "POST":
        form = FineTuneForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                job = services.finetune_launch(
                    base_model=data["base_model"],
                    snapshot=data["snapshot"],
                    arm=data["arm"],
                    method=data["method"],
                    hyperparameters=form.hyperparameters(),
                    track_persona=data["track_persona"],
                    allow_arm_mismatch=data["allow_arm_mismatch"],
                    validation_snapshot=data["validation_snapshot"],
                    devices=data["devices"] or 1,
                    nodes=data["nodes"] or 1,
                    user=request.user,
                )
            except services.ArmMismatchError as error:
                form.add_error("arm", str(error))
            except services.HostedCutoffError as error:
                form.add_error("base_model", str(error))
            except TrainingError as error:
                form.add_error(None, str(error))
            else:
                messages.success(request, f"Queued fine-tune #{job.pk}.")
                return redirect(job)
        values = request.POST
    else:
        if "csrfmiddlewaretoken" in request.GET:
            # The no-JS "update estimate" buttons submit the whole form by GET; keep the
            # token out of the address bar and history.
            query = request.GET.copy()
            del query["csrfmiddlewaretoken"]
            return redirect(f"{request.path}?{query.urlencode()}")
        form = FineTuneForm(initial=FineTuneForm.initial_for(request.GET))
        values = {
            name: form.initial.get(name, "")
            for name in ("base_model", "snapshot", "max_seq_len", "epochs")
        }
        if "snapshot" not in form.initial:
            first = Snapshot.objects.values_list("pk", flat=True).first()
            values["snapshot"] = first or ""
    context = {
        "form": form,
        "has_base_models": form.fields["base_model"].queryset.exists(),
        "has_snapshots": form.fields["snapshot"].queryset.exists(),
        "arm_check": form.arm_check(),
        "strategy_note": _strategy_note(form),
        "screenings": selectors.latest_screenings(),
        **_estimate_context(values),
    }
    return _render(request, "training/finetune_form.html", context, partial="form")


def _strategy_note(form: FineTuneForm) -> str:
    """What several devices would use for the chosen model and method (DDP or FSDP2)."""
    chosen = str(form["base_model"].value() or "")
    base_model = BaseModel.objects.filter(pk=chosen).first() if chosen.isdigit() else None
    method = form["method"].value()
    if base_model is None or not base_model.is_local or method not in FineTuneJob.Method.values:
        return ""
    return services.strategy_summary(base_model, method)


@require_get
@write_access
@vary_on_headers("HX-Request")
def finetune_estimate(request):
    """The token estimate fragment; without htmx, the launch page with these values."""
    if not is_partial(request):
        return redirect(f"{reverse('training:finetune-create')}?{request.GET.urlencode()}")
    return render(request, "training/finetune_form.html#estimate", _estimate_context(request.GET))


def _finetune_context(request, job: FineTuneJob) -> dict:
    lora = job.method == FineTuneJob.Method.LORA
    return {
        "job": job,
        "hyperparameters": [
            (name, value)
            for name, value in job.hyperparameters.items()
            if lora or not name.startswith("lora_")
        ],
        "progress": progress_context(job),
        "chart": selectors.loss_chart(job.loss_history, validation=job.validation_loss_history),
        "persona_chart": selectors.loss_chart(
            [[point["epoch"], point["value"]] for point in job.persona_track]
        ),
        "persona_points": selectors.persona_points(job.persona_track),
        # DPO: the mean reward margin and the share of pairs ranked right, by step.
        "margin_chart": selectors.loss_chart([[s, m] for s, m, _ in job.reward_history]),
        "accuracy_chart": selectors.loss_chart([[s, a] for s, _, a in job.reward_history]),
        "last_reward": job.reward_history[-1] if job.reward_history else None,
        "checkpoints": job.checkpoints.select_related("model_version"),
        "result_shutdown": services.version_shutdown(job.result) if job.result else None,
        "can_write": can_write(request.user),
        "compute": compute_for_page(job.compute),
        "retrain_form": RetrainForm(job) if can_write(request.user) else None,
        "retrained_as": job.retrained_as.all(),
    }


@require_get
@read_access
def finetune_detail(request, pk: int):
    job = get_finetune_for_user(request.user, pk)
    return render(request, "training/finetune_detail.html", _finetune_context(request, job))


@require_get
@read_access
@vary_on_headers("HX-Request")
def finetune_progress(request, pk: int):
    """The polled part of the job page; without htmx, the job page itself."""
    job = get_finetune_for_user(request.user, pk)
    if not is_partial(request):
        return redirect(job)
    return render(
        request, "training/finetune_detail.html#progress", _finetune_context(request, job)
    )


def _after_action(request, job, *, error: str = "", done: str = "") -> HttpResponse:
    """htmx: the refreshed progress partial (with the error, if any); else back to the page."""
    if is_partial(request):
        job.refresh_from_db()
        if isinstance(job, FineTuneJob):
            context = _finetune_context(request, job)
            template = "training/finetune_detail.html#progress"
        else:
            context = _sampling_context(request, job)
            template = "training/sampling_detail.html#progress"
        context["action_error"] = error
        return render(request, template, context, status=400 if error else 200)
    if error:
        messages.error(request, error)
    elif done:
        messages.success(request, done)
    return redirect(job)


def _cancel(request, job) -> HttpResponse:
    if job.is_finished:
        return _after_action(request, job, error="This job has already finished.")
    try:
        services.job_cancel(job=job)
    except TrainingError as error:
        return _after_action(request, job, error=str(error))
    job.refresh_from_db()
    done = (
        "Cancelled."
        if job.status == JobStatus.CANCELLED
        else ("Cancelling: the job stops after its current step.")
    )
    return _after_action(request, job, done=done)


def _retry(request, job) -> HttpResponse:
    try:
        services.job_retry(job=job)
    except TrainingError as error:
        return _after_action(request, job, error=str(error))
    return _after_action(request, job, done="Queued again.")


@require_post
@write_access
def finetune_cancel(request, pk: int):
    return _cancel(request, get_finetune_for_user(request.user, pk, write=True))


@require_post
@write_access
def finetune_retry(request, pk: int):
    return _retry(request, get_finetune_for_user(request.user, pk, write=True))


@require_post
@write_access
def finetune_retrain(request, pk: int):
    """Retrain elsewhere: launch the job's snapshot and hyperparameters on another provider
    or a local model; the new job links back to this one."""
    job = get_finetune_for_user(request.user, pk, write=True)
    form = RetrainForm(job, request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a local model or one at another hosted provider.")
        return redirect(job)
    try:
        new = services.finetune_retrain_elsewhere(
            job=job, base_model=form.cleaned_data["base_model"],
            method=form.cleaned_data["method"] or None, user=request.user,
        )  # fmt: skip
    except TrainingError as error:
        messages.error(request, str(error))
        return redirect(job)
    messages.success(request, f"Retraining #{job.pk} on {new.base_model} as #{new.pk}.")
    return redirect(new)


# --- model versions ---------------------------------------------------------------------


@require_get
@read_access
@vary_on_headers("HX-Request")
def modelversion_list(request):
    page = _page(request, selectors.model_version_list(), JOBS_PER_PAGE)
    for version in page:
        version.shutdown = services.version_shutdown(version)
    return _render(request, "training/modelversion_list.html", {"page": page}, partial="versions")


# --- sampling ---------------------------------------------------------------------------


@require_get
@read_access
@vary_on_headers("HX-Request")
def sampling_list(request):
    jobs = in_readable_profiles(request.user, selectors.sampling_list())
    page = _page(request, jobs, JOBS_PER_PAGE)
    context = {
        "page": page,
        "can_write": can_write(request.user),
        "poll": any(not job.is_finished for job in page),
    }
    return _render(request, "training/sampling_list.html", context, partial="jobs")


@require_get_post
@write_access
def sampling_create(request):
    initial = {}
    if request.GET.get("model_version", "").isdigit():
        initial["model_versions"] = [int(request.GET["model_version"])]
    form = SamplingForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = services.sampling_launch(
                prompts=data["prompt_list"],
                model_versions=list(data["model_versions"]),
                n_samples=data["n_samples"],
                temperature=data["temperature"],
                top_p=data["top_p"],
                max_new_tokens=data["max_new_tokens"],
                seed=data["seed"],
                name=data["name"],
                system_prompt=data["system_prompt"],
                user=request.user,
            )
        except TrainingError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Queued {job}.")
            return redirect(job)
    return render(request, "training/sampling_form.html", {"form": form})


def _sampling_context(request, job: SamplingJob) -> dict:
    return {
        "job": job,
        "progress": progress_context(job),
        "model_versions": job.model_versions.select_related("base_model"),
        "can_write": can_write(request.user),
        "compute": compute_for_page(job.compute),
    }


@require_get
@read_access
@vary_on_headers("HX-Request")
def sampling_detail(request, pk: int):
    job = get_sampling_job_for_user(request.user, pk)
    context = _sampling_context(request, job)
    outputs = _page(request, selectors.sampling_outputs(job), OUTPUTS_PER_PAGE)
    for output in outputs:
        prompt = job.prompts[output.prompt_index] if output.prompt_index < len(job.prompts) else {}
        output.category = prompt.get("category", "")
    context["outputs"] = outputs
    return _render(request, "training/sampling_detail.html", context, partial="outputs")


@require_get
@read_access
@vary_on_headers("HX-Request")
def sampling_progress(request, pk: int):
    """The polled part of the job page; without htmx, the job page itself. The response
    that first shows a finished job tells the page to reload its outputs table."""
    job = get_sampling_job_for_user(request.user, pk)
    if not is_partial(request):
        return redirect(job)
    response = render(
        request, "training/sampling_detail.html#progress", _sampling_context(request, job)
    )
    if job.is_finished:
        response["HX-Trigger"] = SAMPLING_FINISHED_EVENT
    elif request.GET.get("seen") != str(job.progress_done):
        response["HX-Trigger"] = SAMPLING_BATCH_EVENT  # a batch landed: show its outputs
    return response


@require_post
@write_access
def sampling_cancel(request, pk: int):
    return _cancel(request, get_sampling_job_for_user(request.user, pk, write=True))


@require_post
@write_access
def sampling_retry(request, pk: int):
    return _retry(request, get_sampling_job_for_user(request.user, pk, write=True))
