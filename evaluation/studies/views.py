"""Evaluation pages: prompt sets, study management and output triage (the rating pages
are in evaluation/studies/rating_views.py, the report in evaluation/report/views.py).

Who sees what: curators (and admins) write prompt sets, researchers read them; admins
create, open, screen and close studies; researchers follow studies, unblind closed ones and
read results once unblinded; raters see only their rating queue, which never shows an arm,
a model, a size or an internal id (outputs travel by their opaque ``public_id``).
Every page works without JavaScript; htmx swaps partials in.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.vary import vary_on_headers

from evaluation.access import (
    PROMPT_READ_ROLES,
    PROMPT_WRITE_ROLES,
    STUDY_READ_ROLES,
    admin_access,
    can_build_preferences,
    can_edit_prompt_set,
    can_manage_study,
    can_see_arm_results,
    can_unblind_study,
    copy_target_profiles,
    get_output_for_user,
    get_prompt_for_user,
    get_prompt_set_for_user,
    get_study_for_user,
    profile_for_request,
    prompt_read_access,
    prompt_write_access,
    study_read_access,
)
from evaluation.errors import EvaluationError
from evaluation.gate_state import study_gate_warnings
from evaluation.models import PromptSet, Study, StudyOutput
from evaluation.studies import lifecycle, positions, prompt_sets
from evaluation.studies.blinding import blind_labels
from evaluation.studies.forms import (
    ExcludeForm,
    LiveStudyForm,
    PromptForm,
    PromptLinesForm,
    PromptSetForm,
    StudyEstimateForm,
    StudyForm,
    StudyPlanForm,
    arm_formset,
)
from evaluation.studies.selectors import (
    StudyEstimate,
    draft_study_estimate,
    held_outputs,
    shutdown_warnings,
    study_estimate,
    study_outputs,
    study_progress,
)
from palmsweb.lib.htmx import is_partial, redirect_after_change, render_page
from palmsweb.lib.http import require_get, require_get_post, require_post
from training.selectors import job_phase

OUTPUTS_PER_PAGE = 50


# --- small helpers ----------------------------------------------------------------------


def _first_error(form) -> str:
    errors = form.non_field_errors() or next(iter(form.errors.values()))
    return errors[0]


# --- prompt sets ------------------------------------------------------------------------


@require_get
@prompt_read_access
def prompt_set_list(request):
    profile = profile_for_request(request, PROMPT_READ_ROLES)
    sets = PromptSet.objects.filter(profile=profile).annotate(
        n_prompts=Count("prompts", distinct=True), n_studies=Count("studies", distinct=True)
    )
    context = {
        "prompt_sets": sets,
        "profile": profile,
        "can_write": can_edit_prompt_set(request.user, profile=profile),
    }
    return render(request, "evaluation/prompt_set_list.html", context)


@require_get_post
@prompt_write_access
def prompt_set_create(request):
    form = PromptSetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            prompt_set = prompt_sets.prompt_set_create(
                **form.cleaned_data, user=request.user,
                profile=profile_for_request(request, PROMPT_WRITE_ROLES),
            )  # fmt: skip
        except EvaluationError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Created the prompt set {prompt_set.name}.")
            return redirect(prompt_set)
    return render(request, "evaluation/prompt_set_form.html", {"form": form, "prompt_set": None})


@require_get_post
@prompt_write_access
def prompt_set_edit(request, pk: int):
    prompt_set = get_prompt_set_for_user(request.user, pk, write=True)
    form = PromptSetForm(
        request.POST or None,
        initial={
            "name": prompt_set.name,
            "description": prompt_set.description,
        },
    )
    if request.method == "POST" and form.is_valid():
        try:
            prompt_sets.prompt_set_update(prompt_set=prompt_set, **form.cleaned_data)
        except EvaluationError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, "Saved.")
            return redirect(prompt_set)
    context = {"form": form, "prompt_set": prompt_set}
    return render(request, "evaluation/prompt_set_form.html", context)


def _prompt_set_context(request, prompt_set: PromptSet, **extra) -> dict:
    can_write = can_edit_prompt_set(request.user, prompt_set)
    in_profile = {"profile_id": prompt_set.profile_id}
    prompt_form = extra.pop("prompt_form", None) or (
        PromptForm(**in_profile) if can_write else None
    )
    lines_form = extra.pop("lines_form", None) or (
        PromptLinesForm(**in_profile) if can_write else None
    )
    return {
        "prompt_set": prompt_set,
        "prompts": prompt_set.prompts.select_related("category"),
        "studies": prompt_set.studies.all(),
        "can_write": can_write,
        "can_copy_across": copy_target_profiles(request.user, prompt_set).exists(),
        "prompt_form": prompt_form,
        "lines_form": lines_form,
        **extra,
    }


@require_get
@prompt_read_access
@vary_on_headers("HX-Request")
def prompt_set_detail(request, pk: int):
    prompt_set = get_prompt_set_for_user(request.user, pk)
    context = _prompt_set_context(request, prompt_set)
    return render_page(request, "evaluation/prompt_set_detail.html", context, partial="prompts")


def _after_prompt_edit(request, original: PromptSet, edited: PromptSet) -> HttpResponse:
    """Back to the set; when the edit went into a copy (the set was locked), say so and go
    to the copy."""
    if edited.pk != original.pk:
        messages.info(
            request,
            f"{original.name} is locked because a study uses it, so your change went into "
            f"a new set, {edited.name}.",
        )
        return redirect_after_change(request, edited.get_absolute_url())
    if is_partial(request):
        context = _prompt_set_context(request, edited)
        return render_page(request, "evaluation/prompt_set_detail.html", context, partial="prompts")
    return redirect(edited)


@require_post
@prompt_write_access
def prompt_add(request, pk: int):
    prompt_set = get_prompt_set_for_user(request.user, pk, write=True)
    form = PromptForm(request.POST, profile_id=prompt_set.profile_id)
    if form.is_valid():
        try:
            prompt = prompt_sets.prompt_add(
                prompt_set=prompt_set, user=request.user, **form.cleaned_data
            )
        except EvaluationError as error:
            form.add_error(None, str(error))
        else:
            return _after_prompt_edit(request, prompt_set, prompt.prompt_set)
    context = _prompt_set_context(request, prompt_set, prompt_form=form)
    return render(request, "evaluation/prompt_set_detail.html", context, status=400)


@require_post
@prompt_write_access
def prompts_add_lines(request, pk: int):
    prompt_set = get_prompt_set_for_user(request.user, pk, write=True)
    form = PromptLinesForm(request.POST, profile_id=prompt_set.profile_id)
    if form.is_valid():
        try:
            edited = prompt_sets.prompts_add_lines(
                prompt_set=prompt_set, user=request.user, **form.cleaned_data
            )
        except EvaluationError as error:
            form.add_error(None, str(error))
        else:
            return _after_prompt_edit(request, prompt_set, edited)
    context = _prompt_set_context(request, prompt_set, lines_form=form)
    return render(request, "evaluation/prompt_set_detail.html", context, status=400)


@require_get_post
@prompt_write_access
def prompt_edit(request, pk: int):
    prompt = get_prompt_for_user(request.user, pk, write=True)
    form = PromptForm(
        request.POST or None,
        profile_id=prompt.prompt_set.profile_id,
        initial={
            "category": prompt.category,
            "text": prompt.text,
        },
    )
    if request.method == "POST" and form.is_valid():
        try:
            edited = prompt_sets.prompt_update(
                prompt=prompt, user=request.user, **form.cleaned_data
            )
        except EvaluationError as error:
            form.add_error(None, str(error))
        else:
            return _after_prompt_edit(request, prompt.prompt_set, edited.prompt_set)
    context = {"form": form, "prompt": prompt, "prompt_set": prompt.prompt_set}
    return render(request, "evaluation/prompt_form.html", context)


@require_post
@prompt_write_access
def prompt_delete(request, pk: int):
    prompt = get_prompt_for_user(request.user, pk, write=True)
    edited = prompt_sets.prompt_delete(prompt=prompt, user=request.user)
    return _after_prompt_edit(request, prompt.prompt_set, edited)


@require_post
@prompt_write_access
def prompt_move(request, pk: int):
    prompt = get_prompt_for_user(request.user, pk, write=True)
    offsets = {"up": -1, "down": 1}
    direction = request.POST.get("direction", "")
    if direction not in offsets:
        return HttpResponseBadRequest("direction must be up or down")
    edited = prompt_sets.prompt_move(prompt=prompt, offset=offsets[direction], user=request.user)
    return _after_prompt_edit(request, prompt.prompt_set, edited)


# --- studies ----------------------------------------------------------------------------


@require_get
@study_read_access
def study_list(request):
    profile = profile_for_request(request, STUDY_READ_ROLES)
    studies = Study.objects.filter(prompt_set__profile=profile)
    studies = studies.select_related("prompt_set").prefetch_related("arms")
    rows = [(study, study_progress(study)) for study in studies]
    context = {"rows": rows, "profile": profile, "is_admin": can_manage_study(request.user)}
    return render(request, "evaluation/study_list.html", context)


def _form_estimate(data) -> StudyEstimate | None:
    """The estimate for the study form's current values (a QueryDict)."""
    kwargs = StudyEstimateForm(data).estimate_kwargs(data)
    return study_estimate(**kwargs) if kwargs else None


def _draft_plan(study: Study):
    """The planner's view of a draft study's design (issue 15)."""
    data = {
        "prompt_set": study.prompt_set_id,
        "samples_per_prompt": study.samples_per_prompt,
        "raters_per_output": study.raters_per_output,
        "mode": study.mode,
    }
    return StudyPlanForm(data).plan()


def _study_form_page(request, study: Study | None, form, arms, status: int = 200):
    plan = None
    if request.method == "POST":
        estimate = _form_estimate(request.POST)
        plan = StudyPlanForm(request.POST).plan()
    elif study is not None and study.status == Study.Status.DRAFT:
        estimate = draft_study_estimate(study)
        plan = _draft_plan(study)
    else:
        estimate = None
    context = {"study": study, "form": form, "arms": arms, "estimate": estimate, "plan": plan}
    return render(request, "evaluation/study_form.html", context, status=status)


@require_get
@admin_access
def study_estimate_view(request):
    """The outputs, ratings and sampling time the study form's values come to (htmx swaps
    it in as the form changes)."""
    context = {
        "estimate": _form_estimate(request.GET),
        "plan": StudyPlanForm(request.GET).plan(),
        "live": True,
    }
    return render(request, "evaluation/_study_estimate.html", context)


@require_get_post
@admin_access
def study_create(request):
    data = request.POST or None
    profile = profile_for_request(request, STUDY_READ_ROLES)
    form, arms = StudyForm(data, profile_id=profile.pk), arm_formset(data)
    if request.method == "POST" and form.is_valid() and arms.is_valid():
        try:
            study = lifecycle.study_create(
                **form.service_kwargs(), arms=arms.specs(), user=request.user
            )
        except EvaluationError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Created the study {study.name} (draft).")
            for text in study_gate_warnings(study):  # warned, not refused
                messages.warning(request, text)
            return redirect(study)
    status = 400 if request.method == "POST" else 200
    return _study_form_page(request, None, form, arms, status)


@require_get_post
@admin_access
def study_edit(request, pk: int):
    study = get_study_for_user(request.user, pk, write=True)
    data = request.POST or None
    if study.status != Study.Status.DRAFT:
        form = LiveStudyForm.for_study(study, data)
        if request.method == "POST" and form.is_valid():
            try:
                lifecycle.study_update_live(study=study, user=request.user, **form.service_kwargs())
            except EvaluationError as error:
                form.add_error(None, str(error))
            else:
                messages.success(request, "Saved the rubric, the rater pool and the close date.")
                return redirect(study)
        return _study_form_page(request, study, form, None)
    form, arms = StudyForm.for_study(study, data), arm_formset(data, study)
    if request.method == "POST" and form.is_valid() and arms.is_valid():
        try:
            lifecycle.study_update(
                study=study, **form.service_kwargs(), arms=arms.specs(), user=request.user
            )
        except EvaluationError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, "Saved the study.")
            return redirect(study)
    status = 400 if request.method == "POST" else 200
    return _study_form_page(request, study, form, arms, status)


# How often the study page asks for news: sampling moves every few seconds, rating slower;
# a draft waits for its admin and a closed study is done, so neither polls.
STUDY_POLL = {Study.Status.SAMPLING: "2s", Study.Status.RATING: "10s"}


def _study_context(request, study: Study) -> dict:
    is_admin = can_manage_study(request.user)
    job = study.sampling_job
    arms = study.arms.select_related("model_version__base_model")
    reveal_models = is_admin or study.is_unblinded
    return {
        "study": study,
        "job": job,
        "phase": job_phase(job) if job else "",
        "poll_every": STUDY_POLL.get(study.status, ""),
        "estimate": draft_study_estimate(study) if study.status == Study.Status.DRAFT else None,
        "plan": _draft_plan(study) if study.status == Study.Status.DRAFT else None,
        "progress": study_progress(study),
        "arms": arms,
        "raters": study.raters.order_by("username") if is_admin else None,
        "held": held_outputs(study)[:20] if is_admin else None,
        "events": study.events.select_related("actor"),
        "is_admin": is_admin,
        # The arms' model versions would join the (admin-only) outputs to arms.
        "reveal_models": reveal_models,
        "shutdown_warnings": shutdown_warnings(study, reveal_models=reveal_models, arms=arms),
        "can_unblind": can_unblind_study(request.user, study),
        "can_see_results": can_see_arm_results(request.user, study),
        "can_build_preferences": can_build_preferences(request.user, study),
        "exclude_form": ExcludeForm(),
        "frozen_positions": positions.frozen_versions(study),
        "position_edits": positions.positions_edited_since_opening(study),
    }


@require_get
@study_read_access
@vary_on_headers("HX-Request")
def study_detail(request, pk: int):
    study = get_study_for_user(request.user, pk)
    return render_page(
        request, "evaluation/study_detail.html", _study_context(request, study), partial="status"
    )


@require_get
@study_read_access
def study_status(request, pk: int):
    """The polled status panel, with the page's title bar (status badge, actions) and log
    swapped out of band, so the whole page follows the study live. Polling also moves a
    finished sampling job on (the service is idempotent), so a study never waits for the
    periodic sweep while someone watches."""
    study = get_study_for_user(request.user, pk)
    if study.status == Study.Status.SAMPLING:
        lifecycle.study_sync_sampling(study_id=study.pk)
        study = get_study_for_user(request.user, pk)
    if not is_partial(request):
        return redirect(study)
    context = _study_context(request, study)
    template = "evaluation/study_detail.html"
    parts = [render_to_string(f"{template}#status", context, request=request)]
    parts += [
        render_to_string(f"{template}#{name}", {**context, "oob": True}, request=request)
        for name in ("head", "log")
    ]
    return HttpResponse("".join(parts))


def _study_action(request, pk: int, action, done: str, *, write: bool = True) -> HttpResponse:
    study = get_study_for_user(request.user, pk, write=write)
    try:
        action(study=study, user=request.user)
    except EvaluationError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, done)
    return redirect(study)


@require_post
@admin_access
def study_open(request, pk: int):
    return _study_action(
        request,
        pk,
        lifecycle.study_open,
        "Opened: sampling every arm. Rating starts when it finishes.",
    )


@require_post
@admin_access
def study_close(request, pk: int):
    done = "Closed: rating stopped. Researchers can now unblind it."
    return _study_action(request, pk, lifecycle.study_close, done)


@require_post
@study_read_access
def study_unblind(request, pk: int):
    response = _study_action(
        request, pk, lifecycle.study_unblind, "Unblinded. This has been logged.", write=False
    )
    study = get_study_for_user(request.user, pk)
    return redirect("evaluation:study-results", study.pk) if study.is_unblinded else response


def _reveal_key(study: Study) -> str:
    return f"arms-revealed-{study.pk}"


def _arms_shown(request, study: Study) -> bool:
    """Admins triage outputs under the report's letters until the study is unblinded,
    unless they chose (logged) to reveal the arms in this session."""
    return study.is_unblinded or bool(request.session.get(_reveal_key(study)))


def _label_outputs(request, study: Study, outputs) -> None:
    """Give each output the arm label this admin sees now: the arm, or its letter."""
    letters = None if _arms_shown(request, study) else blind_labels(study)
    for output in outputs:
        output.arm_label = letters[output.arm_id] if letters else str(output.arm)


@require_get
@admin_access
@vary_on_headers("HX-Request")
def study_outputs_view(request, pk: int):
    study = get_study_for_user(request.user, pk, write=True)
    screening = request.GET.get("screening", "")
    if screening not in StudyOutput.Screening.values:
        screening = ""
    page = Paginator(study_outputs(study, screening=screening), OUTPUTS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    _label_outputs(request, study, page)
    context = {
        "study": study,
        "page": page,
        "screening": screening,
        "screenings": StudyOutput.Screening.choices,
        "exclude_form": ExcludeForm(),
        "arms_shown": _arms_shown(request, study),
    }
    return render(request, "evaluation/study_outputs.html", context)


@require_post
@admin_access
def study_outputs_reveal(request, pk: int):
    """Show or hide the arms on the triage page before unblinding; logged either way."""
    study = get_study_for_user(request.user, pk, write=True)
    reveal = request.POST.get("reveal") == "1"
    if study.is_unblinded:
        messages.info(request, "The study is unblinded: its arms are shown to everyone entitled.")
    else:
        lifecycle.study_arms_reveal(study=study, user=request.user, reveal=reveal)
        request.session[_reveal_key(study)] = reveal
        messages.info(
            request,
            "Arms shown for this session; this is in the study's log."
            if reveal
            else "Arms hidden again: outputs show their letters.",
        )
    url = reverse("evaluation:study-outputs", args=[study.pk])
    screening = request.POST.get("screening", "")
    if screening in StudyOutput.Screening.values:
        url += f"?screening={screening}"
    return redirect(url)


def _output_changed(request, output: StudyOutput) -> HttpResponse:
    if is_partial(request):
        output.refresh_from_db()
        _label_outputs(request, output.study, [output])
        context = {
            "output": output,
            "exclude_form": ExcludeForm(),
            "arms_shown": _arms_shown(request, output.study),
        }
        return render(request, "evaluation/study_outputs.html#output-row", context)
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        # Only a page of this site: "next" comes from the form, but anyone can post one.
        target = reverse("evaluation:study-outputs", args=[output.study_id])
    return redirect(target)


@require_post
@admin_access
def output_clear(request, pk: int):
    output = get_output_for_user(request.user, pk)
    try:
        lifecycle.output_clear(output=output, user=request.user)
    except EvaluationError as error:
        messages.error(request, str(error))
    return _output_changed(request, output)


@require_post
@admin_access
def output_exclude(request, pk: int):
    output = get_output_for_user(request.user, pk)
    form = ExcludeForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    lifecycle.output_exclude(output=output, user=request.user, reason=reason)
    return _output_changed(request, output)
