"""Every URL and API endpoint × every role (and anonymous) gets the access the design gives.

The table below is the policy. A URL added without a line here fails
``test_every_url_has_a_policy``, so nobody ships a page whose access was never decided.
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from curation import services as curation
from curation.gaps import gap_ticket_create
from curation.importing import pending_import_create
from curation.models import Sample, StaleEdit
from evaluation.alignment.realignment import realignment_create
from evaluation.models import Export, MisalignmentEval, ModelGate, Prompt
from palmsweb.models import Membership, Profile
from palmsweb.roles import Role
from tests.conftest import client_for, make_user
from tests.evaluation.conftest import build_study
from tests.factories import CategoryFactory, DatasetFactory, words
from training import services as training
from training.models import BaseModel, ScreeningRun, Sweep

ROLES = ("anonymous", "outsider", "rater", "researcher", "curator", "admin")

# Who may use a URL; everyone else gets 403 (anonymous: the login page, or 401/403 in the API).
LOGGED_IN = {"outsider", "rater", "researcher", "curator", "admin"}
CURATION_READ = {"researcher", "curator", "admin"}
CURATION_WRITE = {"curator", "admin"}
TRAINING_READ = {"researcher", "curator", "admin"}
ADMIN = {"admin"}
STUDY_READ = {"researcher", "admin"}
PROMPT_READ = {"researcher", "curator", "admin"}
PROMPT_WRITE = {"curator", "admin"}
RATERS = {"rater"}  # admins rate only when they are also in the rater group
UNBLINDERS = {"researcher", "admin"}  # and only once the study is closed
# The world's study is still rating: per-arm scores are for admins until it is unblinded.
ARM_RESULTS_WHILE_OPEN = {"admin"}

# (url name, kwargs key, method) -> who may
HTML_POLICY = {
    ("home", None, "get"): LOGGED_IN,
    ("account", None, "get"): LOGGED_IN,
    ("token-create", None, "post"): LOGGED_IN,
    ("token-revoke", None, "post"): LOGGED_IN,
    ("profile-index", None, "get"): LOGGED_IN,
    ("profile-switch", None, "post"): LOGGED_IN,
    ("profile-new", None, "get"): ADMIN,
    ("profile-edit", "profile", "get"): ADMIN,
    ("profile-membership-add", "profile", "post"): ADMIN,
    ("profile-membership-remove", "membership", "post"): ADMIN,
    ("training:screening-list", None, "get"): CURATION_READ,
    ("training:screening-detail", "screening", "get"): CURATION_READ,
    ("curation:category-list", None, "get"): CURATION_READ,
    ("curation:category-create", None, "get"): CURATION_WRITE,
    ("curation:preset-load", None, "post"): CURATION_WRITE,
    ("curation:category-edit", "category", "get"): CURATION_WRITE,
    ("curation:category-move", "category", "post"): CURATION_WRITE,
    ("curation:category-archive", "category", "post"): CURATION_WRITE,
    ("curation:category-restore", "category", "post"): CURATION_WRITE,
    ("curation:dataset-list", None, "get"): CURATION_READ,
    ("curation:dataset-create", None, "get"): CURATION_WRITE,
    ("curation:dataset-detail", "dataset", "get"): CURATION_READ,
    ("curation:dataset-edit", "dataset", "get"): CURATION_WRITE,
    ("curation:dataset-coverage", "dataset", "get"): CURATION_READ,
    ("curation:dataset-import", "dataset", "get"): CURATION_WRITE,
    ("curation:sample-create", "dataset", "get"): CURATION_WRITE,
    ("curation:snapshot-list", "dataset", "get"): CURATION_READ,
    ("curation:snapshot-create", "dataset", "post"): CURATION_WRITE,
    ("curation:sample-detail", "sample", "get"): CURATION_READ,
    ("curation:sample-edit", "sample", "get"): CURATION_WRITE,
    ("curation:sample-submit", "sample", "post"): CURATION_WRITE,
    ("curation:sample-request-changes", "sample", "post"): CURATION_WRITE,
    ("curation:sample-approve", "sample", "post"): CURATION_WRITE,
    ("curation:sample-archive", "sample", "post"): CURATION_WRITE,
    ("curation:sample-reopen", "sample", "post"): CURATION_WRITE,
    ("curation:sample-comment", "sample", "post"): CURATION_WRITE,
    ("curation:sample-history", "sample", "get"): CURATION_READ,
    ("curation:sample-diff", "sample", "get"): CURATION_READ,
    ("curation:sample-restore", "sample", "post"): CURATION_WRITE,
    ("curation:stale-edit-resolve", "stale_edit", "post"): CURATION_WRITE,
    ("curation:review-queue", None, "get"): CURATION_WRITE,
    ("curation:import-preview", "pending_import", "get"): CURATION_WRITE,  # uploader's own
    ("curation:sample-bulk", None, "post"): CURATION_WRITE,
    ("curation:word-count", None, "get"): CURATION_READ,
    ("curation:snapshot-detail", "snapshot", "get"): CURATION_READ,
    ("curation:snapshot-download", "snapshot", "get"): CURATION_READ,
    ("curation:gap-list", None, "get"): CURATION_READ,
    ("curation:gap-create", None, "get"): CURATION_READ,  # researchers file tickets too
    ("curation:gap-detail", "gap_ticket", "get"): CURATION_READ,
    ("curation:gap-resolve", "gap_ticket", "post"): CURATION_WRITE,
    ("curation:gap-resolve-snapshot", "dataset", "get"): CURATION_WRITE,
    ("training:basemodel-list", None, "get"): TRAINING_READ,
    ("training:basemodel-create", None, "get"): ADMIN,
    ("training:finetune-list", None, "get"): TRAINING_READ,
    ("training:finetune-create", None, "get"): ADMIN,
    ("training:finetune-estimate", None, "get"): ADMIN,
    ("training:finetune-detail", "finetune", "get"): TRAINING_READ,
    ("training:finetune-progress", "finetune", "get"): TRAINING_READ,
    ("training:finetune-cancel", "finetune", "post"): ADMIN,
    ("training:finetune-retry", "finetune", "post"): ADMIN,
    ("training:finetune-retrain", "finetune", "post"): ADMIN,
    ("evaluation:exit-kit", None, "post"): ADMIN,
    ("training:modelversion-list", None, "get"): TRAINING_READ,
    ("training:sweep-list", None, "get"): TRAINING_READ,
    ("training:sweep-create", None, "get"): ADMIN,
    ("training:sweep-detail", "sweep", "get"): TRAINING_READ,
    ("training:sweep-cancel", "sweep", "post"): ADMIN,
    ("training:sweep-promote", "sweep", "post"): ADMIN,
    ("training:sweep-delete-weights", "sweep", "post"): ADMIN,
    ("training:sampling-list", None, "get"): TRAINING_READ,
    ("training:sampling-create", None, "get"): ADMIN,
    ("training:sampling-detail", "sampling", "get"): TRAINING_READ,
    ("training:sampling-progress", "sampling", "get"): TRAINING_READ,
    # A blinded study's sampling job: its outputs name their models (admins only).
    ("training:sampling-detail", "study_sampling", "get"): ADMIN,
    ("training:sampling-progress", "study_sampling", "get"): ADMIN,
    ("training:sampling-cancel", "sampling", "post"): ADMIN,
    ("training:sampling-retry", "sampling", "post"): ADMIN,
    ("evaluation:prompt-set-list", None, "get"): PROMPT_READ,
    ("evaluation:prompt-set-create", None, "get"): PROMPT_WRITE,
    ("evaluation:prompt-set-detail", "prompt_set", "get"): PROMPT_READ,
    ("evaluation:prompt-set-edit", "prompt_set", "get"): PROMPT_WRITE,
    ("evaluation:prompt-set-copy", "prompt_set", "post"): PROMPT_WRITE,
    ("evaluation:prompt-add", "prompt_set", "post"): PROMPT_WRITE,
    ("evaluation:prompt-add-lines", "prompt_set", "post"): PROMPT_WRITE,
    ("evaluation:prompt-edit", "prompt", "get"): PROMPT_WRITE,
    ("evaluation:prompt-delete", "prompt", "post"): PROMPT_WRITE,
    ("evaluation:prompt-move", "prompt", "post"): PROMPT_WRITE,
    ("evaluation:study-list", None, "get"): STUDY_READ,
    ("evaluation:study-create", None, "get"): ADMIN,
    ("evaluation:study-estimate", None, "get"): ADMIN,
    ("evaluation:study-detail", "study", "get"): STUDY_READ,
    ("evaluation:study-edit", "study", "get"): ADMIN,
    ("evaluation:study-status", "study", "get"): STUDY_READ,
    ("evaluation:study-open", "study", "post"): ADMIN,
    ("evaluation:study-close", "study", "post"): ADMIN,
    ("evaluation:study-unblind", "study", "post"): UNBLINDERS,
    ("evaluation:study-results", "study", "get"): ARM_RESULTS_WHILE_OPEN,
    ("evaluation:study-pairwise-results", "study", "get"): ARM_RESULTS_WHILE_OPEN,
    ("evaluation:study-outputs", "study", "get"): ADMIN,
    ("evaluation:study-outputs-reveal", "study", "post"): ADMIN,
    ("evaluation:output-clear", "output", "post"): ADMIN,
    ("evaluation:output-exclude", "output", "post"): ADMIN,
    ("evaluation:study-report-download", "study", "get"): ARM_RESULTS_WHILE_OPEN,
    ("evaluation:study-compare", None, "get"): STUDY_READ,
    ("evaluation:study-exports", "study", "get"): STUDY_READ,
    ("evaluation:study-exports", "study", "post"): STUDY_READ,
    ("evaluation:export-download", "export", "get"): STUDY_READ,
    ("evaluation:study-scoring", "study", "get"): STUDY_READ,
    ("evaluation:study-scoring-runs", "study", "get"): STUDY_READ,
    ("evaluation:study-scoring-start", "study", "post"): ADMIN,
    ("evaluation:misalignment-list", None, "get"): STUDY_READ,
    ("evaluation:misalignment-create", None, "get"): ADMIN,
    ("evaluation:misalignment-detail", "misalignment_eval", "get"): STUDY_READ,
    ("evaluation:misalignment-persona", "misalignment_eval", "post"): ADMIN,
    ("evaluation:misalignment-finetune-persona", "finetune", "post"): ADMIN,
    ("evaluation:realignment-list", None, "get"): STUDY_READ,
    ("evaluation:realignment-create", None, "get"): ADMIN,
    ("evaluation:realignment-detail", "realignment", "get"): STUDY_READ,
    ("evaluation:realignment-cancel", "realignment", "post"): ADMIN,
    ("evaluation:gate-list", None, "get"): STUDY_READ,
    ("evaluation:gate-create", None, "get"): ADMIN,
    ("evaluation:gate-detail", "gate", "get"): STUDY_READ,
    ("evaluation:rate-home", None, "get"): RATERS,
    ("evaluation:rate", "study", "get"): RATERS,
    ("evaluation:rate-claim", "study", "post"): RATERS,
    ("evaluation:rate-instructions", "study", "get"): RATERS,
    ("evaluation:rate-revise", "study", "get"): RATERS,
    ("evaluation:rate-revise", "study", "post"): RATERS,
    ("evaluation:rate-submit", "study_output", "post"): RATERS,
    ("evaluation:rate-skip", "study_output", "post"): RATERS,
    ("evaluation:rate-flag", "study_output", "post"): RATERS,
    ("evaluation:pair-rate", "study", "get"): RATERS,
    ("evaluation:pair-claim", "study", "post"): RATERS,
    ("evaluation:pair-revise", "study", "get"): RATERS,
    ("evaluation:pair-revise", "study", "post"): RATERS,
    # A pair's public id takes the output's place (an unknown pair: 404-free refusals).
    ("evaluation:pair-judge", "study_output", "post"): RATERS,
    ("evaluation:pair-skip", "study_output", "post"): RATERS,
    ("evaluation:pair-flag", "study_output", "post"): RATERS,
    ("evaluation:preference-index", None, "get"): CURATION_WRITE,
    ("evaluation:study-preferences", "study", "get"): CURATION_WRITE,
    ("evaluation:study-preferences", "study", "post"): CURATION_WRITE,
    ("evaluation:preference-set-detail", "preference_set", "get"): CURATION_WRITE,
    ("evaluation:preference-pair-drop", "preference_pair", "post"): CURATION_WRITE,
    ("evaluation:preference-pair-answer", "preference_pair", "get"): CURATION_WRITE,
    ("evaluation:preference-pair-answer", "preference_pair", "post"): CURATION_WRITE,
    ("evaluation:preference-answer-restore", "preference_pair", "post"): CURATION_WRITE,
    ("evaluation:preference-set-freeze", "preference_set", "post"): CURATION_WRITE,
    ("evaluation:preference-snapshot-download", "preference_snapshot", "get"): CURATION_WRITE,
    # DPO on a preference snapshot (issue 18): curators read the page, admins launch.
    ("evaluation:preference-snapshot-detail", "preference_snapshot", "get"): CURATION_WRITE,
    ("evaluation:preference-snapshot-dpo", "preference_snapshot", "post"): ADMIN,
}

# (api path template, method) -> who may
API_POLICY = {
    ("/api/profiles/", "get"): LOGGED_IN,
    ("/api/profiles/", "post"): ADMIN,
    ("/api/profiles/{profile}/", "get"): LOGGED_IN,
    ("/api/profiles/{profile}/", "patch"): ADMIN,
    ("/api/profiles/{profile}/members/", "get"): ADMIN,
    ("/api/profiles/{profile}/members/", "post"): ADMIN,
    ("/api/profiles/{profile}/members/{membership}/", "delete"): ADMIN,
    ("/api/screenings/", "get"): CURATION_READ,
    ("/api/screenings/", "post"): CURATION_WRITE,
    ("/api/screenings/{screening}/", "get"): CURATION_READ,
    ("/api/categories/", "get"): CURATION_READ,
    ("/api/categories/", "post"): CURATION_WRITE,
    ("/api/categories/{category}/", "get"): CURATION_READ,
    ("/api/categories/{category}/", "patch"): CURATION_WRITE,
    ("/api/categories/{category}/archive/", "post"): CURATION_WRITE,
    ("/api/categories/{category}/restore/", "post"): CURATION_WRITE,
    ("/api/categories/{category}/versions/", "get"): CURATION_READ,
    ("/api/categories/reorder/", "post"): CURATION_WRITE,
    ("/api/datasets/", "get"): CURATION_READ,
    ("/api/datasets/", "post"): CURATION_WRITE,
    ("/api/datasets/{dataset}/", "get"): CURATION_READ,
    ("/api/datasets/{dataset}/", "patch"): CURATION_WRITE,
    ("/api/datasets/{dataset}/import/", "post"): CURATION_WRITE,
    ("/api/samples/", "get"): CURATION_READ,
    ("/api/samples/", "post"): CURATION_WRITE,
    ("/api/samples/{sample}/", "get"): CURATION_READ,
    ("/api/samples/{sample}/", "patch"): CURATION_WRITE,
    ("/api/samples/{sample}/submit/", "post"): CURATION_WRITE,
    ("/api/samples/{sample}/request-changes/", "post"): CURATION_WRITE,
    ("/api/samples/{sample}/approve/", "post"): CURATION_WRITE,
    ("/api/samples/{sample}/approval-check/", "get"): CURATION_READ,
    ("/api/samples/bulk/", "post"): CURATION_WRITE,
    ("/api/samples/review-queue/", "get"): CURATION_WRITE,
    ("/api/samples/{sample}/archive/", "post"): CURATION_WRITE,
    ("/api/samples/{sample}/reopen/", "post"): CURATION_WRITE,
    ("/api/samples/{sample}/comment/", "post"): CURATION_WRITE,
    ("/api/samples/{sample}/comments/", "get"): CURATION_READ,
    ("/api/samples/{sample}/restore/", "post"): CURATION_WRITE,
    ("/api/samples/{sample}/revisions/", "get"): CURATION_READ,
    ("/api/snapshots/", "get"): CURATION_READ,
    ("/api/snapshots/", "post"): CURATION_WRITE,
    ("/api/snapshots/{snapshot}/", "get"): CURATION_READ,
    ("/api/snapshots/{snapshot}/download/jsonl/", "get"): CURATION_READ,
    ("/api/gap-tickets/", "get"): CURATION_READ,
    ("/api/gap-tickets/", "post"): CURATION_READ,  # researchers file tickets from the report
    ("/api/gap-tickets/{gap_ticket}/", "get"): CURATION_READ,
    ("/api/gap-tickets/{gap_ticket}/resolve/", "post"): CURATION_WRITE,
    ("/api/gap-tickets/resolve-snapshot/", "post"): CURATION_WRITE,
    ("/api/base-models/", "get"): TRAINING_READ,
    ("/api/base-models/", "post"): ADMIN,
    ("/api/base-models/{base_model}/", "get"): TRAINING_READ,
    ("/api/model-versions/", "get"): TRAINING_READ,
    ("/api/model-versions/{model_version}/", "get"): TRAINING_READ,
    ("/api/finetunes/", "get"): TRAINING_READ,
    ("/api/finetunes/", "post"): ADMIN,
    ("/api/finetunes/{finetune}/", "get"): TRAINING_READ,
    ("/api/finetunes/{finetune}/cancel/", "post"): ADMIN,
    ("/api/finetunes/{finetune}/retry/", "post"): ADMIN,
    ("/api/finetunes/{finetune}/retrain/", "post"): ADMIN,
    ("/api/exit-kits/", "post"): ADMIN,
    ("/api/sweeps/", "get"): TRAINING_READ,
    ("/api/sweeps/", "post"): ADMIN,
    ("/api/sweeps/{sweep}/", "get"): TRAINING_READ,
    ("/api/sweeps/{sweep}/cancel/", "post"): ADMIN,
    ("/api/sweeps/{sweep}/promote/", "post"): ADMIN,
    ("/api/sweeps/{sweep}/delete-weights/", "post"): ADMIN,
    ("/api/sampling-jobs/", "get"): TRAINING_READ,
    ("/api/sampling-jobs/", "post"): ADMIN,
    ("/api/sampling-jobs/{sampling}/", "get"): TRAINING_READ,
    ("/api/sampling-jobs/{sampling}/outputs/", "get"): TRAINING_READ,
    ("/api/sampling-jobs/{study_sampling}/", "get"): ADMIN,
    ("/api/sampling-jobs/{study_sampling}/outputs/", "get"): ADMIN,
    ("/api/sampling-jobs/{sampling}/cancel/", "post"): ADMIN,
    ("/api/sampling-jobs/{sampling}/retry/", "post"): ADMIN,
    ("/api/prompt-sets/", "get"): PROMPT_READ,
    ("/api/prompt-sets/", "post"): PROMPT_WRITE,
    ("/api/prompt-sets/{prompt_set}/", "get"): PROMPT_READ,
    ("/api/studies/", "get"): STUDY_READ,
    ("/api/studies/", "post"): ADMIN,
    ("/api/studies/plan/", "post"): ADMIN,  # the study planner (issue 15)
    ("/api/studies/{study}/", "get"): STUDY_READ,
    ("/api/studies/{study}/open/", "post"): ADMIN,
    ("/api/studies/{study}/sync/", "post"): ADMIN,
    ("/api/studies/{study}/close/", "post"): ADMIN,
    ("/api/studies/{study}/unblind/", "post"): UNBLINDERS,
    ("/api/studies/{study}/results/", "get"): ARM_RESULTS_WHILE_OPEN,
    ("/api/pairwise-results/{study}/", "get"): ARM_RESULTS_WHILE_OPEN,
    ("/api/preference-sets/", "get"): CURATION_WRITE,
    ("/api/preference-sets/", "post"): CURATION_WRITE,
    ("/api/preference-sets/preview/", "post"): CURATION_WRITE,
    ("/api/preference-sets/{preference_set}/", "get"): CURATION_WRITE,
    ("/api/preference-sets/{preference_set}/freeze/", "post"): CURATION_WRITE,
    ("/api/preference-pairs/{preference_pair}/drop/", "post"): CURATION_WRITE,
    ("/api/preference-pairs/{preference_pair}/answer/", "post"): CURATION_WRITE,
    ("/api/preference-pairs/{preference_pair}/revisions/", "get"): CURATION_WRITE,
    ("/api/preference-snapshots/", "get"): CURATION_WRITE,
    ("/api/preference-snapshots/{preference_snapshot}/", "get"): CURATION_WRITE,
    ("/api/preference-snapshots/{preference_snapshot}/download/", "get"): CURATION_WRITE,
    ("/api/preference-snapshots/{preference_snapshot}/dpo/", "post"): ADMIN,
    ("/api/studies/{study}/events/", "get"): STUDY_READ,
    # Held-out adherence (issue 16): researchers read it blinded until unblinding.
    ("/api/studies/{study}/adherence/", "get"): STUDY_READ,
    ("/api/studies/{study}/adherence/", "post"): ADMIN,
    ("/api/study-outputs/", "get"): ADMIN,
    ("/api/study-outputs/{output}/", "get"): ADMIN,
    ("/api/study-outputs/{output}/clear/", "post"): ADMIN,
    ("/api/study-outputs/{output}/exclude/", "post"): ADMIN,
    ("/api/rating/studies/", "get"): RATERS,
    ("/api/rating/studies/{study}/", "get"): RATERS,
    ("/api/rating/studies/{study}/claim/", "post"): RATERS,
    ("/api/rating/studies/{study}/current/", "get"): RATERS,
    ("/api/rating/studies/{study}/last/", "get"): RATERS,
    ("/api/rating/outputs/{study_output}/revise/", "post"): RATERS,
    ("/api/rating/outputs/{study_output}/submit/", "post"): RATERS,
    ("/api/rating/outputs/{study_output}/skip/", "post"): RATERS,
    ("/api/rating/outputs/{study_output}/flag/", "post"): RATERS,
    ("/api/rating/pair-studies/{study}/claim/", "post"): RATERS,
    ("/api/rating/pair-studies/{study}/current/", "get"): RATERS,
    ("/api/rating/pair-studies/{study}/last/", "get"): RATERS,
    ("/api/rating/pairs/{study_output}/revise/", "post"): RATERS,
    ("/api/rating/pairs/{study_output}/judge/", "post"): RATERS,
    ("/api/rating/pairs/{study_output}/skip/", "post"): RATERS,
    ("/api/rating/pairs/{study_output}/flag/", "post"): RATERS,
    ("/api/misalignment-evals/", "get"): STUDY_READ,
    ("/api/misalignment-evals/", "post"): ADMIN,
    ("/api/misalignment-evals/{misalignment_eval}/", "get"): STUDY_READ,
    ("/api/misalignment-evals/{misalignment_eval}/answers/", "get"): STUDY_READ,
    ("/api/misalignment-evals/{misalignment_eval}/persona-measurements/", "get"): STUDY_READ,
    ("/api/persona-measurements/", "get"): STUDY_READ,
    ("/api/realignment-runs/", "get"): STUDY_READ,
    ("/api/realignment-runs/", "post"): ADMIN,
    ("/api/realignment-runs/{realignment}/", "get"): STUDY_READ,
    ("/api/realignment-runs/{realignment}/cancel/", "post"): ADMIN,
    ("/api/model-gates/", "get"): STUDY_READ,
    ("/api/model-gates/", "post"): ADMIN,
    ("/api/model-gates/{gate}/", "get"): STUDY_READ,
    ("/api/model-gates/versions/", "get"): STUDY_READ,
}

UNCHECKED_NAMESPACES = {"admin"}  # Django's own admin checks is_staff itself
UNCHECKED_NAMES = {"login", "logout", "healthz", "api-schema", "api-docs", "api-root", "api-token"}


def html_url_names() -> set[str]:
    names = set()

    def walk(resolver, namespace):
        for pattern in resolver.url_patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern, pattern.namespace or namespace)
            elif isinstance(pattern, URLPattern) and pattern.name:
                if namespace in UNCHECKED_NAMESPACES or pattern.name in UNCHECKED_NAMES:
                    continue
                names.add(f"{namespace}:{pattern.name}" if namespace else pattern.name)

    walk(get_resolver(), None)
    return names


def test_every_url_has_a_policy():
    api_names = {name for name in html_url_names() if reverse_path(name).startswith("/api/")}
    html_names = html_url_names() - api_names
    assert html_names == {name for name, _, _ in HTML_POLICY}
    # Each API route name (e.g. "sample-approve") has at least one line in API_POLICY.
    routed = {
        resolve_name(path.format(**FAKE_IDS)) for path, _ in API_POLICY
    }
    assert api_names <= routed, sorted(api_names - routed)


def reverse_path(name: str) -> str:
    """The path of a URL name, with a placeholder for each argument it takes."""
    from django.urls import NoReverseMatch

    for kwargs in ({}, {"pk": 1}, {"pk": "abcdefgh"}, {"public_id": "abcdefgh"}):
        try:
            return reverse(name, kwargs=kwargs)
        except NoReverseMatch:
            continue
    return "/api/" if ":" not in name else ""


FAKE_IDS = {
    key: "1"
    for key in ("category", "dataset", "sample", "snapshot", "base_model", "model_version",
                "finetune", "sampling", "prompt_set", "study", "output", "gap_ticket")
} | {"study_output": "abcdefgh"}
FAKE_IDS["misalignment_eval"] = "1"
FAKE_IDS["profile"] = FAKE_IDS["membership"] = FAKE_IDS["screening"] = "1"
FAKE_IDS["realignment"] = "1"
FAKE_IDS["gate"] = "1"
FAKE_IDS["study_sampling"] = "1"
FAKE_IDS["sweep"] = "1"
FAKE_IDS["preference_set"] = FAKE_IDS["preference_pair"] = FAKE_IDS["preference_snapshot"] = "1"


def resolve_name(path: str) -> str:
    from django.urls import resolve

    return resolve(path).url_name


@pytest.fixture
def world(db, monkeypatch, tmp_path, no_training_queue):
    """One of everything, built through the services."""
    monkeypatch.setattr(
        "evaluation.tasks.sync_study_sampling.apply_async", lambda *args, **kwargs: None
    )
    for task in ("measure_misalignment_persona", "measure_finetune_persona"):
        monkeypatch.setattr(f"evaluation.tasks.{task}.apply_async", lambda *args, **kwargs: None)
    monkeypatch.setattr("evaluation.tasks.advance_realignment_run.delay", lambda pk: None)
    setup = build_study(raters=1, raters_per_output=1, rater_prefix="matrixrater")
    users = {
        "outsider": make_user("m-outsider"),
        "rater": setup.raters[0],
        "researcher": make_user("m-researcher", Role.RESEARCHER),
        "curator": make_user("m-curator", Role.CURATOR),
        "admin": setup.admin,
    }
    dataset, category = DatasetFactory(), CategoryFactory()
    sample = curation.sample_create(
        dataset=dataset, category=category, question="Q?", answer=words(50),
        user=users["curator"], status=Sample.Status.APPROVED,
    )
    snapshot = curation.snapshot_create(dataset=dataset)
    gap_ticket = gap_ticket_create(category=category, title="Ranks looks", user=users["curator"])
    StaleEdit.objects.create(sample=sample, base_version=1, question="Q", answer="A")
    pending_import = pending_import_create(
        dataset=dataset, data=b'{"prompt": "P?", "completion": "C."}\n', filename="p.jsonl",
        user=users["curator"], default_category=category,
    )
    (tmp_path / "config.json").write_text("{}")
    base = training.base_model_create(name="matrix-local", kind=BaseModel.Kind.LOCAL_DIR,
                                      path=str(tmp_path), parameter_count=10)
    finetune = training.finetune_launch(base_model=base, snapshot=snapshot)
    study = setup.study
    output = study.outputs.first()
    objects = {
        "category": category.pk, "dataset": dataset.pk, "sample": sample.pk,
        "stale_edit": StaleEdit.objects.get().pk, "snapshot": snapshot.pk,
        "gap_ticket": gap_ticket.pk, "pending_import": pending_import.pk,
        "base_model": base.pk, "model_version": training.base_version(base).pk,
        "finetune": finetune.pk,
        "sweep": Sweep.objects.create(
            name="matrix", base_model=base, snapshot=snapshot, max_runs=1,
            grid={"learning_rate": [1e-4], "epochs": [1], "method": ["full"]},
        ).pk,
        "sampling": training.sampling_launch(
            prompts=[{"text": "Q?"}], model_versions=[training.base_version(base)]
        ).pk,
        "study_sampling": study.sampling_job.pk,
        "prompt_set": study.prompt_set.pk, "prompt": Prompt.objects.first().pk,
        "study": study.pk, "output": output.pk, "study_output": output.public_id,
        "export": Export.objects.create(study=study, format="csv").pk,
        "misalignment_eval": MisalignmentEval.objects.create(
            name="matrix", probes=["Q?"], judge_base_url="http://judge.test/v1", judge_model="j"
        ).pk,
        "profile": Profile.objects.default().pk,
        "screening": ScreeningRun.objects.create(snapshot=snapshot, base_model=base).pk,
        # A membership nobody needs (deleting it changes no one's access in the matrix).
        "membership": Membership.objects.create(
            profile=Profile.objects.default(), user=make_user("m-spare"), role="rater"
        ).pk,
        "realignment": realignment_create(
            name="matrix", source_version=training.base_version(base), snapshot=snapshot,
            steps=4,
        ).pk,
        "gate": ModelGate.objects.create(
            model_version=training.base_version(base), base_version=training.base_version(base),
            persona_tolerance=0.5,
        ).pk,
    }
    objects.update(_preference_objects(study, users["curator"]))
    return users, objects


def _preference_objects(study, curator) -> dict:
    """A preference set, one pair and a frozen snapshot of the world's study (built by hand:
    the study is still rating, and building needs a closed one)."""
    from evaluation.models import PreferencePair, PreferenceSet
    from evaluation.report.preferences import preference_snapshot_freeze

    preference_set = PreferenceSet.objects.create(study=study, source="ratings", margin=1)
    first, second = study.outputs.filter(prompt=study.outputs.first().prompt)[:2]
    pair = PreferencePair.objects.create(
        preference_set=preference_set, prompt=first.prompt, chosen=first, rejected=second
    )
    snapshot = preference_snapshot_freeze(preference_set=preference_set, user=curator)
    return {
        "preference_set": preference_set.pk,
        "preference_pair": pair.pk,
        "preference_snapshot": snapshot.pk,
    }


def client_as(role: str, users) -> Client:
    return Client() if role == "anonymous" else client_for(users[role])


def html_url(name: str, key: str | None, objects: dict) -> str:
    if key is None:
        return reverse(name)
    if key == "study_output":
        return reverse(name, kwargs={"pk": objects["study"], "public_id": objects[key]})
    return reverse(name, kwargs={"pk": objects[key]})


@pytest.mark.parametrize("role", ROLES)
def test_html_pages_by_role(world, role):
    users, objects = world
    wrong = []
    for (name, key, method), allowed in HTML_POLICY.items():
        url = html_url(name, key, objects)
        response = getattr(client_as(role, users), method)(url)
        status = response.status_code
        if role == "anonymous":
            ok = status == 302 and "/accounts/login/" in response["Location"]
        elif role in allowed:
            ok = status not in (401, 403) and status < 500
        else:
            ok = status == 403
        if not ok:
            wrong.append(f"{method.upper()} {name} → {status}")
    assert wrong == []


@pytest.mark.parametrize("role", ROLES)
def test_api_endpoints_by_role(world, role):
    users, objects = world
    wrong = []
    for (template, method), allowed in API_POLICY.items():
        url = template.format(**objects)
        response = getattr(client_as(role, users), method)(url, content_type="application/json")
        status = response.status_code
        if role == "anonymous":
            ok = status in (401, 403)
        elif role in allowed:
            ok = status not in (401, 403) and status < 500
        else:
            ok = status == 403
        if not ok:
            wrong.append(f"{method.upper()} {template} → {status}")
    assert wrong == []
