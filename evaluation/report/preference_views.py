"""Preference sets in the browser (curators and admins of the study's profile): build from a
closed study with the counts shown first, review the pairs (drop or take back), freeze into a
snapshot, download it as JSONL. The services are in :mod:`evaluation.report.preferences`."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render

from evaluation.access import (
    PREFERENCE_ROLES,
    get_preference_pair_for_user,
    get_preference_set_for_user,
    get_preference_snapshot_for_user,
    get_preference_study_for_user,
    preference_access,
    profile_for_request,
)
from evaluation.errors import EvaluationError, StaleAnswerError
from evaluation.models import PreferenceSet, Study
from evaluation.report import preference_answers, preferences
from palmsweb.lib.http import require_get, require_get_post, require_post


def _source_and_margin(data, study: Study) -> tuple[str, float | None, str]:
    """The form's source and margin (defaults follow the study's mode); an error text."""
    default = "pairwise" if study.mode == Study.Mode.PAIRWISE else "ratings"
    source = data.get("source") or default
    raw = data.get("margin") or str(preferences.DEFAULT_MARGIN)
    try:
        margin = float(raw)
    except ValueError:
        return source, None, "The margin must be a number."
    return source, margin, ""


@require_get
@preference_access
def preference_index(request):
    """The closed studies of the active profile, each with its preference sets."""
    profile = profile_for_request(request, PREFERENCE_ROLES)
    studies = Study.objects.filter(status=Study.Status.CLOSED, prompt_set__profile=profile)
    studies = studies.prefetch_related("preference_sets").order_by("-closed_at", "-pk")
    return render(request, "evaluation/preference_index.html", {"studies": studies})


@require_get_post
@preference_access
def preference_build(request, pk: int):
    """GET: the counts a build would give (for the chosen source and margin) and the study's
    preference sets. POST: build one."""
    study = get_preference_study_for_user(request.user, pk)
    data = request.POST if request.method == "POST" else request.GET
    source, margin, error = _source_and_margin(data, study)
    candidates = None
    if not error:
        try:
            candidates = preferences.preference_candidates(study, source=source, margin=margin)
            if request.method == "POST":
                built = preferences.preference_set_build(
                    study=study, source=source, margin=margin, user=request.user
                )
                messages.success(request, f"Built a preference set of {built.pairs.count()} pairs.")
                return redirect(built)
        except EvaluationError as refused:
            error = str(refused)
    context = {
        "study": study,
        "source": source,
        "margin": margin,
        "sources": PreferenceSet.Source.choices,
        "candidates": candidates,
        "error": error,
        "sets": study.preference_sets.all(),
    }
    status = 400 if error and request.method == "POST" else 200
    return render(request, "evaluation/preference_build.html", context, status=status)


@require_get
@preference_access
def preference_set_detail(request, pk: int):
    preference_set = get_preference_set_for_user(request.user, pk)
    pairs = preference_set.pairs.select_related(
        "prompt__category", "chosen", "rejected", "answer_by"
    )
    context = {
        "preference_set": preference_set,
        "study": preference_set.study,
        "pairs": pairs,
        "kept": pairs.filter(dropped=False).count(),
        "snapshots": preference_set.snapshots.all(),
    }
    return render(request, "evaluation/preference_set_detail.html", context)


@require_post
@preference_access
def preference_pair_drop(request, pk: int):
    pair = get_preference_pair_for_user(request.user, pk)
    dropped = request.POST.get("dropped", "1") == "1"
    preferences.preference_pair_drop(pair=pair, dropped=dropped, user=request.user)
    return redirect(pair.preference_set)


@require_post
@preference_access
def preference_set_freeze(request, pk: int):
    preference_set = get_preference_set_for_user(request.user, pk)
    try:
        snapshot = preferences.preference_snapshot_freeze(
            preference_set=preference_set, user=request.user
        )
    except EvaluationError as refused:
        messages.error(request, str(refused))
    else:
        messages.success(request, f"Froze {snapshot.pair_count} pairs as {snapshot}.")
    return redirect(preference_set)


@require_get
@preference_access
def preference_snapshot_download(request, pk: int):
    """The snapshot as JSONL (``?kind=openai``, the default, or ``?kind=trl``) or as a zip
    with both, Parquet and a dataset card (``?kind=zip``)."""
    snapshot = get_preference_snapshot_for_user(request.user, pk)
    fmt = request.GET.get("kind", "openai")
    if fmt == "zip":
        response = HttpResponse(preferences.snapshot_zip(snapshot), content_type="application/zip")
        name = f"preferences-{snapshot.content_hash[:12]}.zip"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
    try:
        body = preferences.snapshot_jsonl(snapshot, fmt)
    except EvaluationError as refused:
        return HttpResponse(str(refused), status=400, content_type="text/plain; charset=utf-8")
    response = HttpResponse(body, content_type="application/jsonl; charset=utf-8")
    name = f"preferences-{snapshot.content_hash[:12]}-{fmt}.jsonl"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["X-Content-SHA256"] = snapshot.content_hash
    return response


def _answer_page(request, pair, *, text: str, error: str = "", stale=None, status: int = 200):
    context = {
        "pair": pair,
        "preference_set": pair.preference_set,
        "study": pair.preference_set.study,
        "text": text,
        "base_version": (stale or pair).answer_version,
        "error": error,
        "stale": stale,
        "revisions": pair.revisions.select_related("author"),
    }
    return render(request, "evaluation/preference_answer.html", context, status=status)


@require_get_post
@preference_access
def preference_pair_answer(request, pk: int):
    """GET: the pair, the curator's answer (if any) in a form, and its revision history.
    POST: save a new version (blank: the raters' chosen output again); a save that started
    from an older version is refused with both texts shown, nothing lost."""
    pair = get_preference_pair_for_user(request.user, pk)
    if request.method == "GET":
        return _answer_page(request, pair, text=pair.answer)
    text = request.POST.get("answer", "")
    try:
        base_version = int(request.POST.get("base_version", ""))
        preference_answers.preference_answer_save(
            pair=pair, answer=text, base_version=base_version, user=request.user
        )
    except ValueError:
        return _answer_page(request, pair, text=text, error="The form is missing its version.",
                            status=400)  # fmt: skip
    except StaleAnswerError as refused:
        return _answer_page(request, pair, text=text, error=str(refused), stale=refused.current,
                            status=409)  # fmt: skip
    except EvaluationError as refused:
        return _answer_page(request, pair, text=text, error=str(refused), status=400)
    saved = "Saved your answer." if text.strip() else "Back to the raters' choice."
    messages.success(request, saved)
    return redirect(f"{pair.preference_set.get_absolute_url()}#pair-{pair.pk}")


@require_post
@preference_access
def preference_answer_restore(request, pk: int):
    """Bring back an earlier revision (``number``) of the answer as a new revision."""
    pair = get_preference_pair_for_user(request.user, pk)
    try:
        number = int(request.POST.get("number", ""))
        base_version = int(request.POST.get("base_version", ""))
        preference_answers.preference_answer_restore(
            pair=pair, number=number, base_version=base_version, user=request.user
        )
    except ValueError:
        error = "The form is missing the revision or its version."
        return _answer_page(request, pair, text=pair.answer, error=error, status=400)
    except StaleAnswerError as refused:
        return _answer_page(request, pair, text=pair.answer, error=str(refused),
                            stale=refused.current, status=409)  # fmt: skip
    except EvaluationError as refused:
        return _answer_page(request, pair, text=pair.answer, error=str(refused), status=400)
    messages.success(request, f"Restored revision {number}.")
    return redirect("evaluation:preference-pair-answer", pair.pk)
