"""Curator pages: categories, datasets, the sample editor and review, history, coverage
and snapshots (imports: import_views.py; the review queue and bulk actions:
review_views.py). Every page works without JavaScript; htmx swaps partials in.

Curators (and admins) write; researchers read datasets, samples, coverage and snapshots;
everyone else gets 403. Views call :mod:`curation.services` for every change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpResponse,
    HttpResponseBadRequest,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify
from django.views.decorators.vary import vary_on_headers

from curation import review, services
from curation.forms import (
    CategoryForm,
    CommentForm,
    DatasetForm,
    DiffForm,
    RestoreForm,
    ReviewForm,
    SampleFilterForm,
    SampleForm,
    SnapshotForm,
)
from curation.models import (
    BYTES_DEFINITION,
    WORDS_DEFINITION,
    Category,
    Dataset,
    GapTicket,
    Sample,
    SampleRevision,
    Snapshot,
    StaleEdit,
    count_words,
)
from curation.selectors import (
    dataset_coverage,
    dataset_snapshots,
    dataset_status_counts,
    datasets_with_counts,
    open_stale_edits,
    review_changes,
    revision_diff,
    sample_list,
    sample_revisions,
    word_diff,
)
from curation.services import (
    CurationError,
    EmptySnapshotError,
    StaleEditError,
    UnchangedSnapshotError,
)
from palmsweb.lib.htmx import is_partial, render_page
from palmsweb.lib.http import require_get, require_get_post, require_post
from palmsweb.roles import Role, has_role, role_required

READ_ROLES = (Role.CURATOR, Role.RESEARCHER)
WRITE_ROLES = (Role.CURATOR,)  # admins pass every role check
SAMPLES_PER_PAGE = 50
# Coverage and snapshot pages label their size columns with the one shared definition.
SIZE_DEFINITIONS = {"words": WORDS_DEFINITION, "bytes": BYTES_DEFINITION}

read_access = role_required(*READ_ROLES)
write_access = role_required(*WRITE_ROLES)


# --- access helpers ---------------------------------------------------------------------


def can_write(user) -> bool:
    return has_role(user, *WRITE_ROLES)


def _check_access(user, *, write: bool) -> None:
    if write and not has_role(user, *WRITE_ROLES):
        raise PermissionDenied("Only curators can change curation data.")
    if not has_role(user, *READ_ROLES):
        raise PermissionDenied("Only curators and researchers can see curation data.")


def get_category_for_user(user, pk: int, *, write: bool = False) -> Category:
    """The category, or 404; 403 unless the user may read (or, with ``write``, change) it."""
    _check_access(user, write=write)
    return get_object_or_404(Category, pk=pk)


def get_dataset_for_user(user, pk: int, *, write: bool = False) -> Dataset:
    """The dataset, or 404; 403 unless the user may read (or, with ``write``, change) it."""
    _check_access(user, write=write)
    return get_object_or_404(Dataset, pk=pk)


def get_sample_for_user(user, pk: int, *, write: bool = False) -> Sample:
    """The sample with its dataset, category and people, or 404; 403 unless the user may
    read (or, with ``write``, change) it."""
    _check_access(user, write=write)
    related = ("dataset", "category", "author", "updated_by", "gap_ticket")
    return get_object_or_404(Sample.objects.select_related(*related), pk=pk)


def get_stale_edit_for_user(user, pk: int, *, write: bool = False) -> StaleEdit:
    """A refused edit, or 404; 403 unless the user may read (or, with ``write``, change) it."""
    _check_access(user, write=write)
    return get_object_or_404(StaleEdit.objects.select_related("sample"), pk=pk)


def get_snapshot_for_user(user, pk: int) -> Snapshot:
    """The snapshot with its dataset, or 404; 403 unless the user may read it.
    Snapshots are immutable, so there is no ``write`` flavour."""
    _check_access(user, write=False)
    return get_object_or_404(Snapshot.objects.select_related("dataset", "created_by"), pk=pk)


# --- small helpers ----------------------------------------------------------------------


def wordcount_context(text: str, dataset: Dataset) -> dict:
    """What ``_wordcount.html`` shows; curation.js computes the same in the browser."""
    words = count_words(text)
    return {
        "words": words,
        "min_words": dataset.min_words,
        "max_words": dataset.max_words,
        "within": dataset.words_within_limits(words),
    }


def first_error(form) -> str:
    return next(iter(form.errors.values()))[0]


# --- categories -------------------------------------------------------------------------


def _category_list_context(request) -> dict:
    return {"categories": Category.objects.all(), "can_write": can_write(request.user)}


def _category_changed(request) -> HttpResponse:
    if is_partial(request):
        return render_page(
            request,
            "curation/category_list.html",
            _category_list_context(request),
            partial="table",
        )
    return redirect("curation:category-list")


@require_get
@read_access
@vary_on_headers("HX-Request")
def category_list(request):
    return render_page(
        request, "curation/category_list.html", _category_list_context(request), partial="table"
    )


@require_get_post
@write_access
def category_create(request):
    form = CategoryForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            category = services.category_create(**form.cleaned_data)
        except CurationError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Added the category {category.name}.")
            return redirect("curation:category-list")
    return render(request, "curation/category_form.html", {"form": form, "category": None})


@require_get_post
@write_access
def category_edit(request, pk: int):
    category = get_category_for_user(request.user, pk, write=True)
    form = CategoryForm.for_category(category, request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.category_update(category=category, **form.cleaned_data)
        except CurationError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Saved the category {category.name}.")
            return redirect("curation:category-list")
    return render(request, "curation/category_form.html", {"form": form, "category": category})


@require_post
@write_access
def category_move(request, pk: int):
    category = get_category_for_user(request.user, pk, write=True)
    offsets = {"up": -1, "down": 1}
    direction = request.POST.get("direction", "")
    if direction not in offsets:
        return HttpResponseBadRequest("direction must be up or down")
    services.category_move(category=category, offset=offsets[direction])
    return _category_changed(request)


@require_post
@write_access
def category_archive(request, pk: int):
    category = get_category_for_user(request.user, pk, write=True)
    services.category_archive(category=category)
    if not is_partial(request):
        messages.success(request, f"Archived {category.name}. Its samples keep it.")
    return _category_changed(request)


@require_post
@write_access
def category_restore(request, pk: int):
    category = get_category_for_user(request.user, pk, write=True)
    services.category_restore(category=category)
    if not is_partial(request):
        messages.success(request, f"Restored {category.name}.")
    return _category_changed(request)


@require_post
@write_access
def preset_load(request):
    created, existing = services.load_palms_preset()
    if created:
        messages.success(
            request,
            f"Added {created} PALMS categor{'y' if created == 1 else 'ies'}"
            f" ({existing} already there).",
        )
    else:
        messages.info(request, f"All {existing} PALMS categories are already there; nothing added.")
    return redirect("curation:category-list")


# --- datasets ---------------------------------------------------------------------------


@require_get
@read_access
def dataset_list(request):
    writer = can_write(request.user)
    context = {
        "datasets": datasets_with_counts(),
        "can_write": writer,
        "queue_count": review.review_queue(request.user).count() if writer else 0,
    }
    return render(request, "curation/dataset_list.html", context)


def _dataset_form(request, dataset: Dataset | None) -> DatasetForm:
    admin = has_role(request.user, Role.ADMIN)
    data = request.POST or None
    if dataset is None:
        return DatasetForm(data, can_set_self_approval=admin)
    return DatasetForm.for_dataset(dataset, data, can_set_self_approval=admin)


@require_get_post
@write_access
def dataset_create(request):
    form = _dataset_form(request, None)
    if request.method == "POST" and form.is_valid():
        try:
            dataset = services.dataset_create(**form.cleaned_data, user=request.user)
        except CurationError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Created the dataset {dataset.name}.")
            return redirect(dataset)
    return render(request, "curation/dataset_form.html", {"form": form, "dataset": None})


@require_get_post
@write_access
def dataset_edit(request, pk: int):
    dataset = get_dataset_for_user(request.user, pk, write=True)
    form = _dataset_form(request, dataset)
    if request.method == "POST" and form.is_valid():
        try:
            services.dataset_update(dataset=dataset, **form.cleaned_data)
        except CurationError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Saved the dataset {dataset.name}.")
            return redirect(dataset)
    return render(request, "curation/dataset_form.html", {"form": form, "dataset": dataset})


@require_get
@read_access
@vary_on_headers("HX-Request")
def dataset_detail(request, pk: int):
    dataset = get_dataset_for_user(request.user, pk)
    filter_form = SampleFilterForm(request.GET, dataset=dataset)
    filters = filter_form.filters()
    page = Paginator(sample_list(dataset, filters), SAMPLES_PER_PAGE).get_page(
        request.GET.get("page")
    )
    context = {
        "dataset": dataset,
        "filter_form": filter_form,
        "filters": filters,
        "page": page,
        "counts": dataset_status_counts(dataset),
        "can_write": can_write(request.user),
    }
    return render_page(request, "curation/dataset_detail.html", context, partial="samples")


@require_get
@read_access
def dataset_coverage_view(request, pk: int):
    dataset = get_dataset_for_user(request.user, pk)
    context = {
        "dataset": dataset,
        "coverage": dataset_coverage(dataset),
        "sizes": SIZE_DEFINITIONS,
    }
    return render(request, "curation/coverage.html", context)


# --- samples ----------------------------------------------------------------------------


@require_get_post
@write_access
def sample_create(request, pk: int):
    dataset = get_dataset_for_user(request.user, pk, write=True)
    form = SampleForm(request.POST or None, initial=_gap_ticket_initial(request))
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
    if not can_write(user):
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
        "can_write": can_write(request.user),
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
    if not request.GET.get("queue") or not can_write(request.user):
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


# --- history ----------------------------------------------------------------------------


@require_get
@read_access
def sample_history(request, pk: int):
    sample = get_sample_for_user(request.user, pk)
    revisions = list(sample_revisions(sample))
    context = {
        "sample": sample,
        "dataset": sample.dataset,
        "revisions": revisions,
        "default_a": revisions[1].number if len(revisions) > 1 else sample.version,
        "default_b": sample.version,
        "can_write": can_write(request.user),
    }
    return render(request, "curation/sample_history.html", context)


@require_get
@read_access
def sample_diff(request, pk: int):
    sample = get_sample_for_user(request.user, pk)
    form = DiffForm(request.GET)
    if not form.is_valid():
        return HttpResponseBadRequest("Pick two revisions: ?a=N&b=M with revision numbers.")
    revisions = sample_revisions(sample)
    rev_a = get_object_or_404(revisions, number=form.cleaned_data["a"])
    rev_b = get_object_or_404(revisions, number=form.cleaned_data["b"])
    context = {"sample": sample, "dataset": sample.dataset, "diff": revision_diff(rev_a, rev_b)}
    return render(request, "curation/sample_diff.html", context)


@require_post
@write_access
def sample_restore(request, pk: int):
    sample = get_sample_for_user(request.user, pk, write=True)
    form = RestoreForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Restoring needs a revision number and the version.")
    number = form.cleaned_data["revision"]
    if not SampleRevision.objects.filter(sample=sample, number=number).exists():
        raise Http404("No such revision.")
    try:
        restored = services.sample_restore(
            sample_id=sample.pk,
            revision_number=number,
            base_version=form.cleaned_data["version"],
            user=request.user,
        )
    except StaleEditError as error:
        # Same rule as an edit: refused, and the restored text waits in the editor.
        messages.error(request, str(error))
        edit_url = reverse("curation:sample-edit", args=[sample.pk])
        return redirect(f"{edit_url}?stale={error.stale_edit.pk}")
    messages.success(request, f"Restored revision {number} as revision {restored.version}.")
    return redirect("curation:sample-history", pk=sample.pk)


@require_post
@write_access
def stale_edit_resolve(request, pk: int):
    stale = get_stale_edit_for_user(request.user, pk, write=True)
    services.stale_edit_resolve(stale_edit=stale)
    messages.success(request, "Marked the unmerged edit as resolved.")
    return redirect(stale.sample)


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


# --- snapshots --------------------------------------------------------------------------


@require_get
@read_access
def snapshot_list(request, pk: int):
    dataset = get_dataset_for_user(request.user, pk)
    context = {
        "dataset": dataset,
        "snapshots": dataset_snapshots(dataset),
        "approved": dataset.samples.approved().count(),
        "form": SnapshotForm(),
        "can_write": can_write(request.user),
        "sizes": SIZE_DEFINITIONS,
    }
    return render(request, "curation/snapshot_list.html", context)


@require_post
@write_access
def snapshot_create(request, pk: int):
    dataset = get_dataset_for_user(request.user, pk, write=True)
    form = SnapshotForm(request.POST)
    if not form.is_valid():
        messages.error(request, first_error(form))
        return redirect("curation:snapshot-list", pk=dataset.pk)
    try:
        snapshot = services.snapshot_create(
            dataset=dataset, user=request.user, label=form.cleaned_data["label"]
        )
    except UnchangedSnapshotError as unchanged:
        messages.info(request, str(unchanged))
        return redirect(unchanged.snapshot)
    except EmptySnapshotError as error:
        messages.error(request, str(error))
        return redirect("curation:snapshot-list", pk=dataset.pk)
    messages.success(
        request, f"Took snapshot {snapshot.short_hash} of {snapshot.sample_count} samples."
    )
    return redirect(snapshot)


@require_get
@read_access
def snapshot_detail(request, pk: int):
    snapshot = get_snapshot_for_user(request.user, pk)
    payload = snapshot.payload()
    context = {
        "snapshot": snapshot,
        "dataset": snapshot.dataset,
        "items": payload["items"],
        "system_message": payload.get("system_message", ""),
        "sizes": SIZE_DEFINITIONS,
    }
    return render(request, "curation/snapshot_detail.html", context)


DOWNLOAD_FORMATS = {
    # format: (content type, file extension, serialiser)
    "jsonl": ("application/jsonl; charset=utf-8", "jsonl", services.snapshot_jsonl),
    "csv": ("text/csv; charset=utf-8", "csv", services.snapshot_csv),
    # The canonical content itself: its sha256 is the snapshot hash, byte for byte.
    "json": ("application/json; charset=utf-8", "json", lambda snapshot: snapshot.content),
}


@require_get
@read_access
def snapshot_download(request, pk: int):
    snapshot = get_snapshot_for_user(request.user, pk)
    fmt = request.GET.get("format", "jsonl")
    if fmt not in DOWNLOAD_FORMATS:
        return HttpResponseBadRequest("format must be jsonl, csv or json")
    content_type, extension, serialise = DOWNLOAD_FORMATS[fmt]
    body = serialise(snapshot).encode("utf-8")
    response = HttpResponse(body, content_type=content_type)
    stamp = timezone.localtime(snapshot.created_at).strftime("%Y%m%d")
    filename = f"{slugify(snapshot.dataset.name)}-{stamp}-{snapshot.short_hash}.{extension}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    # What `sha256sum` of the saved file prints; the snapshot's own hash (over its
    # canonical JSON) is a different number and travels under its own name.
    response["X-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    response["X-Snapshot-SHA256"] = snapshot.content_hash
    return response
