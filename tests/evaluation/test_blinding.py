"""Nothing a rater's browser or API token can reach reveals the arm or the model.

Every rater-reachable page, fragment, script and API response of a running study is
collected, then searched for the arm labels, the model and base-model names, the size
tags and every internal id that maps to an arm (sampling job, generations, model
versions, base model, study arms, study outputs). The ids start at distinctive values
(see conftest), so a leak cannot hide among small numbers.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from rest_framework.test import APIClient

from evaluation import errors
from evaluation.models import Export, PairJudgment, Rating, Study, StudyArm, StudyOutput, StudyPair
from evaluation.report import exports
from evaluation.studies import lifecycle, pairwise_queue, queue
from palmsweb.roles import Role
from tests.conftest import api_token, client_for, make_user
from tests.evaluation.conftest import BASE_MODEL_NAME, SIZE_TAG, VERSION_NAMES, build_study
from tests.palmsweb.test_permissions_matrix import (
    API_POLICY,
    HTML_POLICY,
    html_url,
    world,  # noqa: F401  (the fixture)
)
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
    ids |= set(StudyPair.objects.filter(study=study).values_list("pk", flat=True))
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
    for name in ("task-keys.js", "rating.js"):
        seen.append((name, Path(settings.BASE_DIR, "static", "js", name).read_text(), True))

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(rater)}")
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
    while (claim := queue.rating_claim_next(study=study, rater=rater)) is not None:
        queue.rating_submit(public_id=claim.output.public_id, rater=rater, score=3)
    client = client_for(rater)
    empty = client.post(reverse("evaluation:rate-claim", args=[study.pk]), **HX)
    lifecycle.study_close(study=study, user=setup.admin)
    closed = client.get(reverse("evaluation:rate", args=[study.pk]))
    for label, response in (("empty", empty), ("closed", closed)):
        assert_blind(label, response.content.decode(), patterns)


def test_a_free_arm_label_reaches_no_rater(no_queue):
    """An arm's free label ("values-targeted + DPO") names the arm as surely as its model:
    no page or payload a rater can reach may hold it, nor its distinctive word."""
    label = "values-targeted + DPO"
    setup = build_study(samples=2, labelled=label)
    study = setup.study
    assert StudyArm.objects.filter(study=study, label=label).exists()
    patterns = forbidden_patterns(study) + [re.compile(re.escape(label)), re.compile("DPO")]
    views = collect_rater_views(study, setup.raters[1])
    assert len(views) > 25
    for name, text, arm_words in views:
        assert_blind(name, text, patterns, arm_words=arm_words)


def collect_pairwise_views(study, rater) -> list[tuple[str, str, bool]]:
    """(label, content, check arm words) for everything a rater can reach in a pairwise
    study: its page in every state, the htmx answers, the script and the API."""
    seen: list[tuple[str, str, bool]] = []
    client = client_for(rater)

    def keep(label, response):
        assert response.status_code < 500, label
        headers = " ".join(f"{k}: {v}" for k, v in response.headers.items())
        seen.append((label, response.content.decode() + "\n" + headers, True))
        return response

    keep("rate home", client.get(reverse("evaluation:rate-home")))
    keep("1–5 address of a pairwise study", client.get(reverse("evaluation:rate", args=[study.pk])))
    page = reverse("evaluation:pair-rate", args=[study.pk])
    keep("pair page (intro)", client.get(page))
    keep("claim (plain)", client.post(reverse("evaluation:pair-claim", args=[study.pk])))
    keep("pair page (task)", client.get(page))
    keep("claim (htmx)", client.post(reverse("evaluation:pair-claim", args=[study.pk]), **HX))

    def url(name):
        held = PairJudgment.objects.get(study=study, rater=rater, status="claimed")
        return reverse(f"evaluation:{name}", args=[study.pk, held.pair.public_id])

    keep("judge without verdict", client.post(url("pair-judge"), {}, **HX))
    keep("judge (htmx)", client.post(url("pair-judge"), {"verdict": "a", "reason": "r"}, **HX))
    keep("skip (htmx)", client.post(url("pair-skip"), **HX))
    keep("flag (htmx)", client.post(url("pair-flag"), {"flag_reason": "odd"}, **HX))
    keep("judge (plain)", client.post(url("pair-judge"), {"verdict": "tie"}))
    keep("unknown pair", client.post(reverse("evaluation:pair-skip", args=[study.pk, "nopair"])))
    revise = reverse("evaluation:pair-revise", args=[study.pk])
    keep("change the last judgment (page)", client.get(revise))
    keep("change the last judgment (htmx)", client.get(revise, **HX))
    last = PairJudgment.objects.filter(study=study, rater=rater, status="completed")
    last = last.order_by("-completed_at", "-pk").first()
    keep("change the last judgment without verdict", client.post(revise, {}, **HX))
    keep("change the last judgment (save)",
         client.post(revise, {"pair": last.pair.public_id, "verdict": "b"}, **HX))  # fmt: skip
    script = Path(settings.BASE_DIR, "static", "js", "pairwise.js").read_text()
    seen.append(("pairwise.js", script, True))

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(rater)}")
    keep("api studies", api.get("/api/rating/studies/"))
    keep("api study", api.get(f"/api/rating/studies/{study.pk}/"))
    claim = keep("api pair claim", api.post(f"/api/rating/pair-studies/{study.pk}/claim/"))
    keep("api pair current", api.get(f"/api/rating/pair-studies/{study.pk}/current/"))
    keep("api 1–5 claim refused", api.post(f"/api/rating/studies/{study.pk}/claim/"))
    pair = claim.json()["pair"]
    judge = f"/api/rating/pairs/{pair}/judge/"
    keep("api judge", api.post(judge, {"verdict": "b"}, format="json"))
    keep("api judge again (conflict)", api.post(judge, {"verdict": "a"}, format="json"))
    pair = api.post(f"/api/rating/pair-studies/{study.pk}/claim/").json()["pair"]
    keep("api skip", api.post(f"/api/rating/pairs/{pair}/skip/"))
    keep("api unknown pair", api.post("/api/rating/pairs/unknownid/skip/"))
    last = keep("api last judgment", api.get(f"/api/rating/pair-studies/{study.pk}/last/"))
    revise = f"/api/rating/pairs/{last.json()['pair']}/revise/"
    keep("api revise", api.post(revise, {"verdict": "tie"}, format="json"))
    keep("api revise unknown pair", api.post("/api/rating/pairs/unknownid/revise/",
                                             {"verdict": "a"}, format="json"))  # fmt: skip
    return seen


def test_no_pairwise_page_or_payload_names_an_arm_a_model_or_an_internal_id(no_queue):
    setup = build_study(samples=2, mode=Study.Mode.PAIRWISE)
    study, rater = setup.study, setup.raters[0]
    patterns = forbidden_patterns(study)
    views = collect_pairwise_views(study, rater)
    assert len(views) > 20
    for label, text, arm_words in views:
        assert_blind(label, text, patterns, arm_words=arm_words)
    while (claim := pairwise_queue.pair_claim_next(study=study, rater=rater)) is not None:
        pairwise_queue.pair_judge(public_id=claim.pair.public_id, rater=rater, verdict="tie")
    client = client_for(rater)
    empty = client.post(reverse("evaluation:pair-claim", args=[study.pk]), **HX)
    lifecycle.study_close(study=study, user=setup.admin)
    closed = client.get(reverse("evaluation:pair-rate", args=[study.pk]))
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


# --- what every non-admin role can read or join ----------------------------------------------
# Raters are one audience; curators and researchers (and people holding two roles) are the
# others. Until a study is unblinded, nothing any of them can read may put an output (its
# text, or its public id) in the same payload as what tells its arm: a model version's name
# or id, a study arm's id, or an arm word. Every page and API read of the permission matrix
# is crawled for each role; the join graph over all payloads must not connect an output to
# an arm, and the audit's exact route (study → sampling job → outputs with model names, and
# ratings export text + score) is followed by hand as well.

OUTPUT_TOKEN = re.compile(r"\(([0-9a-f]{6})\)")  # fake_sampling_run's "(a1b2c3)" per output
NON_ADMINS = ("outsider", "rater", "researcher", "curator", "researcher+rater", "curator+rater")


def body_of(response) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


def crawl(client, objects) -> list[tuple[str, str]]:
    """Every GET page and API read of the permission matrix this client may open."""
    seen = []
    for (name, key, method), _allowed in HTML_POLICY.items():
        if method == "get":
            response = client.get(html_url(name, key, objects))
            assert response.status_code < 500, name
            if response.status_code == 200:
                seen.append((name, body_of(response)))
    for (template, method), _allowed in API_POLICY.items():
        if method == "get":
            path = template.format(**objects)
            response = client.get(path)
            assert response.status_code < 500, path
            if response.status_code == 200:
                seen.append((path, body_of(response)))
    return seen


def arm_keys(study) -> dict[str, re.Pattern]:
    """What tells an arm: model version names and ids, study arm ids, arm words."""
    keys = {}
    for arm in StudyArm.objects.filter(study=study).select_related("model_version"):
        version = arm.model_version
        keys[f"version-name:{version.pk}"] = re.compile(re.escape(version.name))
        keys[f"version-id:{version.pk}"] = re.compile(rf"(?<!\d){version.pk}(?!\d)")
        keys[f"arm-id:{arm.pk}"] = re.compile(rf"(?<!\d){arm.pk}(?!\d)")
    keys["arm-word"] = ARM_WORDS
    return keys


def output_keys(study) -> dict[str, str]:
    """Join keys of each output: its text's token and its public id."""
    keys = {}
    for output in StudyOutput.objects.filter(study=study):
        keys[f"token:{OUTPUT_TOKEN.search(output.text).group(1)}"] = output.public_id
        keys[f"public:{output.public_id}"] = output.public_id
    return keys


def joined_outputs(study, payloads: list[tuple[str, str]]) -> dict[str, set[str]]:
    """Outputs that some chain of payloads links to an arm key: {public id: arm keys}.
    Payloads are joined on output tokens and public ids (what a person could match on)."""
    outputs, arms = output_keys(study), arm_keys(study)
    tokens = {key.split(":", 1)[1]: key for key in outputs if key.startswith("token:")}
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            node = parent[node] = parent[parent[node]]
        return node

    for _label, text in payloads:
        found = [tokens[m] for m in OUTPUT_TOKEN.findall(text) if m in tokens]
        found += [key for key in outputs if key.startswith("public:") and key[7:] in text]
        if not found:
            continue  # an arm key alone joins nothing
        found += [key for key, pattern in arms.items() if pattern.search(text)]
        for node in found:
            parent[find(node)] = find(found[0])
    links: dict[str, set[str]] = {}
    for key, public_id in outputs.items():
        if key not in parent:
            continue
        hits = {arm for arm in arms if arm in parent and find(arm) == find(key)}
        if hits:
            links.setdefault(public_id, set()).update(hits)
    return links


def role_clients(users, study) -> dict[str, object]:
    both_r = make_user("m-researcher-rater", Role.RESEARCHER, Role.RATER)
    both_c = make_user("m-curator-rater", Role.CURATOR, Role.RATER)
    study.raters.add(both_r, both_c)
    clients = {role: client_for(users[role]) for role in ("outsider", "rater", "researcher",
                                                           "curator")}
    clients["researcher+rater"] = client_for(both_r)
    clients["curator+rater"] = client_for(both_c)
    return clients


def test_no_non_admin_can_join_an_output_to_its_arm_before_unblinding(world, settings, tmp_path):  # noqa: F811
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    users, objects = world
    study = Study.objects.get(pk=objects["study"])
    clients = role_clients(users, study)
    admin_payloads = crawl(client_for(users["admin"]), objects)
    assert joined_outputs(study, admin_payloads), "the net catches nothing: it proves nothing"
    for role, client in clients.items():
        payloads = crawl(client, objects)
        assert joined_outputs(study, payloads) == {}, role
    # Rating ends; the study is closed but not unblinded: exports are allowed, arm-free,
    # and they hold output text and score, so everything else must still be closed.
    study = lifecycle.study_close(study=study, user=users["admin"])
    export = exports.export_create(study=study, fmt="bundle", user=users["researcher"])
    exports.export_execute(export.pk)
    csv_export = exports.export_create(study=study, fmt="csv", user=users["researcher"])
    exports.export_execute(csv_export.pk)
    objects = objects | {"export": csv_export.pk}
    for role, client in clients.items():
        payloads = crawl(client, objects)
        if role == "researcher":
            download = client.get(reverse("evaluation:export-download", args=[csv_export.pk]))
            payloads.append(("ratings csv", body_of(download)))
            assert "output_text" in payloads[-1][1] and "score" in payloads[-1][1]
        assert joined_outputs(study, payloads) == {}, role


def test_the_audit_cross_reference_is_closed(world, settings, tmp_path):  # noqa: F811
    """The audit's route, step by step: study → sampling job → outputs with model names,
    then the ratings export's text + score, joined on the text."""
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    users, objects = world
    study = Study.objects.get(pk=objects["study"])
    job = study.sampling_job
    for role in ("researcher", "curator"):
        client = client_for(users[role])
        if role == "researcher":
            body = client.get(f"/api/studies/{study.pk}/").json()
            assert body["sampling_job"] is None
            assert {arm["model_version"] for arm in body["arms"]} == {None}
            assert {arm["model_version_name"] for arm in body["arms"]} == {None}
            assert set(body["raters"]).isdisjoint(study.raters.values_list("username", flat=True))
            page = client.get(reverse("evaluation:study-detail", args=[study.pk])).content
            assert VERSION_NAMES["control"].encode() not in page
        # Guessing the job's id does not help either.
        assert client.get(f"/api/sampling-jobs/{job.pk}/").status_code == 403
        assert client.get(f"/api/sampling-jobs/{job.pk}/outputs/").status_code == 403
        assert client.get(reverse("training:sampling-detail", args=[job.pk])).status_code == 403
        listed = client.get("/api/sampling-jobs/").json()["results"]
        assert job.pk not in {row["id"] for row in listed}
        assert str(job) not in client.get(reverse("training:sampling-list")).content.decode()
    # The ratings export: refused while rating is open, for everyone.
    researcher = client_for(users["researcher"])
    url = reverse("evaluation:study-exports", args=[study.pk])
    before = Export.objects.count()
    response = researcher.post(url, {"format": "csv"}, follow=True)
    assert "once the study is closed" in response.content.decode()
    assert Export.objects.count() == before
    with pytest.raises(exports.ExportError):
        exports.export_create(study=study, fmt="csv", user=users["admin"])
    # Closed and unblinded (logged): the job opens to the roles that read training data.
    study = lifecycle.study_close(study=study, user=users["admin"])
    lifecycle.study_unblind(study=study, user=users["researcher"])
    assert researcher.get(f"/api/sampling-jobs/{job.pk}/outputs/").status_code == 200
    body = researcher.get(f"/api/studies/{study.pk}/").json()
    assert body["sampling_job"] == job.pk and None not in {a["model_version"] for a in body["arms"]}


def test_a_rater_pool_refuses_admins_everywhere(world):  # noqa: F811
    users, objects = world
    study = Study.objects.get(pk=objects["study"])
    dual = make_user("m-admin-rater", Role.ADMIN, Role.RATER, staff=True)
    with pytest.raises(errors.EvaluationError, match="Admins can see which model"):
        lifecycle.study_update_live(study=study, rubric=study.rubric, raters=[dual])
    data = {f"rubric_{s}": f"Anchor {s}" for s in range(1, 6)} | {"raters": [dual.pk]}
    page = client_for(users["admin"]).post(reverse("evaluation:study-edit", args=[study.pk]), data)
    assert page.status_code == 200 and not study.raters.filter(pk=dual.pk).exists()
    form = client_for(users["admin"]).get(reverse("evaluation:study-edit", args=[study.pk]))
    assert "m-admin-rater" not in form.content.decode()
    assert "Admins are not listed" in form.content.decode()


def test_a_rater_of_another_profile_reaches_nothing_of_a_study(world):  # noqa: F811
    """Value profiles (issue 14): a rater whose membership of the study's profile was
    withdrawn, or who never had one (put in the pool behind the services' back), gets 404
    from every rating page and endpoint and cannot claim, even while still in the pool."""
    from palmsweb.models import Membership, Profile

    users, objects = world
    study = Study.objects.get(pk=objects["study"])
    elsewhere = Profile.objects.create(name="Elsewhere", slug="elsewhere")
    stranger = make_user("m-stranger-rater")
    Membership.objects.create(profile=elsewhere, user=stranger, role="rater")
    study.raters.add(stranger)
    page = client_for(stranger)
    assert page.get(reverse("evaluation:rate", args=[study.pk])).status_code == 404
    assert study.name not in page.get(reverse("evaluation:rate-home")).content.decode()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(stranger)}")
    assert api.get("/api/rating/studies/").json() == []
    for path in ("", "claim/", "current/", "last/"):
        method = api.post if path == "claim/" else api.get
        assert method(f"/api/rating/studies/{study.pk}/{path}").status_code == 404, path
    with pytest.raises(errors.NotARater):
        queue.rating_claim_next(study=study, rater=stranger)
    # The pairwise page and endpoints alike.
    assert page.get(reverse("evaluation:pair-rate", args=[study.pk])).status_code == 404
    assert api.post(f"/api/rating/pair-studies/{study.pk}/claim/").status_code == 404
    assert api.get(f"/api/rating/pair-studies/{study.pk}/current/").status_code == 404
    with pytest.raises(errors.NotARater):
        pairwise_queue.pair_claim_next(study=study, rater=stranger)


def test_a_blinded_pairwise_export_and_bundle_name_no_arm(no_queue, tmp_path, settings):
    """A closed pairwise study that is not unblinded exports its judgments arm-free: the
    judgments files, the manifest, the pairwise report and the replay's settings name no
    arm, model, size or internal id."""
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    setup = build_study(samples=2, mode=Study.Mode.PAIRWISE)
    study, rater = setup.study, setup.raters[0]
    while (claim := pairwise_queue.pair_claim_next(study=study, rater=rater)) is not None:
        pairwise_queue.pair_judge(public_id=claim.pair.public_id, rater=rater, verdict="a")
    study = lifecycle.study_close(study=study, user=setup.admin)
    patterns = forbidden_patterns(study)
    seen = []
    for fmt in ("csv", "jsonl"):
        path = tmp_path / f"judgments.{fmt}"
        exports.write_export(study, fmt, path, includes_arms=False)
        seen.append((f"judgments.{fmt}", path.read_text()))
    bundle = tmp_path / "bundle.zip"
    exports.write_export(study, "bundle", bundle, includes_arms=False)
    with zipfile.ZipFile(bundle) as zf:
        for name in zf.namelist():
            if name.endswith((".csv", ".jsonl", ".json", ".html")):
                seen.append((name, zf.read(name).decode()))
    assert any(name.endswith("judgments.csv") for name, _ in seen)
    for label, text in seen:
        assert_blind(label, text, patterns)
