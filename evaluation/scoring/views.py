"""The scoring page of a study: admins launch toxicity, co-occurrence, capability,
held-out adherence and LLM-judge runs; researchers (and admins) follow their progress and
read the results.

Results are per arm, so they are blinded (arms as "Arm A/B/C", no model names) for
anyone who may not yet see per-arm results (see ``access.can_see_arm_results``).
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.vary import vary_on_headers

from curation.models import Dataset, Snapshot
from evaluation import errors, scoring
from evaluation.access import (
    admin_access,
    can_see_arm_results,
    get_study_for_user,
    study_read_access,
)
from evaluation.models import ScoringRun, Study
from palmsweb.lib.compute import for_page
from palmsweb.lib.htmx import is_partial
from palmsweb.lib.http import require_get, require_post
from palmsweb.roles import Role, has_role

ACTIVE = (ScoringRun.Status.QUEUED, ScoringRun.Status.RUNNING)


def _with_compute(runs: list[ScoringRun]) -> list[ScoringRun]:
    """The runs, each with its compute record written out for the page."""
    for run in runs:
        run.compute_page = for_page(run.compute)
    return runs


def _context(request, study: Study) -> dict:
    runs = scoring.latest_runs(study)
    blinded = not can_see_arm_results(request.user, study)
    preset = scoring.cooccurrence_preset()
    return {
        "study": study,
        "runs": _with_compute([run for run in runs.values() if run is not None]),
        "active": any(run.status in ACTIVE for run in runs.values() if run),
        "is_admin": has_role(request.user, Role.ADMIN),
        "scorers": scoring.available_scorers(),
        "defaults": scoring.COOCCURRENCE_DEFAULTS,
        "templates_json": json.dumps(preset["sets"], indent=1, ensure_ascii=False),
        "prompt_format": preset["prompt_format"],
        "scores": scoring.report_sections(study, blinded=blinded),
        "judge": scoring.judge_run_summary(study, blinded=blinded),
        "judge_form": _last_judge_options(study),
        "adherence_snapshots": Snapshot.objects.filter(
            dataset__kind=Dataset.Kind.VALIDATION, dataset__profile_id=study.profile_id
        ).select_related("dataset")[:50],
        "adherence_default": scoring.default_adherence_snapshot(study.profile_id),
    }


def _last_judge_options(study: Study) -> dict:
    """The judge form starts from the study's last judge run (options hold no key)."""
    last = study.scoring_runs.filter(kind=ScoringRun.Kind.JUDGE).order_by("-created_at").first()
    defaults = {"base_url": "", "model": "", "key_env": "OPENAI_API_KEY", "logprobs": True}
    return {**defaults, **(last.options if last else {})}


@require_get
@study_read_access
@vary_on_headers("HX-Request")
def scoring_page(request, pk: int):
    study = get_study_for_user(request.user, pk)
    return render(request, "evaluation/scoring.html", _context(request, study))


@require_get
@study_read_access
def scoring_runs(request, pk: int):
    """The polled runs panel. When nothing is left running, the page reloads once so the
    new results appear."""
    study = get_study_for_user(request.user, pk)
    url = reverse("evaluation:study-scoring", args=[study.pk])
    if not is_partial(request):
        return redirect(url)
    context = _context(request, study)
    if not context["active"]:
        response = HttpResponse(status=204)
        response["HX-Refresh"] = "true"
        return response
    return render(request, "evaluation/scoring.html#runs", context)


def _cooccurrence_options(post) -> dict:
    options = {
        name: post.get(name, "")
        for name in ("n_per_template", "max_new_tokens", "seed", "top_k", "min_count")
    }
    options["prompt_format"] = post.get("prompt_format", "")
    raw_sets = post.get("sets", "").strip()
    if raw_sets:
        try:
            options["sets"] = json.loads(raw_sets)
        except json.JSONDecodeError as error:
            raise scoring.ScoringError(f"The template sets are not valid JSON: {error}") from None
    return options


def _judge_options(post) -> dict:
    options = {name: post.get(name, "") for name in ("base_url", "model", "key_env")}
    options["logprobs"] = post.get("logprobs") == "on"  # an unticked box is not sent
    return options


@require_post
@admin_access
def scoring_start(request, pk: int):
    study = get_study_for_user(request.user, pk, write=True)
    kind = request.POST.get("kind", "")
    try:
        options = None
        if kind == "cooccurrence":
            options = _cooccurrence_options(request.POST)
        elif kind == "judge":
            options = _judge_options(request.POST)
        elif kind == "adherence":
            options = {"snapshot": request.POST.get("snapshot", "")}
        scoring.scoring_run_start(
            study=study,
            kind=kind,
            scorer=request.POST.get("scorer") or "offline",
            options=options,
            user=request.user,
        )
    except errors.EvaluationError as error:
        messages.error(request, str(error))
    else:
        label = dict(ScoringRun.Kind.choices).get(kind, kind)
        messages.success(request, f"{label} run queued.")
    return redirect("evaluation:study-scoring", study.pk)
