"""The rating pages: a rater's studies, the instructions, one output at a time, and
changing the last rating. Raters only; nothing here puts an arm, a model, a size or an
internal id into a page: the templates get the output's text, prompt, category and public
id, and nothing that maps to more. Every page works without JavaScript; htmx swaps the task
panel and the progress in place."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string

from evaluation.access import get_rating_study_for_user
from evaluation.errors import RatingError, StudyStateError
from evaluation.models import Rating, Study
from evaluation.studies import positions, queue, revisions
from evaluation.studies.forms import FlagForm, RatingForm
from evaluation.studies.selectors import rater_progress, rater_studies, study_progress
from palmsweb.lib.htmx import is_partial
from palmsweb.lib.http import require_get, require_get_post, require_post
from palmsweb.roles import Role, role_required

rater_access = role_required(Role.RATER)


def _first_error(form) -> str:
    errors = form.non_field_errors() or next(iter(form.errors.values()))
    return errors[0]


@require_get
@rater_access
def rate_home(request):
    rows = []
    for study in rater_studies(request.user):
        progress = study_progress(study)
        rows.append((study, progress, rater_progress(study, request.user)))
    return render(request, "evaluation/rate_home.html", {"rows": rows})


def _rate_context(
    request,
    study: Study,
    *,
    state: str,
    claim: Rating | None = None,
    form: RatingForm | None = None,
    notice: str = "",
    error: str = "",
) -> dict:
    progress = study_progress(study)
    rating_open = study.status == Study.Status.RATING
    last = revisions.rating_last(study, request.user) if rating_open else None
    return {
        "study": study,
        "state": state,  # intro | start | task | revise | empty | closed
        "claim": claim,
        "output": claim.output if claim else None,
        "rubric": study.rubric_items(),
        "form": form,
        "notice": notice,
        "error": error,
        "progress": progress,
        "mine": rater_progress(study, request.user),
        # Changing a rating is offered for the last one, never for the output on screen.
        "last": last if last and (claim is None or last.pk != claim.pk) else None,
        "position_open": state == "task" and _first_in_category(study, request.user, claim),
        # The version frozen when the study opened, not the live text (a curator may edit it).
        "position": positions.task_position(study, claim.output) if claim else "",
    }


def _first_in_category(study: Study, rater, claim: Rating | None) -> bool:
    """Whether this is the rater's first output of its category in the study: the
    category's position is shown in full then, and folded away after."""
    if claim is None:
        return False
    earlier = Rating.objects.filter(
        study=study, rater=rater, output__prompt__category_id=claim.output.prompt.category_id
    ).exclude(pk=claim.pk)
    return not earlier.exists()


def _rate_response(request, context: dict, *, status: int = 200) -> HttpResponse:
    """The rating page, or for htmx the task panel plus the progress bar out of band."""
    if not is_partial(request):
        return render(request, "evaluation/rate.html", context, status=status)
    task = render_to_string("evaluation/rate.html#task", context, request=request)
    progress = render_to_string(
        "evaluation/rate.html#progress", {**context, "oob": True}, request=request
    )
    return HttpResponse(task + progress, status=status)


def _claim_context(request, study: Study, *, notice: str = "") -> dict:
    try:
        claim = queue.rating_claim_next(study=study, rater=request.user)
    except StudyStateError:
        return _rate_context(request, study, state="closed", notice=notice)
    if claim is None:
        return _rate_context(request, study, state="empty", notice=notice)
    return _rate_context(request, study, state="task", claim=claim, notice=notice)


def _next(request, study: Study, *, notice: str = "") -> HttpResponse:
    """Claim the next output and show it. Plain forms get a redirect (post/redirect/get);
    the page shows the live claim again."""
    context = _claim_context(request, study, notice=notice)
    if not is_partial(request) and context["state"] == "task":
        if notice:
            messages.success(request, notice)
        return redirect("evaluation:rate", study.pk)
    return _rate_response(request, context)


@require_get
@rater_access
def rate(request, pk: int):
    """The rating page: the instructions before a rater's first output of the study, then
    one output at a time."""
    study = get_rating_study_for_user(request.user, pk)
    if study.mode == Study.Mode.PAIRWISE:  # its own page: two outputs at a time
        return redirect("evaluation:pair-rate", study.pk)
    if study.status != Study.Status.RATING:
        return _rate_response(request, _rate_context(request, study, state="closed"))
    claim = queue.current_claim(study, request.user)
    if claim is not None:
        state = "task"
    elif Rating.objects.filter(study=study, rater=request.user).exists():
        state = "start"
    else:
        state = "intro"
    return _rate_response(request, _rate_context(request, study, state=state, claim=claim))


@require_get
@rater_access
def rate_instructions(request, pk: int):
    """The study's instructions again (rubric, what to flag, keys), whenever a rater asks."""
    study = get_rating_study_for_user(request.user, pk)
    return _rate_response(request, _rate_context(request, study, state="intro"))


@require_get_post
@rater_access
def rate_revise(request, pk: int):
    """Change the last submitted rating while the study is open (the old score and
    comment are logged). GET shows it in the task panel; POST saves, then the rater is
    back at the output they hold (or their next one)."""
    study = get_rating_study_for_user(request.user, pk)
    last = revisions.rating_last(study, request.user)
    if study.status != Study.Status.RATING:
        return _rate_response(request, _rate_context(request, study, state="closed"))
    if last is None:
        return _next(request, study, notice="You have not submitted a rating here yet.")
    if request.method == "GET":
        return _rate_response(request, _revise_context(request, study, last))
    form = RatingForm(request.POST)
    if not form.is_valid():
        context = _revise_context(request, study, last, form=form, error=_first_error(form))
        return _rate_response(request, context, status=200 if is_partial(request) else 400)
    old = last.score
    try:
        rating = revisions.rating_revise(
            study=study,
            rater=request.user,
            public_id=request.POST.get("output", ""),
            score=form.cleaned_data["score"],
            comment=form.cleaned_data["comment"],
        )
    except StudyStateError:
        return _rate_response(request, _rate_context(request, study, state="closed"))
    except RatingError as error:
        return _next(request, study, notice=str(error))
    if rating.score == old:
        return _next(request, study, notice=f"Kept your last rating at {old}.")
    return _next(request, study, notice=f"Changed your last rating from {old} to {rating.score}.")


def _revise_context(request, study: Study, last: Rating, *, form=None, error="") -> dict:
    context = _rate_context(request, study, state="revise", form=form, error=error)
    last.study = study
    position = positions.task_position(study, last.output)
    context.update(output=last.output, revising=last, last=None, position=position)
    return context


@require_post
@rater_access
def rate_claim(request, pk: int):
    study = get_rating_study_for_user(request.user, pk)
    return _next(request, study)


def _own_rating(study: Study, rater, public_id: str) -> Rating | None:
    return (
        Rating.objects.filter(study=study, rater=rater, output__public_id=public_id)
        .select_related("output__prompt__category")
        .first()
    )


@require_post
@rater_access
def rate_submit(request, pk: int, public_id: str):
    study = get_rating_study_for_user(request.user, pk)
    form = RatingForm(request.POST)
    if not form.is_valid():
        claim = _own_rating(study, request.user, public_id)
        if claim is None or claim.status != Rating.Status.CLAIMED:
            return _next(request, study, notice=_first_error(form))
        context = _rate_context(
            request, study, state="task", claim=claim, form=form, error=_first_error(form)
        )
        return _rate_response(request, context, status=200 if is_partial(request) else 400)
    try:
        rating = queue.rating_submit(
            public_id=public_id,
            rater=request.user,
            score=form.cleaned_data["score"],
            comment=form.cleaned_data["comment"],
        )
    except StudyStateError:
        return _rate_response(request, _rate_context(request, study, state="closed"))
    except RatingError as error:
        return _next(request, study, notice=str(error))
    return _next(request, study, notice=f"Saved your rating ({rating.score}).")


@require_post
@rater_access
def rate_skip(request, pk: int, public_id: str):
    study = get_rating_study_for_user(request.user, pk)
    try:
        queue.rating_skip(public_id=public_id, rater=request.user)
    except StudyStateError:
        return _rate_response(request, _rate_context(request, study, state="closed"))
    except RatingError as error:
        return _next(request, study, notice=str(error))
    return _next(request, study, notice="Skipped; other raters will take it.")


@require_post
@rater_access
def rate_flag(request, pk: int, public_id: str):
    study = get_rating_study_for_user(request.user, pk)
    form = FlagForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        queue.rating_flag(public_id=public_id, rater=request.user, reason=reason)
    except StudyStateError:
        return _rate_response(request, _rate_context(request, study, state="closed"))
    except RatingError as error:
        return _next(request, study, notice=str(error))
    return _next(request, study, notice="Flagged for an admin; thank you.")
