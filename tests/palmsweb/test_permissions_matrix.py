"""Every URL and API endpoint × every role (and anonymous) gets the access the design gives.

The policy is in permission_policy.py. A URL added without a line here fails
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
from evaluation.models import ExitKitRun, Export, MisalignmentEval, ModelGate, Prompt
from palmsweb.models import Membership, Profile
from palmsweb.roles import Role
from tests.conftest import client_for, make_user
from tests.evaluation.conftest import build_study
from tests.factories import CategoryFactory, DatasetFactory, words
from tests.palmsweb.permission_policy import (  # noqa: F401  (the policy tables)
    ADMIN,
    API_POLICY,
    ARM_RESULTS_WHILE_OPEN,
    CURATION_READ,
    CURATION_WRITE,
    HTML_POLICY,
    LOGGED_IN,
    PROMPT_READ,
    PROMPT_WRITE,
    RATERS,
    ROLES,
    STUDY_READ,
    TRAINING_READ,
    UNBLINDERS,
)
from training import services as training
from training.models import BaseModel, ScreeningRun, Sweep

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
    routed = {resolve_name(path.format(**FAKE_IDS)) for path, _ in API_POLICY}
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
                "finetune", "sampling", "prompt_set", "study", "output", "gap_ticket",
                "misalignment_eval", "profile", "membership", "screening", "realignment",
                "gate", "study_sampling", "sweep", "preference_set", "preference_pair",
                "preference_snapshot", "exit_kit")
} | {"study_output": "abcdefgh"}


def resolve_name(path: str) -> str:
    from django.urls import resolve

    return resolve(path.partition("?")[0]).url_name


@pytest.fixture
def world(db, monkeypatch, tmp_path, no_training_queue):
    """One of everything, built through the services."""
    for task in ("sync_study_sampling", "measure_misalignment_persona", "measure_finetune_persona"):
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
        "exit_kit": ExitKitRun.objects.create().pk,
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
