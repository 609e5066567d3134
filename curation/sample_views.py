"""Sample pages: the editor (with the refused-save conflict view), the sample page with
its comments, and the review steps (submit, request changes, approve, archive, reopen),
which from the review queue go on to the next sample waiting."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.vary import vary_on_headers

from curation import review, services
from curation.access import (
    can_write,
    get_dataset_for_user,
    get_sample_for_user,
    read_access,
    write_access,
)
from curation.forms import CommentForm, ReviewForm, SampleForm
from curation.models import Dataset, GapTicket, Sample, StaleEdit
from curation.selectors import open_stale_edits, review_changes, word_diff
from curation.services import CurationError, StaleEditError
from curation.views import first_error, wordcount_context
from palmsweb.lib.htmx import is_partial, render_page
from palmsweb.lib.http import require_get, require_get_post, require_post

# --- samples ----------------------------------------------------------------------------


@require_get_post
@write_access
def sample_create(request, pk: int):
    dataset = get_dataset_for_user(request.user, pk, write=True)
    form = SampleForm(
        request.POST or None, initial=_gap_ticket_initial(request), profile_id=dataset.profile_id
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            sample = services.sample_create(
                dataset=dataset,
                question=data["question"],
                answer=data["answer"],
                category=data["category"],
                user=request.user,
                note=data["note"],
                gap_ticket=data["gap_ticket"],
            )
        except CurationError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, "Saved the sample as a draft (revision 1).")
            return redirect(sample)
    answer = form["answer"].value() or ""
    context = {
        "dataset": dataset,
        "sample": None,
        "form": form,
        "gap_ticket": _chosen_gap_ticket(form),
        "wc": wordcount_context(answer, dataset),
    }
    return render(request, "curation/sample_form.html", context)


def _gap_ticket_initial(request) -> dict:
    """``?gap_ticket=<id>`` from a gap ticket's page: link the new sample to that open
    ticket and start it in the ticket's category."""
    pk = request.GET.get("gap_ticket", "")
    ticket = (
        GapTicket.objects.filter(pk=pk, status=GapTicket.Status.OPEN).first()
        if pk.isdigit()
        else None
    )
    if ticket is None:
        return {}
    return {"gap_ticket": ticket.pk, "category": ticket.category_id}


def _chosen_gap_ticket(form: SampleForm) -> GapTicket | None:
    """The open ticket the editor is writing for, whether from the query or the POST."""
    pk = form["gap_ticket"].value()
    if not pk or not str(pk).isdigit():
        return None
    return form.fields["gap_ticket"].queryset.filter(pk=pk).first()


def _conflict_context(sample: Sample, stale: StaleEdit, data=None) -> dict:
    """The editor after a refused save: the curator's text (``data``, or the stored stale
    edit) stays in the form, now based on the current version, with both versions shown."""
    if data is None:
        data = {
            "category": stale.category_id or "",
            "question": stale.question,
            "answer": stale.answer,
        }
    else:
        data = data.copy()
    data["version"] = str(sample.version)
    data["stale_edit"] = str(stale.pk)
    form = SampleForm(data=data, sample=sample)
    return {
        "form": form,
        "conflict": {
            "stale": stale,
            "question_diff": word_diff(sample.question, stale.question),
            "answer_diff": word_diff(sample.answer, stale.answer),
        },
    }


def _editor(request, sample: Sample, *, form=None, conflict=None, status: int = 200):
    form = form if form is not None else SampleForm.for_sample(sample)
    context = {
        "dataset": sample.dataset,
        "sample": sample,
        "form": form,
        "conflict": conflict,
        "wc": wordcount_context(form["answer"].value() or "", sample.dataset),
    }
    return render(request, "curation/sample_form.html", context, status=status)


def _open_stale_edit(sample: Sample, pk) -> StaleEdit | None:
    if not pk:
        return None
    try:
        return sample.stale_edits.filter(resolved_at__isnull=True).get(pk=int(pk))
    except (ValueError, StaleEdit.DoesNotExist):
        return None


@require_get_post
@write_access
def sample_edit(request, pk: int):
    sample = get_sample_for_user(request.user, pk, write=True)
    if request.method != "POST":
        stale = _open_stale_edit(sample, request.GET.get("stale"))
        if stale is None:
            return _editor(request, sample)
        return _editor(request, sample, **_conflict_context(sample, stale))
    form = SampleForm(request.POST, sample=sample)
    if not form.is_valid():
        return _editor(request, sample, form=form)
    data = form.cleaned_data
    merged = _open_stale_edit(sample, data["stale_edit"])
    was_approved = sample.status == Sample.Status.APPROVED
    try:
        saved = services.sample_update(
            sample_id=sample.pk,
            base_version=data["version"],
            question=data["question"],
            answer=data["answer"],
            category=data["category"],
            user=request.user,
            note=data["note"],
        )
    except StaleEditError as error:
        if merged is not None:  # its text lives on in the new stale edit
            services.stale_edit_resolve(stale_edit=merged)
        messages.error(request, str(error))
        context = _conflict_context(error.current, error.stale_edit, request.POST)
        return _editor(request, error.current, status=409, **context)
    except CurationError as error:
        form.add_error(None, str(error))
        return _editor(request, sample, form=form)
    if merged is not None:
        services.stale_edit_resolve(stale_edit=merged)
    messages.success(request, f"Saved revision {saved.version}.")
    if was_approved and saved.status == Sample.Status.IN_REVIEW:
        messages.info(request, "The content changed, so the sample is back in review.")
    return redirect(saved)


def _sample_actions(sample: Sample, user) -> dict:
    """Which review steps this user may take now, why approval is refused, and (before
    submitting) what approval will refuse whoever reviews."""
    if not can_write(user, sample.dataset.profile_id):
        return {}
    status = sample.status
    Status = Sample.Status
    return {
        "submit": status == Status.DRAFT,
        "submit_problems": (services.content_problems(sample) if status == Status.DRAFT else []),
        "request_changes": status == Status.IN_REVIEW,
        "approve": status == Status.IN_REVIEW,
        "approval_problems": (
            services.approval_problems(sample, user) if status == Status.IN_REVIEW else []
        ),
        "archive": status != Status.ARCHIVED,
        "reopen": status == Status.ARCHIVED,
    }


def _comments_context(request, sample: Sample, form: CommentForm | None = None) -> dict:
    return {
        "sample": sample,
        "comments": sample.comments.select_related("author"),
        "comment_form": form or CommentForm(),
        "can_write": can_write(request.user, sample.dataset.profile_id),
    }


@require_get
@read_access
@vary_on_headers("HX-Request")
def sample_detail(request, pk: int):
    sample = get_sample_for_user(request.user, pk)
    in_review = sample.status == Sample.Status.IN_REVIEW
    context = {
        **_comments_context(request, sample),
        "dataset": sample.dataset,
        "actions": _sample_actions(sample, request.user),
        "stale_edits": open_stale_edits(sample),
        "wc": wordcount_context(sample.answer, sample.dataset),
        "review_changes": review_changes(sample) if in_review else None,
        "queue": _queue_context(request, sample),
    }
    return render_page(request, "curation/sample_detail.html", context, partial="comments")


def queue_dataset(request, params) -> Dataset | None:
    """The dataset a review queue is narrowed to (``dataset=<id>``), if any."""
    pk = params.get("dataset", "")
    return get_dataset_for_user(request.user, int(pk)) if pk.isdigit() else None


def queue_url(sample_id: int | None, dataset: Dataset | None) -> str:
    """A sample's page in review-queue mode, or the queue itself when nothing is left."""
    narrowed = f"dataset={dataset.pk}" if dataset else ""
    if sample_id is None:
        return reverse("curation:review-queue") + (f"?{narrowed}" if narrowed else "")
    page = reverse("curation:sample-detail", args=[sample_id])
    return f"{page}?queue=1" + (f"&{narrowed}" if narrowed else "")


def _queue_context(request, sample: Sample) -> dict | None:
    """With ``?queue=1`` (from "waiting for my review"), where the sample sits in the
    user's queue and the links to move through it."""
    if not request.GET.get("queue") or not can_write(request.user, sample.dataset.profile_id):
        return None
    dataset = queue_dataset(request, request.GET)
    position = review.queue_position(request.user, sample, dataset=dataset)
    return {
        "position": position,
        "dataset": dataset,
        "previous_url": queue_url(position.previous_id, dataset) if position.previous_id else "",
        "next_url": queue_url(position.next_id, dataset) if position.next_id else "",
        "list_url": queue_url(None, dataset),
    }


def _review_step(request, pk: int, step: Callable, done: str, *, body_required=False):
    """Run one review service (submit, approve, …) and come back to the sample page, or,
    from the review queue, go on to the next sample waiting."""
    sample = get_sample_for_user(request.user, pk, write=True)
    in_queue = bool(request.POST.get("queue"))
    dataset = queue_dataset(request, request.POST) if in_queue else None
    back = queue_url(sample.pk, dataset) if in_queue else sample.get_absolute_url()
    form = ReviewForm(request.POST, body_required=body_required)
    if not form.is_valid():
        messages.error(request, first_error(form))
        return redirect(back)
    extra = {}
    if step is services.sample_approve:
        extra["version"] = form.cleaned_data["version"]
    before = (
        list(review.review_queue(request.user, dataset=dataset).values_list("pk", flat=True))
        if in_queue
        else []
    )
    try:
        step(sample=sample, user=request.user, body=form.cleaned_data["body"], **extra)
    except CurationError as error:
        messages.error(request, str(error))
        return redirect(back)
    messages.success(request, done)
    if not in_queue:
        return redirect(sample)
    following = review.queue_next_after(request.user, before, sample.pk, dataset=dataset)
    if following is None:
        messages.info(request, "Nothing else is waiting for your review.")
    return redirect(queue_url(following, dataset))


@require_post
@write_access
def sample_submit(request, pk: int):
    return _review_step(request, pk, services.sample_submit, "Submitted for review.")


@require_post
@write_access
def sample_request_changes(request, pk: int):
    return _review_step(
        request,
        pk,
        services.sample_request_changes,
        "Requested changes; the sample is a draft again.",
        body_required=True,
    )


@require_post
@write_access
def sample_approve(request, pk: int):
    return _review_step(request, pk, services.sample_approve, "Approved.")


@require_post
@write_access
def sample_archive(request, pk: int):
    return _review_step(request, pk, services.sample_archive, "Archived.")


@require_post
@write_access
def sample_reopen(request, pk: int):
    return _review_step(request, pk, services.sample_reopen, "Reopened as a draft.")


@require_post
@write_access
def sample_comment(request, pk: int):
    sample = get_sample_for_user(request.user, pk, write=True)
    form = CommentForm(request.POST)
    if form.is_valid():
        try:
            services.comment_add(sample=sample, user=request.user, body=form.cleaned_data["body"])
        except CurationError as error:
            form.add_error("body", str(error))
        else:
            form = CommentForm()
    if is_partial(request):
        context = _comments_context(request, sample, form)
        return render_page(request, "curation/sample_detail.html", context, partial="comments")
    if form.is_bound and form.errors:
        messages.error(request, first_error(form))
    return redirect(reverse("curation:sample-detail", args=[sample.pk]) + "#comments")


@require_get
@read_access
def word_count(request):
    """The word-count line for ``?text=`` against ``?dataset=``'s limits (the editor counts
    in the browser; this serves clients without the script)."""
    dataset_pk = request.GET.get("dataset", "")
    if dataset_pk.isdigit():
        dataset = get_dataset_for_user(request.user, int(dataset_pk))
    else:
        dataset = Dataset()  # unsaved: carries the default limits
    context = {"wc": wordcount_context(request.GET.get("text", ""), dataset)}
    return render(request, "curation/_wordcount.html", context)
