"""Nothing a rater's browser or API token can reach reveals the arm or the model.

Every rater-reachable page, fragment, script and API response of a running study is
collected, then searched for the arm labels, the model and base-model names, the size
tags and every internal id that maps to an arm (sampling job, generations, model
versions, base model, study arms, study outputs). The ids start at distinctive values
(see conftest), so a leak cannot hide among small numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from evaluation import services
from evaluation.models import Rating, StudyArm, StudyOutput
from tests.conftest import client_for
from tests.evaluation.conftest import BASE_MODEL_NAME, SIZE_TAG, VERSION_NAMES, build_study
from training.models import BaseModel, Generation

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}
ARM_WORDS = re.compile(r"\b(base|control|values[\s_-]?targeted)\b", re.IGNORECASE)


def forbidden_patterns(study) -> list[re.Pattern]:
    names = [
        BASE_MODEL_NAME,
        SIZE_TAG,
        "77M",
        "Quokkalith",
        "ctl-ft",
        "vt-ft",
        *VERSION_NAMES.values(),
    ]
    for arm in StudyArm.objects.filter(study=study).select_related("model_version"):
        names += [arm.model_version.name, arm.size_tag, arm.model_version.size_label]
    patterns = [re.compile(r"(?<![\w-])" + re.escape(n) + r"(?![\w-])") for n in set(names)]
    ids = {study.sampling_job_id}
    ids |= set(Generation.objects.filter(job=study.sampling_job).values_list("pk", flat=True))
    ids |= set(StudyArm.objects.filter(study=study).values_list("pk", flat=True))
    ids |= set(StudyArm.objects.filter(study=study).values_list("model_version_id", flat=True))
    ids |= set(StudyOutput.objects.filter(study=study).values_list("pk", flat=True))
    ids |= set(BaseModel.objects.values_list("pk", flat=True))
    assert min(ids) > 100_000  # distinctive, or this test proves little
    patterns += [re.compile(r"(?<!\d)" + str(i) + r"(?!\d)") for i in ids]
    return patterns


def assert_blind(label: str, text: str, patterns, *, arm_words: bool = True) -> None:
    for pattern in patterns:
        match = pattern.search(text)
        assert match is None, f"{label} leaks {match.group(0)!r}: …{snippet(text, match)}…"
    if arm_words:
        match = ARM_WORDS.search(text)
        assert match is None, f"{label} names an arm: …{snippet(text, match)}…"


def snippet(text: str, match) -> str:
    return text[max(0, match.start() - 60) : match.end() + 60]


def collect_rater_views(study, rater) -> list[tuple[str, str, bool]]:
    """(label, content, check arm words) for everything this rater can reach."""
    seen: list[tuple[str, str, bool]] = []
    client = client_for(rater)

    def keep(label, response, arm_words=True):
        assert response.status_code < 500, label
        body = response.content.decode()
        headers = " ".join(f"{k}: {v}" for k, v in response.headers.items())
        seen.append((label, body + "\n" + headers, arm_words))
        return response

    # The home page is generic text about PALMS ("values-targeted dataset"), not study
    # data: names and ids are checked there, the arm words are not.
    keep("home", client.get(reverse("home")), arm_words=False)
    keep("rate home", client.get(reverse("evaluation:rate-home")))
    rate = reverse("evaluation:rate", args=[study.pk])
    keep("rate page (start)", client.get(rate))
    keep("claim (plain)", client.post(reverse("evaluation:rate-claim", args=[study.pk])))
    keep("rate page (task)", client.get(rate))
    keep("claim (htmx)", client.post(reverse("evaluation:rate-claim", args=[study.pk]), **HX))

    def current():
        return Rating.objects.get(study=study, rater=rater, status="claimed").output

    def url(name):
        return reverse(f"evaluation:{name}", args=[study.pk, current().public_id])

    keep("submit without score", client.post(url("rate-submit"), {}, **HX))
    keep("submit (htmx)", client.post(url("rate-submit"), {"score": "4"}, **HX))
    keep("skip (htmx)", client.post(url("rate-skip"), **HX))
    keep("flag (htmx)", client.post(url("rate-flag"), {"reason": "odd"}, **HX))
    keep("submit (plain)", client.post(url("rate-submit"), {"score": "2"}))
    keep("rate page (after submit)", client.get(rate))
    keep("instructions", client.get(reverse("evaluation:rate-instructions", args=[study.pk])))
    revise = reverse("evaluation:rate-revise", args=[study.pk])
    keep("change the last rating (page)", client.get(revise))
    keep("change the last rating (htmx)", client.get(revise, **HX))
    last = Rating.objects.filter(rater=rater, status="completed").latest("completed_at")
    keep(
        "change the last rating (save)",
        client.post(revise, {"output": last.output.public_id, "score": "1"}, **HX),
    )
    keep(
        "submit of an unclaimed id",
        client.post(
            reverse("evaluation:rate-submit", args=[study.pk, "unknownid"]), {"score": "3"}, **HX
        ),
    )
    # Pages a rater may not open answer 403 without detail.
    for name in ("study-list", "study-create", "prompt-set-list"):
        keep(f"forbidden {name}", client.get(reverse(f"evaluation:{name}")))
    for name in ("study-detail", "study-results", "study-outputs", "study-status"):
        keep(f"forbidden {name}", client.get(reverse(f"evaluation:{name}", args=[study.pk])))
    script = Path(settings.BASE_DIR, "static", "js", "rating.js").read_text()
    seen.append(("rating.js", script, True))

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=rater).key}")
    keep("api studies", api.get("/api/rating/studies/"))
    keep("api study", api.get(f"/api/rating/studies/{study.pk}/"))
    claim = keep("api claim", api.post(f"/api/rating/studies/{study.pk}/claim/"))
    keep("api current", api.get(f"/api/rating/studies/{study.pk}/current/"))
    public_id = claim.json()["output"]
    keep(
        "api submit",
        api.post(f"/api/rating/outputs/{public_id}/submit/", {"score": 5}, format="json"),
    )
    keep(
        "api submit again (conflict)",
        api.post(f"/api/rating/outputs/{public_id}/submit/", {"score": 1}, format="json"),
    )
    public_id = api.post(f"/api/rating/studies/{study.pk}/claim/").json()["output"]
    keep("api skip", api.post(f"/api/rating/outputs/{public_id}/skip/"))
    public_id = api.post(f"/api/rating/studies/{study.pk}/claim/").json()["output"]
    keep(
        "api flag",
        api.post(f"/api/rating/outputs/{public_id}/flag/", {"reason": "x"}, format="json"),
    )
    keep("api unknown output", api.post("/api/rating/outputs/unknownid/skip/"))
    last = keep("api last rating", api.get(f"/api/rating/studies/{study.pk}/last/"))
    keep(
        "api revise",
        api.post(
            f"/api/rating/outputs/{last.json()['output']}/revise/", {"score": 2}, format="json"
        ),
    )
    for path in (
        f"/api/studies/{study.pk}/",
        f"/api/studies/{study.pk}/results/",
        "/api/study-outputs/",
        "/api/prompt-sets/",
    ):
        keep(f"api forbidden {path}", api.get(path))
    return seen


def test_no_rater_page_or_payload_names_an_arm_a_model_or_an_internal_id(no_queue):
    setup = build_study(samples=2)
    study = setup.study
    patterns = forbidden_patterns(study)
    rater = setup.raters[0]
    views = collect_rater_views(study, rater)
    assert len(views) > 25
    for label, text, arm_words in views:
        assert_blind(label, text, patterns, arm_words=arm_words)
    # Finish the study and close it: the closing pages stay blind as well.
    while (claim := services.rating_claim_next(study=study, rater=rater)) is not None:
        services.rating_submit(public_id=claim.output.public_id, rater=rater, score=3)
    client = client_for(rater)
    empty = client.post(reverse("evaluation:rate-claim", args=[study.pk]), **HX)
    services.study_close(study=study, user=setup.admin)
    closed = client.get(reverse("evaluation:rate", args=[study.pk]))
    for label, response in (("empty", empty), ("closed", closed)):
        assert_blind(label, response.content.decode(), patterns)


def test_the_check_would_catch_a_leak(no_queue):
    """The net has no holes where it matters: the admin's outputs page, which does show
    arms and models, fails it."""
    setup = build_study()
    patterns = forbidden_patterns(setup.study)
    admin = client_for(setup.admin)
    admin.post(reverse("evaluation:study-outputs-reveal", args=[setup.study.pk]), {"reveal": "1"})
    page = admin.get(reverse("evaluation:study-outputs", args=[setup.study.pk])).content.decode()
    with pytest.raises(AssertionError):
        assert_blind("admin outputs", page, patterns)


def test_public_ids_are_random_not_derived_from_order(rating_study):
    outputs = list(StudyOutput.objects.filter(study=rating_study.study).order_by("pk"))
    ids = [o.public_id for o in outputs]
    assert len(set(ids)) == len(ids)
    assert ids != sorted(ids)  # 12 random ids in creation order: sorted only by chance
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", i) for i in ids)
