"""The pairwise rating page: one prompt, its category's frozen position and two outputs
side by side, labelled only "A" and "B". Raters only; like the 1–5 pages, nothing here puts
an arm, a model, a size or an internal id into a page: the templates get the two texts, the
prompt, the category and the pair's public id. Works without JavaScript; htmx swaps the task
panel and the progress in place, and ``static/js/pairwise.js`` adds the keys. A rater may
change their last judgment while the study is open (as the 1–5 pages allow for ratings)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string

from evaluation.access import get_rating_study_for_user
from evaluation.errors import RatingError, StudyStateError
from evaluation.models import PairJudgment, Study
from evaluation.studies import pairwise_queue, positions, revisions
from evaluation.studies.forms import FlagForm, PairJudgmentForm
from evaluation.studies.selectors import rater_progress, study_progress
from palmsweb.lib.htmx import is_partial
from palmsweb.lib.http import require_get, require_get_post, require_post
from palmsweb.roles import Role, role_required

rater_access = role_required(Role.RATER)


def _pairwise_study(request, pk: int) -> Study:
    """The study through the rating access policy (404 outside the rater's profiles, 403
    outside its pool)."""
    return get_rating_study_for_user(request.user, pk)


def _context(
    request, study: Study, *, state: str, claim=None, notice="", error="", revising=None
) -> dict:
    pair = (revising or claim).pair if (revising or claim) else None
    rating_open = study.status == Study.Status.RATING
    last = revisions.judgment_last(study, request.user) if rating_open and not revising else None
    return {
        "study": study,
        "state": state,  # intro | task | revise | empty | closed
        "claim": claim,
        "revising": revising,
        # Changing a judgment is offered for the last one submitted, from any state.
        "last": last,
        "pair": pair,
        "prompt": pair.prompt if pair else None,
        # The version frozen when the study opened, not the live text.
        "position": positions.position_text(study, pair.prompt.category) if pair else "",
        "verdicts": PairJudgment.Verdict.choices,
        "notice": notice,
        "error": error,
        "progress": study_progress(study),
        "mine": rater_progress(study, request.user),
    }


def _response(request, context: dict, *, status: int = 200) -> HttpResponse:
    """The page, or for htmx the task panel plus the progress out of band."""
    template = "evaluation/pairwise_rate.html"
    if not is_partial(request):
        return render(request, template, context, status=status)
    task = render_to_string(f"{template}#task", context, request=request)
    progress = render_to_string(f"{template}#progress", {**context, "oob": True}, request=request)
    return HttpResponse(task + progress, status=status)


def _next(request, study: Study, *, notice: str = "") -> HttpResponse:
    """Claim the next pair and show it (plain forms: post/redirect/get)."""
    try:
        claim = pairwise_queue.pair_claim_next(study=study, rater=request.user)
    except StudyStateError:
        return _response(request, _context(request, study, state="closed", notice=notice))
    if claim is None:
        return _response(request, _context(request, study, state="empty", notice=notice))
    if not is_partial(request):
        if notice:
            messages.success(request, notice)
        return redirect("evaluation:pair-rate", study.pk)
    return _response(request, _context(request, study, state="task", claim=claim, notice=notice))


@require_get
@rater_access
def pair_rate(request, pk: int):
    """The instructions before a rater's first pair, then one pair at a time."""
    study = _pairwise_study(request, pk)
    if study.mode != Study.Mode.PAIRWISE:
        return redirect("evaluation:rate", study.pk)
    if study.status != Study.Status.RATING:
        return _response(request, _context(request, study, state="closed"))
    claim = pairwise_queue.current_judgment(study, request.user)
    state = "task" if claim is not None else "intro"
    return _response(request, _context(request, study, state=state, claim=claim))


@require_post
@rater_access
def pair_claim(request, pk: int):
    return _next(request, _pairwise_study(request, pk))


@require_post
@rater_access
def pair_judge(request, pk: int, public_id: str):
    study = _pairwise_study(request, pk)
    form = PairJudgmentForm(request.POST)
    if not form.is_valid():
        error = next(iter(form.errors.values()))[0]
        claim = pairwise_queue.current_judgment(study, request.user)
        if claim is None or claim.pair.public_id != public_id:
            return _next(request, study, notice=error)
        context = _context(request, study, state="task", claim=claim, error=error)
        return _response(request, context, status=200 if is_partial(request) else 400)
    try:
        judgment = pairwise_queue.pair_judge(
            public_id=public_id,
            rater=request.user,
            verdict=form.cleaned_data["verdict"],
            reason=form.cleaned_data["reason"],
        )
    except StudyStateError:
        return _response(request, _context(request, study, state="closed"))
    except RatingError as error:
        return _next(request, study, notice=str(error))
    return _next(request, study, notice=f"Saved: {judgment.get_verdict_display()}.")


@require_post
@rater_access
def pair_skip(request, pk: int, public_id: str):
    study = _pairwise_study(request, pk)
    try:
        pairwise_queue.pair_skip(public_id=public_id, rater=request.user)
    except StudyStateError:
        return _response(request, _context(request, study, state="closed"))
    except RatingError as error:
        return _next(request, study, notice=str(error))
    return _next(request, study, notice="Skipped; other raters will take it.")


@require_post
@rater_access
def pair_flag(request, pk: int, public_id: str):
    study = _pairwise_study(request, pk)
    # The flag's own field: "reason" is the judgment's optional reason in the same form.
    form = FlagForm({"reason": request.POST.get("flag_reason", "")})
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        pairwise_queue.pair_flag(public_id=public_id, rater=request.user, reason=reason)
    except StudyStateError:
        return _response(request, _context(request, study, state="closed"))
    except RatingError as error:
        return _next(request, study, notice=str(error))
    return _next(request, study, notice="Flagged for an admin; thank you.")


@require_get_post
@rater_access
def pair_revise(request, pk: int):
    """Change the last submitted judgment while the study is open (the old verdict and
    reason are logged). GET shows it in the task panel with its verdict chosen; POST saves,
    then the rater is back at the pair they hold (or their next one)."""
    study = _pairwise_study(request, pk)
    if study.status != Study.Status.RATING or study.mode != Study.Mode.PAIRWISE:
        return _response(request, _context(request, study, state="closed"))
    last = revisions.judgment_last(study, request.user)
    if last is None:
        return _next(request, study, notice="You have not submitted a judgment here yet.")
    if request.method == "GET":
        return _response(request, _context(request, study, state="revise", revising=last))
    form = PairJudgmentForm(request.POST)
    if not form.is_valid():
        error = next(iter(form.errors.values()))[0]
        context = _context(request, study, state="revise", revising=last, error=error)
        return _response(request, context, status=200 if is_partial(request) else 400)
    old = last.get_verdict_display()
    try:
        judgment = revisions.judgment_revise(
            study=study,
            rater=request.user,
            public_id=request.POST.get("pair", ""),
            verdict=form.cleaned_data["verdict"],
            reason=form.cleaned_data["reason"],
        )
    except StudyStateError:
        return _response(request, _context(request, study, state="closed"))
    except RatingError as error:
        return _next(request, study, notice=str(error))
    new = judgment.get_verdict_display()
    if new == old:
        return _next(request, study, notice=f"Kept your last judgment: {old}.")
    return _next(request, study, notice=f"Changed your last judgment from {old} to {new}.")
