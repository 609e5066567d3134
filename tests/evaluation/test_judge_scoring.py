"""LLM-judge scoring runs against a local fake judge (a real HTTP server on 127.0.0.1), and
the report's "LLM judge (1–5)" section beside the human ratings."""

from __future__ import annotations

import json
import re
import statistics

import numpy as np
import pytest
from django.template.defaultfilters import floatformat
from django.urls import reverse
from scipy import stats as sps

from evaluation import scoring, tasks
from evaluation.models import AutomaticScore, Rating, ScoringRun, StudyArm, StudyOutput
from evaluation.report.build import build_report
from evaluation.scoring import judge as judge_scoring
from evaluation.studies import lifecycle, queue
from evaluation.studies.blinding import blind_labels, blind_letters
from palmsweb.roles import Role
from tests.conftest import client_for, make_user
from tests.evaluation.conftest import IDS, SIZE_TAG, VERSION_NAMES, build_study
from tests.evaluation.test_blinding import collect_rater_views
from tests.fake_judge import Reply, fake_judge_server, palms_parts  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db

KEY_ENV = "JUDGE_API_KEY"
KEY = "sk-fake-judge-0123456789"
MODEL = "Judgy-McJudgeface-9"
GRADE = {"base": 2, "control": 3, "values_targeted": 4}
TEXT = re.compile(r"prompt (\d+), sample (\d+), grade (\d)")
ARM_NAMES = [*VERSION_NAMES.values(), "Quokkalith", SIZE_TAG, "values_targeted", "Values-targeted"]


def output_text(version, p, s) -> str:
    return f"An answer to prompt {p}, sample {s}, grade {GRADE[version.arm]}."


def parse(prompt: str) -> tuple[int, int, int]:
    p, s, g = TEXT.search(palms_parts(prompt)["output"]).groups()
    return int(p), int(s), int(g)


def judge_rule(prompt: str):
    """Even prompts: 3/4 of the mass on the grade, 1/4 one above; odd prompts: the grade.
    Prompt 3 of the grade-3 arm gets an answer with no number."""
    p, _s, g = parse(prompt)
    if p == 3 and g == 3:
        return "I would rather not say."
    if p % 2 == 0:
        return {str(g): 0.75, str(g + 1): 0.25, "The": 0.0001}
    return g


def expected_judge(p: int, g: int) -> float | None:
    if p == 3 and g == 3:
        return None
    return g + 0.25 if p % 2 == 0 else float(g)


@pytest.fixture
def judge(fake_judge_server, monkeypatch):  # noqa: F811 - the imported fixture
    monkeypatch.setenv(KEY_ENV, KEY)
    fake_judge_server.api_key = KEY
    fake_judge_server.rule = judge_rule
    return fake_judge_server


@pytest.fixture
def queued(monkeypatch):
    sent: list[int] = []
    monkeypatch.setattr(tasks.run_judge_scoring, "delay", lambda run_id: sent.append(run_id))
    return sent


@pytest.fixture
def study_setup(no_queue):
    return build_study(text=output_text)


def options(judge, **extra) -> dict:
    return {"base_url": judge.base_url, "model": MODEL, "key_env": KEY_ENV, "logprobs": True} | (
        extra
    )


def start(setup, captured, judge, **extra) -> ScoringRun:
    with captured(execute=True):
        return scoring.scoring_run_start(
            study=setup.study, kind="judge", options=options(judge, **extra), user=setup.admin
        )


def judge_scores(study) -> dict[int, float | None]:
    return dict(
        AutomaticScore.objects.filter(output__study=study, metric="judge", scorer=MODEL)
        .order_by("output_id")
        .values_list("output_id", "value")
    )


# --------------------------------------------------------------------------- running


def test_judge_run_scores_every_output_against_its_category_position(
    study_setup, judge, queued, django_capture_on_commit_callbacks
):
    study = study_setup.study
    run = start(study_setup, django_capture_on_commit_callbacks, judge)
    assert queued == [run.pk]  # enqueued after commit, nothing judged yet
    assert run.scorer == MODEL and judge.requests == []
    judge_scoring.judge_execute(run.pk)

    run.refresh_from_db()
    assert run.status == ScoringRun.Status.SUCCEEDED, run.error
    outputs = list(StudyOutput.objects.filter(study=study).select_related("prompt__category"))
    assert len(outputs) == 12 and (run.progress_done, run.progress_total) == (12, 12)
    # A remote API did the work: this worker's time and energy, no tokens, no FLOPs.
    assert run.compute["kind"] == "scoring" and run.compute["wall_seconds"] > 0
    assert run.compute["flops"] is None and run.compute["tokens"] is None
    assert "remote API" in run.compute["flops_note"]
    assert run.compute["energy_method"].endswith("this worker only")
    scores = judge_scores(study)
    for output in outputs:
        p, _s, g = parse(f"[ANSWER START]\n{output.text}\n[ANSWER END]")
        assert scores[output.pk] == pytest.approx(expected_judge(p, g)), output.text
    # One request per output, each quoting the output's own prompt and category position.
    assert len(judge.requests) == 12
    by_output = {palms_parts(r.prompt)["output"]: r for r in judge.requests}
    for output in outputs:
        request = by_output[output.text]
        parts = palms_parts(request.prompt)
        assert parts["position"] == output.prompt.category.position
        assert parts["prompt"] == output.prompt.text
        assert request.body["model"] == MODEL and request.body["logprobs"] is True
        assert request.headers["authorization"] == f"Bearer {KEY}"
    missing = AutomaticScore.objects.get(value__isnull=True)
    assert "no score" in missing.details["error"] and missing.details["read_from"] == "none"
    scored = AutomaticScore.objects.filter(metric="judge", value__isnull=False).first()
    assert scored.details["read_from"] == "logprobs" and scored.details["judge_said"]
    assert missing.scorer_version == judge_scoring.judge_scorer_version(run.options)
    # The key's name is stored, never the key.
    assert run.options == options(judge)
    stored = json.dumps(
        [run.options, run.result, list(AutomaticScore.objects.values())], default=str
    )
    assert KEY not in stored
    # Per-arm aggregates and the judge's description.
    assert run.result["judge"] == {"model": MODEL, "url": judge.base_url + "/chat/completions"}
    assert run.result["logprobs_used"] is True
    assert (run.result["n_scored"], run.result["n_missing"], run.result["n_skipped"]) == (11, 1, 0)
    for arm in StudyArm.objects.filter(study=study):
        values = [scores[x.pk] for x in outputs if x.arm_id == arm.pk]
        present = [v for v in values if v is not None]
        aggregate = run.result["arms"][str(arm.pk)]
        assert (aggregate["n"], aggregate["n_missing"]) == (
            len(present),
            len(values) - len(present),
        )
        assert aggregate["mean"] == pytest.approx(np.mean(present))
        assert aggregate["sd"] == pytest.approx(np.std(present, ddof=1))

    # A second delivery of the task finds the run claimed and asks the judge nothing.
    tasks.run_judge_scoring(run.pk)
    assert len(judge.requests) == 12


def test_the_celery_task_runs_from_the_scoring_page_without_logprobs(
    study_setup, judge, monkeypatch, django_capture_on_commit_callbacks
):
    # Celery's own local execution (Task.apply) behind the delay the service calls.
    monkeypatch.setattr(
        tasks.run_judge_scoring, "delay", lambda run_id: tasks.run_judge_scoring.apply((run_id,))
    )
    admin = client_for(study_setup.admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(
            reverse("evaluation:study-scoring-start", args=[study_setup.study.pk]),
            {"kind": "judge", "base_url": judge.base_url, "model": MODEL, "key_env": KEY_ENV},
            follow=True,
        )
    assert "LLM judge (1–5) run queued." in response.content.decode()
    run = ScoringRun.objects.get()
    assert run.status == ScoringRun.Status.SUCCEEDED, run.error
    assert run.options["logprobs"] is False  # the unticked box
    assert all("logprobs" not in r.body and r.body["max_tokens"] == 4 for r in judge.requests)
    assert "text" in run.result["scorer_version"] and run.result["logprobs_used"] is False
    # Without logprobs the judge's written digit is the score.
    values = sorted(v for v in judge_scores(study_setup.study).values() if v is not None)
    assert set(values) == {2.0, 3.0, 4.0}
    page = admin.get(reverse("evaluation:study-scoring", args=[study_setup.study.pk]))
    body = page.content.decode()
    assert "LLM judge (1–5)" in body and MODEL in body
    assert f'value="{judge.base_url}"' in body  # the form starts from the last run


def test_a_failed_run_keeps_its_scores_and_a_new_run_resumes(
    study_setup, judge, queued, django_capture_on_commit_callbacks
):
    judge.fail_after = 5
    first = start(study_setup, django_capture_on_commit_callbacks, judge)
    judge_scoring.judge_execute(first.pk)
    first.refresh_from_db()
    assert first.status == ScoringRun.Status.FAILED and first.finished_at is not None
    assert first.error.startswith(
        "The judge failed: The judge answered HTTP 400: The fake judge is switched off."
    )
    assert "5 of 12 outputs are scored; a new run resumes from there." in first.error
    assert first.progress_done == 5
    assert first.compute["wall_seconds"] > 0  # a failed run's time was spent too
    assert len(judge_scores(study_setup.study)) == 5

    judge.fail_after = None
    judge.requests.clear()
    second = start(study_setup, django_capture_on_commit_callbacks, judge)
    judge_scoring.judge_execute(second.pk)
    second.refresh_from_db()
    assert second.status == ScoringRun.Status.SUCCEEDED, second.error
    assert len(judge.requests) == 7  # only what the first run left
    assert second.result["n_skipped"] == 5 and second.result["n_scored"] == 11
    assert len(judge_scores(study_setup.study)) == 12


def test_new_settings_score_again_but_an_unscorable_answer_is_retried_alone(
    study_setup, judge, queued, django_capture_on_commit_callbacks
):
    run = start(study_setup, django_capture_on_commit_callbacks, judge)
    judge_scoring.judge_execute(run.pk)
    judge.requests.clear()
    again = start(study_setup, django_capture_on_commit_callbacks, judge)
    judge_scoring.judge_execute(again.pk)
    assert len(judge.requests) == 1  # the output that got no score last time
    judge.requests.clear()
    other = start(study_setup, django_capture_on_commit_callbacks, judge, logprobs=False)
    judge_scoring.judge_execute(other.pk)
    assert len(judge.requests) == 12  # another version: everything again, in place
    assert AutomaticScore.objects.count() == 12


# --------------------------------------------------------------------------- bad keys


def test_an_unset_key_variable_is_refused_before_anything_changes(
    study_setup, judge, queued, monkeypatch
):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(scoring.ScoringError, match=f"{KEY_ENV} .*is not set"):
        scoring.scoring_run_start(
            study=study_setup.study, kind="judge", options=options(judge), user=study_setup.admin
        )
    admin = client_for(study_setup.admin)
    response = admin.post(
        reverse("evaluation:study-scoring-start", args=[study_setup.study.pk]),
        {"kind": "judge", "base_url": judge.base_url, "model": MODEL, "key_env": KEY_ENV},
        follow=True,
    )
    assert f"The environment variable {KEY_ENV} (the judge&#x27;s key) is not set" in (
        response.content.decode()
    )
    assert not ScoringRun.objects.exists() and not queued and judge.requests == []


@pytest.mark.parametrize(
    "key_env, message",
    [
        ("NOT A NAME", "environment variable name"),
        ("SECRET_KEY", "palmsweb's own secrets"),
        ("database_url", "palmsweb's own secrets"),
    ],
)
def test_bad_key_variable_names_are_refused(study_setup, judge, queued, key_env, message):
    with pytest.raises(scoring.ScoringError, match=message):
        scoring.scoring_run_start(
            study=study_setup.study, kind="judge", options=options(judge, key_env=key_env)
        )
    assert not ScoringRun.objects.exists() and judge.requests == []


def test_a_key_missing_in_the_worker_or_rejected_fails_the_run_and_keeps_the_scores(
    study_setup, judge, queued, monkeypatch, django_capture_on_commit_callbacks
):
    good = start(study_setup, django_capture_on_commit_callbacks, judge)
    judge_scoring.judge_execute(good.pk)
    before = list(AutomaticScore.objects.order_by("pk").values())
    judge.requests.clear()

    # The variable is set for the web process but not for the worker.
    missing = start(study_setup, django_capture_on_commit_callbacks, judge, logprobs=False)
    monkeypatch.delenv(KEY_ENV)
    judge_scoring.judge_execute(missing.pk)
    missing.refresh_from_db()
    assert missing.status == ScoringRun.Status.FAILED
    assert missing.error.startswith(f"The environment variable {KEY_ENV} (the judge's key)")
    assert judge.requests == []

    # The variable holds a key the endpoint rejects.
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    rejected = start(study_setup, django_capture_on_commit_callbacks, judge, logprobs=False)
    judge_scoring.judge_execute(rejected.pk)
    rejected.refresh_from_db()
    assert rejected.status == ScoringRun.Status.FAILED
    assert rejected.error.startswith("The judge failed: The judge refused the API key (HTTP 401).")
    assert "sk-wrong" not in rejected.error
    assert list(AutomaticScore.objects.order_by("pk").values()) == before


def test_an_endpoint_echoing_the_key_does_not_get_it_stored(
    study_setup, judge, queued, django_capture_on_commit_callbacks
):
    judge.rule = lambda prompt: Reply(400, {"error": {"message": f"Bad request from {KEY}"}})
    run = start(study_setup, django_capture_on_commit_callbacks, judge)
    judge_scoring.judge_execute(run.pk)
    run.refresh_from_db()
    assert run.status == ScoringRun.Status.FAILED
    assert "Bad request from [key redacted]" in run.error and KEY not in run.error


# --------------------------------------------------------------------------- the report


# Per prompt order, the three raters' offsets from the grade: means and medians then differ
# from the judge's score (grade, or grade + 0.25 on even prompt indexes).
RATER_OFFSETS = {1: (0, 0, -1), 2: (1, 0, 0), 3: (1, 1, 0), 4: (0, 0, 0)}


def human_score(output: StudyOutput, rater_index: int) -> int:
    offset = RATER_OFFSETS[output.prompt.order][rater_index]
    return max(1, min(5, GRADE[output.arm.arm] + offset))


def rate_all(setup) -> None:
    for i, rater in enumerate(setup.raters):
        while (claim := queue.rating_claim_next(study=setup.study, rater=rater)) is not None:
            output = StudyOutput.objects.select_related("arm", "prompt").get(pk=claim.output_id)
            queue.rating_submit(
                public_id=output.public_id, rater=rater, score=human_score(output, i)
            )


@pytest.fixture
def judged_study(study_setup, judge, queued, django_capture_on_commit_callbacks):
    """Rated by three raters, closed, judged; not unblinded."""
    rate_all(study_setup)
    run = start(study_setup, django_capture_on_commit_callbacks, judge)
    judge_scoring.judge_execute(run.pk)
    study_setup.study = lifecycle.study_close(study=study_setup.study, user=study_setup.admin)
    return study_setup


def by_hand(study) -> dict:
    """Judge–human agreement straight from the tables, without palmsweb.lib.stats."""
    ratings: dict[int, list[int]] = {}
    for output_id, score in Rating.objects.filter(study=study, status="completed").values_list(
        "output_id", "score"
    ):
        ratings.setdefault(output_id, []).append(score)
    pairs = [
        (value, float(np.mean(ratings[o])), statistics.median(ratings[o]))
        for o, value in judge_scores(study).items()
        if value is not None and o in ratings
    ]
    judge_values = [j for j, _m, _md in pairs]
    means = [m for _j, m, _md in pairs]

    def half_up(x):
        return int(np.floor(x + 0.5))

    a = [half_up(md) for _j, _m, md in pairs]  # humans
    b = [half_up(j) for j in judge_values]
    n = len(pairs)
    observed = [[0] * 5 for _ in range(5)]
    for x, y in zip(a, b, strict=True):
        observed[x - 1][y - 1] += 1
    rows = [sum(observed[i]) for i in range(5)]
    cols = [sum(observed[i][j] for i in range(5)) for j in range(5)]
    w_obs = sum((i - j) ** 2 * observed[i][j] for i in range(5) for j in range(5)) / n
    w_exp = sum((i - j) ** 2 * rows[i] * cols[j] for i in range(5) for j in range(5)) / n**2
    return {
        "n": n,
        "rho": sps.spearmanr(judge_values, means).statistic,
        "kappa": 1 - w_obs / w_exp,
        "mad": float(np.mean([abs(j - m) for j, m in zip(judge_values, means, strict=True)])),
        "diff": float(np.mean([j - m for j, m in zip(judge_values, means, strict=True)])),
        "table": observed,
    }


def judge_section(body: str) -> str:
    match = re.search(r'<section class="panel" id="judge">.*?</section>', body, re.S)
    assert match, "no judge section"
    return match.group(0)


def test_report_sets_judge_beside_humans_with_agreement_matching_a_hand_computation(
    judged_study,
):
    study = judged_study.study
    study = lifecycle.study_unblind(study=study, user=judged_study.admin)
    report = build_report(study, blinded=False)
    hand = by_hand(study)
    section = report.judge
    assert section is not None and section.model == MODEL
    agreement = section.agreement
    assert hand["n"] == agreement.n == 11  # 12 outputs, one without a judge score
    assert agreement.spearman == pytest.approx(hand["rho"])
    assert agreement.kappa == pytest.approx(hand["kappa"])
    assert agreement.mean_abs_diff == pytest.approx(hand["mad"])
    assert section.mean_diff == pytest.approx(hand["diff"])
    assert [list(r) for r in agreement.table] == hand["table"]
    assert 0 < hand["kappa"] < 1 and 0 < hand["rho"] < 1  # not a trivial table
    assert agreement.spearman_ci_low <= agreement.spearman <= agreement.spearman_ci_high
    assert (section.n_judged, section.n_missing) == (11, 1)

    # Per arm: the judge's mean beside the human overall cell, which it does not touch.
    scores = judge_scores(study)
    for row, human in zip(section.rows, report.rows, strict=True):
        assert row.arm == human.arm
        arm_outputs = set(
            StudyOutput.objects.filter(arm_id=row.arm.pk).values_list("pk", flat=True)
        )
        present = [v for o, v in scores.items() if o in arm_outputs and v is not None]
        assert row.judge.mean == pytest.approx(np.mean(present)) and row.judge.n == len(present)
        assert row.judge.ci_low <= row.judge.mean <= row.judge.ci_high
        assert row.human == human.overall.summary

    # The page shows the same numbers.
    researcher = client_for(make_user("rhea", Role.RESEARCHER))
    response = researcher.get(reverse("evaluation:study-results", args=[study.pk]))
    assert response.status_code == 200
    html = judge_section(response.content.decode())
    for value, digits in ((agreement.spearman, 3), (agreement.kappa, 3), (hand["mad"], 2)):
        assert floatformat(value, digits) in html
    assert f'<td class="n">{hand["n"]}</td>' in html
    assert "Values-targeted" in html and "<svg" in html
    download = researcher.get(reverse("evaluation:study-report-download", args=[study.pk]))
    assert 'id="judge"' in download.content.decode()

    # Without the judge the human numbers are the same: it is never mixed in.
    AutomaticScore.objects.filter(metric="judge").delete()
    ScoringRun.objects.filter(kind="judge").delete()
    without = build_report(study, blinded=False)
    assert without.judge is None
    assert [r.overall.summary for r in without.rows] == [r.overall.summary for r in report.rows]


def test_the_judge_section_is_blinded_like_the_rest_of_the_report(judged_study):
    study = judged_study.study
    admin = client_for(judged_study.admin)
    url = reverse("evaluation:study-results", args=[study.pk])
    body = admin.get(url).content.decode()
    html = judge_section(body)
    letters = blind_letters(study, list(study.arms.all()))
    for letter in letters.values():
        assert f"<td>Arm {letter}</td>" in html
    for word in [*ARM_NAMES, "Control", str(IDS[StudyArm])]:
        assert word not in html, word
    report = build_report(study, blinded=True)
    assert [r.arm for r in report.judge.rows] == [r.arm for r in report.rows]
    # The scoring page's letters are the report's.
    assert blind_labels(study) == {pk: f"Arm {x}" for pk, x in letters.items()}

    # A researcher on the closed, blinded study: agreement, but nothing per arm.
    researcher = client_for(make_user("rhea", Role.RESEARCHER))
    html = judge_section(researcher.get(url).content.decode())
    assert "Judge–human agreement" in html and "Spearman" in html
    assert "Judge mean" not in html and "Arm " not in html
    for word in ARM_NAMES:
        assert word not in html, word
    scoring_page = researcher.get(reverse("evaluation:study-scoring", args=[study.pk]))
    text = scoring_page.content.decode()
    assert "Arm A" in text and MODEL in text
    for word in ARM_NAMES:
        assert word not in text, word


def test_exports_carry_the_judge_score_in_its_own_column(judged_study, tmp_path):
    from evaluation.report import exports

    study = judged_study.study
    path = tmp_path / "ratings.jsonl"
    exports.write_ratings(study, "jsonl", path, includes_arms=False)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    column = f"auto_judge__{MODEL}"
    by_public_id = {
        o.public_id: o.pk for o in StudyOutput.objects.filter(study=study).only("public_id")
    }
    scores = judge_scores(study)
    assert len(rows) == 36
    for row in rows:
        assert row[column] == scores[by_public_id[row["output_id"]]]  # None stays None
        assert row["score"] in (1, 2, 3, 4, 5)  # the human rating, untouched


# --------------------------------------------------------------------------- who may


def test_only_admins_start_judge_runs_researchers_read_raters_never_see_them(
    study_setup, judge, queued, django_capture_on_commit_callbacks
):
    study = study_setup.study
    start_url = reverse("evaluation:study-scoring-start", args=[study.pk])
    post = {"kind": "judge", "base_url": judge.base_url, "model": MODEL, "key_env": KEY_ENV}
    researcher = client_for(make_user("rhea", Role.RESEARCHER))
    rater = client_for(study_setup.raters[0])
    curator = client_for(make_user("carl", Role.CURATOR))
    for client in (researcher, rater, curator):
        assert client.post(start_url, post).status_code == 403
    assert not ScoringRun.objects.exists()

    run = start(study_setup, django_capture_on_commit_callbacks, judge)
    judge_scoring.judge_execute(run.pk)
    page = researcher.get(reverse("evaluation:study-scoring", args=[study.pk]))
    assert page.status_code == 200 and MODEL in page.content.decode()
    assert "Judge outputs" not in page.content.decode()  # no form for researchers

    for name in ("study-scoring", "study-scoring-runs", "study-results", "study-report-download"):
        assert rater.get(reverse(f"evaluation:{name}", args=[study.pk])).status_code == 403
    for label, text, _arm_words in collect_rater_views(study, study_setup.raters[0]):
        assert MODEL not in text, label
        assert "LLM judge" not in text, label
