"""Curator pages: categories and datasets (with coverage), and the access helpers and
decorators the sibling view modules share. The rest sits beside it, one module per
sub-domain: the sample editor, page and review steps (sample_views.py), a sample's history
(history_views.py), snapshots (snapshot_views.py), imports (import_views.py), the review
queue and bulk actions (review_views.py), gap tickets (gap_views.py). Every page works
without JavaScript; htmx swaps partials in.

Curators (and admins) write; researchers read datasets, samples, coverage and snapshots;
everyone else gets 403. Views call :mod:`curation.services` for every change.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.vary import vary_on_headers

from curation import review, services
from curation.access import (
    can_write,
    get_category_for_user,
    get_dataset_for_user,
    is_admin,
    profile_for_request,
    read_access,
    write_access,
)
from curation.forms import CategoryForm, DatasetForm, SampleFilterForm
from curation.models import (
    BYTES_DEFINITION,
    WORDS_DEFINITION,
    Category,
    Dataset,
    count_words,
)
from curation.selectors import (
    dataset_coverage,
    dataset_status_counts,
    datasets_with_counts,
    position_history,
    sample_list,
)
from curation.services import CurationError
from palmsweb.lib.htmx import is_partial, render_page
from palmsweb.lib.http import require_get, require_get_post, require_post

SAMPLES_PER_PAGE = 50
# Coverage and snapshot pages label their size columns with the one shared definition.
SIZE_DEFINITIONS = {"words": WORDS_DEFINITION, "bytes": BYTES_DEFINITION}


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
    profile = profile_for_request(request)
    return {
        "categories": Category.objects.filter(profile=profile),
        "can_write": can_write(request.user, profile),
        "profile": profile,
    }


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
            category = services.category_create(
                **form.cleaned_data, user=request.user,
                profile=profile_for_request(request, write=True),
            )  # fmt: skip
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
            services.category_update(category=category, **form.cleaned_data, user=request.user)
        except CurationError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Saved the category {category.name}.")
            return redirect("curation:category-list")
    context = {"form": form, "category": category, "history": position_history(category)}
    return render(request, "curation/category_form.html", context)


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
    profile = profile_for_request(request, write=True)
    created, existing = services.load_palms_preset(user=request.user, profile=profile)
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
    profile = profile_for_request(request)
    writer = can_write(request.user, profile)
    context = {
        "datasets": datasets_with_counts().filter(profile=profile),
        "profile": profile,
        "can_write": writer,
        "queue_count": review.review_queue(request.user).count() if writer else 0,
    }
    return render(request, "curation/dataset_list.html", context)


def _dataset_form(request, dataset: Dataset | None) -> DatasetForm:
    admin = is_admin(request.user)
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
            dataset = services.dataset_create(
                **form.cleaned_data, user=request.user,
                profile=profile_for_request(request, write=True),
            )  # fmt: skip
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
        "can_write": can_write(request.user, dataset.profile_id),
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
