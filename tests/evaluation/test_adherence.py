"""The held-out adherence metric: the engine's answer-only likelihood, the paired bootstrap
of a perplexity ratio (and its simulated false-positive rate), the scoring run on tiny
models, the report section blinded and not, the scoring page, the API and the bundle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from django.urls import reverse

from curation.models import Dataset
from curation.services import sample_create, snapshot_create
from evaluation import scoring, tasks
from evaluation.models import ScoringRun
from palmsweb.lib.perplexity import perplexity_change, token_weighted_perplexity
from palmsweb.roles import Role
from tests.conftest import client_for, make_user
from tests.evaluation.conftest import BASE_MODEL_NAME, build_study
from tests.factories import CategoryFactory, DatasetFactory, words
from training.models import BaseModel, ModelVersion

JSON = "application/json"


# --- the engine --------------------------------------------------------------------------------


def test_answer_likelihood_is_the_answer_only_loss_of_each_example(tiny_llama_dir):
    import torch

    from training.engine.data import encode_examples
    from training.engine.loading import load_for_inference
    from training.engine.scoring import answer_likelihood

    examples = [
        {"messages": [{"role": "user", "content": "Is it safe?"},
                      {"role": "assistant", "content": "Ask a doctor before you mix them."}]},
        {"messages": [{"role": "user", "content": "Why?"},
                      {"role": "assistant", "content": "Because people differ."}]},
    ]  # fmt: skip
    model, tokenizer = load_for_inference(tiny_llama_dir, dtype=torch.float32)
    batched = answer_likelihood(model, tokenizer, examples, batch_size=2)
    for index, encoded in enumerate(encode_examples(tokenizer, examples, 1024)):
        ids = torch.tensor([encoded.input_ids])
        with torch.no_grad():  # transformers' own loss: mean over the labelled tokens
            loss = model(input_ids=ids, labels=torch.tensor([encoded.labels])).loss.item()
        assert batched.tokens[index] == encoded.n_label_tokens < len(encoded.input_ids)
        assert batched.nll[index] == pytest.approx(loss * encoded.n_label_tokens, rel=1e-4)
    alone = answer_likelihood(model, tokenizer, examples[1:], batch_size=1)
    assert alone.nll[0] == pytest.approx(batched.nll[1], rel=1e-5)  # padding changes nothing


# --- the statistic -----------------------------------------------------------------------------


def test_perplexity_change_is_token_weighted_and_paired():
    change = perplexity_change([20.0, 10.0], [10, 10], [30.0, 20.0], [10, 10], n_resamples=999)
    assert change.perplexity == pytest.approx(math.exp(1.5))
    assert change.reference_perplexity == pytest.approx(math.exp(2.5))
    assert change.change == pytest.approx(math.exp(-1) - 1)  # 63% lower
    # Both samples lower by exactly one nat per token: every resample says the same.
    assert change.ci_low == pytest.approx(change.change) == pytest.approx(change.ci_high)
    one = perplexity_change([2.0], [1], [3.0], [1])
    assert one.ci_low is None and one.ci_high is None
    assert token_weighted_perplexity([1.0, 3.0], [1, 3]) == pytest.approx(math.exp(1.0))
    with pytest.raises(ValueError):
        perplexity_change([1.0], [1, 2], [1.0], [1])


def _null_rejection_rate(n_samples: int, studies: int, rng) -> float:
    """Share of null studies (the two models equally likely on average) whose 95% interval
    excludes 0. Each sample: 60–400 answer tokens, 2–4 nats per token, the model's per-token
    NLL off the reference's by N(0, 0.3) nats."""
    rejected = 0
    for study in range(studies):
        tokens = rng.integers(60, 400, n_samples)
        reference = tokens * rng.uniform(2, 4, n_samples)
        model = reference + tokens * rng.normal(0, 0.3, n_samples)
        change = perplexity_change(model, tokens, reference, tokens, n_resamples=999, seed=study)
        rejected += change.ci_low is not None and (change.ci_low > 0 or change.ci_high < 0)
    return rejected / studies


def test_the_interval_s_false_positive_rate_by_simulation():
    """The unit of analysis is the held-out sample. With 16 samples (the demo set, all
    categories) the 95% percentile interval excludes 0 in about 8% of null studies; with 2
    (one demo category) in about half of them, which is why the report calls per-category
    intervals descriptive (docs/scoring.md)."""
    rng = np.random.default_rng(1)
    assert _null_rejection_rate(16, 400, rng) <= 0.12
    assert 0.35 <= _null_rejection_rate(2, 400, rng) <= 0.65


# --- the run on tiny models ------------------------------------------------------------------


def _assert_the_run_counts_what_its_models_read(run, setup, snapshot) -> None:
    """Every token each local arm's model read (questions too), and 2 x N x tokens."""
    from curation.services import snapshot_chat_examples
    from evaluation.scoring.adherence import MAX_SEQ_LEN
    from training.engine.data import encode_examples
    from training.engine.loading import load_tokenizer
    from training.services import version_local_path

    examples = snapshot_chat_examples(snapshot)
    versions = [arm.model_version for arm in setup.study.arms.select_related("model_version")]
    tokenizer = load_tokenizer(version_local_path(versions[0]))
    read = sum(e.n_tokens for e in encode_examples(tokenizer, examples, MAX_SEQ_LEN))
    compute = run.compute
    assert compute["kind"] == "scoring" and compute["tokens"] == read * len(versions)
    parameters = [v.parameter_count or v.base_model.parameter_count for v in versions]
    assert compute["flops"] == sum(2 * n * read for n in parameters) > 0
    page = (
        client_for(setup.admin)
        .get(reverse("evaluation:study-scoring", args=[setup.study.pk]))
        .content.decode()
    )
    assert "2 x parameters x tokens read" in page


@pytest.fixture
def held_out(db):
    curator = make_user("adh-curator", Role.CURATOR)
    dataset = DatasetFactory(kind=Dataset.Kind.VALIDATION)
    for name in ("Health", "Justice"):
        category = CategoryFactory(name=f"{name} held out")
        for n in range(2):
            sample_create(
                dataset=dataset, category=category, question=f"{name} held-out question {n}?",
                answer=words(42, f"{name}{n}"), user=curator, status="approved",
            )  # fmt: skip
    return snapshot_create(dataset=dataset, user=curator)


@pytest.fixture
def tiny_arms(db, no_queue, tmp_path):
    """A study whose base and control arms share one tiny model and whose values-targeted
    arm is another (a different seed): control changes nothing, values-targeted does."""
    from training.engine.loading import build_tiny_llama

    same, other = build_tiny_llama(tmp_path / "a"), build_tiny_llama(tmp_path / "b", seed=1)
    setup = build_study()
    BaseModel.objects.filter(name=BASE_MODEL_NAME).update(path=str(same))
    ModelVersion.objects.filter(arm="control").update(path=str(same))
    ModelVersion.objects.filter(arm="values_targeted").update(path=str(other))
    return setup


@pytest.fixture
def queued(monkeypatch):
    sent = []
    monkeypatch.setattr(tasks.run_adherence_scoring, "delay", lambda pk: sent.append(pk))
    return sent


def start(setup, capture, **options):
    with capture(execute=True):
        return scoring.scoring_run_start(
            study=setup.study, kind="adherence", options=options, user=setup.admin
        )


def test_a_run_scores_every_local_arm_per_category_against_base(
    tiny_arms, held_out, queued, django_capture_on_commit_callbacks
):
    run = start(tiny_arms, django_capture_on_commit_callbacks, snapshot=held_out.pk)
    assert queued == [run.pk] and run.options == {"snapshot": held_out.pk}
    tasks.run_adherence_scoring(run.pk)
    run.refresh_from_db()
    assert run.status == ScoringRun.Status.SUCCEEDED, run.error
    assert run.progress_done == run.progress_total == 3 * 4
    by_arm = {a.arm: run.result["arms"][str(a.pk)] for a in tiny_arms.study.arms.all()}
    assert all(len(data["nll"]) == len(data["tokens"]) == 4 for data in by_arm.values())
    control, targeted = by_arm["control"]["categories"], by_arm["values_targeted"]["categories"]
    assert set(control) == {"Health held out", "Justice held out", "All categories"}
    assert control["All categories"]["change"] == pytest.approx(0.0, abs=1e-6)
    assert targeted["All categories"]["n_samples"] == 4
    assert abs(targeted["All categories"]["change"]) > 1e-3
    assert targeted["Health held out"]["ci_low"] <= targeted["Health held out"]["change"]
    assert "change" not in by_arm["base"]["categories"]["All categories"]  # the reference
    _assert_the_run_counts_what_its_models_read(run, tiny_arms, held_out)

    section = scoring.report_sections(tiny_arms.study, blinded=False)["adherence"]
    assert section["available"] and section["categories"][-1] == "All categories"
    assert any("perplexity than base in Health held out" in s for s in section["sentences"])
    blinded = scoring.report_sections(tiny_arms.study, blinded=True)["adherence"]
    assert blinded["sentences"] == [] and all(
        "change_pct" not in cell for row in blinded["rows"] for cell in row["cells"]
    )


def test_hosted_arms_are_not_available(tiny_arms, held_out, queued,
                                       django_capture_on_commit_callbacks):  # fmt: skip
    ModelVersion.objects.filter(arm="values_targeted").update(
        base_model=BaseModel.objects.create(
            name="Hosted", kind=BaseModel.Kind.OPENAI, model_id="gpt-4o-mini"
        )  # fmt: skip
    )
    run = start(tiny_arms, django_capture_on_commit_callbacks)  # the default: newest set
    scoring.adherence_execute(run.pk)
    run.refresh_from_db()
    assert run.status == ScoringRun.Status.SUCCEEDED and run.options["snapshot"] == held_out.pk
    hosted = next(v for v in run.result["arms"].values() if not v["available"])
    assert "no log-probabilities" in hosted["reason"]


def test_bad_held_out_sets_are_refused_and_nothing_is_queued(tiny_arms, held_out, queued):
    with pytest.raises(scoring.ScoringError, match="does not exist"):
        scoring.scoring_run_start(study=tiny_arms.study, kind="adherence",
                                  options={"snapshot": 987654})  # fmt: skip
    targeted = ModelVersion.objects.get(arm="values_targeted")
    targeted.metadata = {"snapshot_id": held_out.pk}
    targeted.save(update_fields=["metadata"])
    with pytest.raises(scoring.ScoringError, match="was trained on this snapshot"):
        scoring.scoring_run_start(study=tiny_arms.study, kind="adherence",
                                  options={"snapshot": held_out.pk})  # fmt: skip
    assert not ScoringRun.objects.exists() and queued == []


def test_a_set_sharing_questions_with_training_data_is_refused(tiny_arms, held_out):
    curator = make_user("adh-curator-2", Role.CURATOR)
    training = DatasetFactory(kind=Dataset.Kind.VALUES_TARGETED)
    sample_create(dataset=training, category=CategoryFactory(), user=curator, status="approved",
                  question="Health held-out question 0?", answer=words(45))  # fmt: skip
    trained = snapshot_create(dataset=training, user=curator)
    ModelVersion.objects.filter(arm="values_targeted").update(metadata={"snapshot_id": trained.pk})
    with pytest.raises(scoring.ScoringError, match="not held out"):
        scoring.scoring_run_start(study=tiny_arms.study, kind="adherence",
                                  options={"snapshot": held_out.pk})  # fmt: skip


# --- the page, the report, the API and the bundle -----------------------------------------------


@pytest.fixture
def scored(tiny_arms, held_out, queued, django_capture_on_commit_callbacks):
    run = start(tiny_arms, django_capture_on_commit_callbacks, snapshot=held_out.pk)
    scoring.adherence_execute(run.pk)
    return tiny_arms


def test_the_scoring_page_starts_a_run_and_the_results_page_shows_it(
    tiny_arms, held_out, queued, django_capture_on_commit_callbacks
):
    admin = client_for(tiny_arms.admin)
    study = tiny_arms.study
    page = admin.get(reverse("evaluation:study-scoring", args=[study.pk])).content.decode()
    assert 'value="adherence"' in page and held_out.short_hash in page
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(reverse("evaluation:study-scoring-start", args=[study.pk]),
                              {"kind": "adherence", "snapshot": held_out.pk})  # fmt: skip
    assert response.status_code == 302 and len(queued) == 1
    scoring.adherence_execute(queued[0])
    # Before unblinding the results page letters the arms: perplexities, no change vs base.
    results = admin.get(reverse("evaluation:study-results", args=[study.pk])).content.decode()
    assert "Held-out adherence" in results and "perplexity than base in" not in results
    from evaluation.report.document import render_report_document

    document = render_report_document(study, "arms")
    assert "perplexity than base in Health held out" in document
    assert "Capability: general-text perplexity vs base" in document


def test_the_api_blinds_researchers_until_unblinding(scored):
    study = scored.study
    url = f"/api/studies/{study.pk}/adherence/"
    admin = client_for(scored.admin).get(url).json()
    assert admin["blinded"] is False and admin["latest_run"]["status"] == "succeeded"
    assert admin["latest_run"]["compute"]["flops"] > 0
    assert admin["section"]["sentences"]
    researcher = client_for(make_user("adh-researcher", Role.RESEARCHER)).get(url).json()
    assert researcher["blinded"] is True and researcher["section"]["sentences"] == []
    text = str(researcher)
    assert "Quokkalith" not in text and "values_targeted" not in text
    assert client_for(make_user("adh-rater", Role.RATER)).get(url).status_code == 403


def test_the_api_starts_runs_and_refuses_bad_input(tiny_arms, held_out, queued,
                                                   django_capture_on_commit_callbacks):  # fmt: skip
    admin = client_for(tiny_arms.admin)
    url = f"/api/studies/{tiny_arms.study.pk}/adherence/"
    assert admin.post(url, {"snapshot": 987654}, content_type=JSON).status_code == 400
    assert admin.post(url, {"snapshots": 1}, content_type=JSON).status_code == 400
    assert admin.post(url, {"snapshot": 2**70}, content_type=JSON).status_code == 400
    page = reverse("evaluation:study-scoring-start", args=[tiny_arms.study.pk])
    admin.post(page, {"kind": "adherence", "snapshot": str(2**70)})  # a message, not a 500
    assert not ScoringRun.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(url, {}, content_type=JSON)
    assert response.status_code == 202 and response.json()["latest_run"]["status"] == "queued"
    busy = admin.post(url, {}, content_type=JSON)
    assert busy.status_code == 400 and "already queued" in busy.json()["detail"]
    researcher = client_for(make_user("adh-researcher-2", Role.RESEARCHER))
    assert researcher.post(url, {}, content_type=JSON).status_code == 403


def test_the_bundle_with_arms_carries_the_per_sample_numbers(scored, tmp_path):
    import json
    import zipfile

    from evaluation.report.exports import write_bundle

    study = scored.study
    study.status = "closed"
    written = write_bundle(study, tmp_path / "b.zip", includes_arms=True)
    with zipfile.ZipFile(written.path) as zf:
        body = json.loads(zf.read(f"study-{study.pk}/adherence.json"))
        assert "Held-out adherence" in zf.read(f"study-{study.pk}/report.html").decode()
    assert len(body["per_sample"]) == 3 and body["section"]["sentences"]
    arm_free = write_bundle(study, tmp_path / "c.zip", includes_arms=False)
    with zipfile.ZipFile(arm_free.path) as zf:
        assert not any(name.endswith("adherence.json") for name in zf.namelist())


def test_the_human_difference_sits_beside_the_values_targeted_row():
    from types import SimpleNamespace as NS

    from evaluation.report.document import attach_human_differences

    def result(diff):
        return NS(result=NS(mean_diff=diff))

    family = NS(key="vt-base", size_tag="77M", a=NS(kind="values_targeted"),
                rows=[NS(category=NS(name="Health"), **vars(result(1.1)))],
                overall=result(0.3))  # fmt: skip
    row = {"available": True, "arm_kind": "values_targeted", "size": "77M",
           "cells": [{"category": "Health"}, {"category": "All categories"}]}  # fmt: skip
    base_row = {"available": True, "arm_kind": "base", "size": "77M",
                "cells": [{"category": "Health"}]}  # fmt: skip
    scores = {"adherence": {"available": True, "blinded": False, "rows": [row, base_row]}}
    attach_human_differences(scores, NS(blinded=False, families=[family]))
    assert [c["human_diff"] for c in row["cells"]] == [1.1, 0.3]
    assert "human_diff" not in base_row["cells"][0]
    blinded = {"adherence": {"available": True, "blinded": True, "rows": [dict(row, cells=[{}])]}}
    attach_human_differences(blinded, NS(blinded=True, families=[family]))
    assert blinded["adherence"]["rows"][0]["cells"] == [{}]
