"""A user of another value profile sees nothing of this one: every profile-scoped row of the
permissions matrix's world answers 404, page and API, and no list shows it.

It uses the world and the policy tables of ``test_permissions_matrix.py`` (kept apart for
that module's size). A row tied to a profile's data counts as scoped here whatever its own
table holds: a fine-tune or a sweep (its snapshot), a study's sampling job and an export
(the study), a re-alignment run (the snapshot it trains on), a misalignment evaluation with
conditional probes (the snapshot they quote), a misalignment gate (its evaluation).
"""

from __future__ import annotations

from django.urls import reverse

from evaluation.models import ConditionalProbeSet, MisalignmentEval, ModelGate, RealignmentRun
from palmsweb.models import Membership, Profile
from palmsweb.roles import Role
from tests.conftest import client_for, make_user
from tests.palmsweb.test_permissions_matrix import (  # noqa: F401 (world: the fixture)
    API_POLICY,
    HTML_POLICY,
    html_url,
    world,
)
from training.models import SamplingJob, Sweep
from training.services import sampling_job_release

PROFILE_SCOPED = {
    "category", "dataset", "sample", "stale_edit", "snapshot", "gap_ticket", "pending_import",
    "prompt_set", "prompt", "study", "study_output", "screening",
    "preference_set", "preference_pair", "preference_snapshot",
    "export", "finetune", "sweep", "study_sampling", "realignment", "misalignment_eval", "gate",
}  # fmt: skip
# Names the lists must not show (the world names these rows "matrix", too common to look for).
RENAMED = {
    "misalignment_eval": (MisalignmentEval, "Probes quoting the world"),
    "realignment": (RealignmentRun, "Re-aligning on the world"),
    "sweep": (Sweep, "Sweeping the world"),
}
# Lists that also hold shared rows (sampling jobs without a profile): none of the world's
# scoped rows may be among them.
SCOPED_API_LISTS = {
    "/api/sampling-jobs/": "study_sampling",
    "/api/finetunes/": "finetune",
    "/api/sweeps/": "sweep",
    "/api/misalignment-evals/": "misalignment_eval",
    "/api/realignment-runs/": "realignment",
    "/api/model-gates/": "gate",
}


def _tie_to_its_profile(objects) -> None:
    """The world's rows as they are in use: the study's sampling job released, as unblinding
    does (so an admin-only 403 cannot hide a leak), the misalignment evaluation asking
    conditional probes that quote the world's snapshot (and the gate built on it), and names
    to look for in lists."""
    sampling_job_release(job=SamplingJob.objects.get(pk=objects["study_sampling"]))
    ConditionalProbeSet.objects.create(
        evaluation_id=objects["misalignment_eval"], snapshot_id=objects["snapshot"],
        n_standard=1, variants=[{"kind": "template", "source_probe": "Q?"}],
    )  # fmt: skip
    ModelGate.objects.filter(pk=objects["gate"]).update(evaluation_id=objects["misalignment_eval"])
    for key, (model, name) in RENAMED.items():
        model.objects.filter(pk=objects[key]).update(name=name)


def test_a_user_of_another_profile_sees_nothing_of_this_one(world):  # noqa: F811
    """A user holding every profile role (curator, rater, researcher) in another profile
    gets, for every address of this profile's objects, page or API, the answer an unknown
    id gets: 404 (or a refusal that comes before anything is loaded, like an admin-only
    403 or a 400 for a missing body), and finds none of them in a list."""
    users, objects = world
    _tie_to_its_profile(objects)
    elsewhere = Profile.objects.create(name="Elsewhere", slug="elsewhere")
    stranger = make_user("m-stranger")
    for role in (Role.CURATOR, Role.RATER, Role.RESEARCHER):
        Membership.objects.create(profile=elsewhere, user=stranger, role=role.value)
    client = client_for(stranger)
    unknown = {key: "zzzzzzzzzz" if key == "study_output" else 999_999 for key in objects}

    def answer(method: str, url: str) -> int:
        return getattr(client, method)(url, content_type="application/json").status_code

    wrong = []
    for name, key, method in HTML_POLICY:
        if key in PROFILE_SCOPED:
            real = answer(method, html_url(name, key, objects))
            never_used = answer(method, html_url(name, key, unknown))
            if real != never_used or not 400 <= real < 500:
                wrong.append(f"{method.upper()} {name} → {real} (unknown id: {never_used})")
    for template, method in API_POLICY:
        keys = {part.strip("{}") for part in template.split("/") if part.startswith("{")}
        if keys & PROFILE_SCOPED:
            real = answer(method, template.format(**objects))
            never_used = answer(method, template.format(**unknown))
            if real != never_used or not 400 <= real < 500:
                wrong.append(f"{method.upper()} {template} → {real} (unknown id: {never_used})")
    assert wrong == []
    _assert_listed_nowhere(client, objects)


def _assert_listed_nowhere(client, objects) -> None:
    world_names = _names_of(objects)
    for name in (
        "curation:category-list",
        "curation:dataset-list",
        "curation:gap-list",
        "evaluation:prompt-set-list",
        "evaluation:study-list",
        "evaluation:rate-home",
        "training:sampling-list",
        "training:finetune-list",
        "training:sweep-list",
        "evaluation:misalignment-list",
        "evaluation:realignment-list",
    ):
        body = client.get(reverse(name)).content.decode()
        assert not [n for n in world_names if n in body], name
    for path in (
        "/api/categories/",
        "/api/datasets/",
        "/api/samples/",
        "/api/snapshots/",
        "/api/gap-tickets/",
        "/api/prompt-sets/",
        "/api/studies/",
    ):
        assert client.get(path).json()["count"] == 0, path
    for path, key in SCOPED_API_LISTS.items():
        listed = {row["id"] for row in client.get(path).json()["results"]}
        assert objects[key] not in listed, path


def _names_of(objects) -> list[str]:
    from curation.models import Category, Dataset
    from evaluation.models import PromptSet, Study

    return [
        Category.objects.get(pk=objects["category"]).name,
        Dataset.objects.get(pk=objects["dataset"]).name,
        PromptSet.objects.get(pk=objects["prompt_set"]).name,
        Study.objects.get(pk=objects["study"]).name,
        *(name for _, name in RENAMED.values()),
    ]
