"""Validation during fine-tuning: the stratified held-out split, the launch rules (service,
form and API), a tiny-model run that measures the validation loss, and the job page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse

from curation.models import Dataset
from curation.services import sample_create, snapshot_create
from tests.factories import CategoryFactory, DatasetFactory, words
from training import services
from training.models import FineTuneJob, JobStatus, ModelVersion
from training.services.errors import TrainingError
from training.services.validation import held_out_indexes

pytestmark = pytest.mark.django_db

JSON = "application/json"


@pytest.fixture(autouse=True)
def _no_queue(no_training_queue, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False


def snapshot_of(curator, per_category: dict[str, int], kind=Dataset.Kind.VALUES_TARGETED):
    dataset = DatasetFactory(kind=kind)
    for name, count in per_category.items():
        category = CategoryFactory(name=f"{name} {dataset.pk}")
        for n in range(count):
            sample_create(
                dataset=dataset, category=category, question=f"{name} question {n}?",
                answer=words(45, f"{name}{n}"), user=curator, status="approved",
            )  # fmt: skip
    return snapshot_create(dataset=dataset, user=curator)


@pytest.fixture
def three_categories(curator):
    return snapshot_of(curator, {"Health": 8, "Justice": 4, "Violence": 1})


@pytest.fixture
def held_out_set(curator):
    return snapshot_of(curator, {"Health": 2}, kind=Dataset.Kind.VALIDATION)


def launch(base, snapshot, **kwargs):
    return services.finetune_launch(
        base_model=base, snapshot=snapshot, arm=ModelVersion.Arm.VALUES_TARGETED, **kwargs
    )


# --- the held-out split ------------------------------------------------------------------------


def test_the_held_out_share_is_taken_per_category_and_leaves_each_one_something():
    items = [{"category": "a"}] * 8 + [{"category": "b"}] * 4 + [{"category": "c"}]
    held = held_out_indexes(items, 0.25, seed=3)
    by_category = [items[i]["category"] for i in held]
    assert sorted(by_category) == ["a", "a", "b"]  # 8 x 0.25, 4 x 0.25, and c keeps its one
    assert held == held_out_indexes(items, 0.25, seed=3)  # the seed decides
    assert len(held_out_indexes(items, 0.5, seed=0)) == 4 + 2 + 0


def test_the_held_out_samples_are_recorded_and_never_trained_on(three_categories, tiny_base):
    job = launch(tiny_base, three_categories, hyperparameters={"validation_share": 0.25})
    assert len(job.held_out_items) == 3
    train, validation = services.validation.split_examples(job)
    assert len(train) == 10 and len(validation) == 3
    questions = {e["messages"][0]["content"] for e in train}
    assert not questions & {e["messages"][0]["content"] for e in validation}
    categories = [three_categories.items()[i]["category"] for i in job.held_out_items]
    assert sorted(c.split()[0] for c in categories) == ["Health", "Health", "Justice"]


# --- launch rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hyperparameters": {"validation_share": 0.6}}, "validation_share must be between"),
        ({"hyperparameters": {"validation_share": 0.01}}, "holds out no sample"),
        ({"hyperparameters": {"eval_every_steps": 2}}, "eval_every_steps needs"),
        ({"hyperparameters": {"eval_every_steps": -1}}, "eval_every_steps must be between"),
        ({"validation_snapshot": "same"}, "is the training snapshot"),
        ({"validation_snapshot": "other", "hyperparameters": {"validation_share": 0.2}},
         "not both"),
    ],
)  # fmt: skip
def test_bad_validation_settings_are_refused(three_categories, held_out_set, tiny_base,
                                             kwargs, message):  # fmt: skip
    pick = {"same": three_categories, "other": held_out_set}
    if "validation_snapshot" in kwargs:
        kwargs = kwargs | {"validation_snapshot": pick[kwargs["validation_snapshot"]]}
    with pytest.raises(TrainingError, match=message):
        launch(tiny_base, three_categories, **kwargs)
    assert not FineTuneJob.objects.exists()


def test_hosted_fine_tunes_refuse_a_local_validation_schedule(three_categories, held_out_set):
    remote = services.base_model_create(name="GPT", kind="openai", model_id="gpt-4o-mini")
    with pytest.raises(TrainingError, match="needs the local backend"):
        launch(remote, three_categories, validation_snapshot=held_out_set,
               hyperparameters={"eval_every_steps": 2})  # fmt: skip
    assert not FineTuneJob.objects.exists()


@pytest.mark.parametrize("value", [1, "true", "yes", None])
def test_keep_best_validation_takes_only_true_or_false(three_categories, held_out_set, tiny_base,
                                                       value):  # fmt: skip
    hp = {"keep_best_validation": value}
    if value is None:  # blank: not asked, like a blank number
        job = launch(tiny_base, three_categories, validation_snapshot=held_out_set,
                     hyperparameters=hp)  # fmt: skip
        assert "keep_best_validation" not in job.hyperparameters
        return
    with pytest.raises(TrainingError, match="keep_best_validation must be true or false"):
        launch(tiny_base, three_categories, validation_snapshot=held_out_set, hyperparameters=hp)


def test_keep_best_validation_needs_validation_data(three_categories, tiny_base):
    with pytest.raises(TrainingError, match="keep_best_validation needs a validation snapshot"):
        launch(tiny_base, three_categories, hyperparameters={"keep_best_validation": True})
    job = launch(tiny_base, three_categories, hyperparameters={"keep_best_validation": False})
    assert job.held_out_items == []  # false is "not asked": nothing to validate, no refusal


# --- a tiny-model run --------------------------------------------------------------------------


def test_a_run_measures_validation_at_step_0_every_n_steps_and_each_epoch_end(
    artifacts, benign_snapshot, tiny_base
):
    hp = {"batch_size": 2, "max_seq_len": 128, "learning_rate": 1e-3, "epochs": 2,
          "validation_share": 0.25, "eval_every_steps": 3}  # fmt: skip
    job = launch(tiny_base, benign_snapshot, hyperparameters=hp)
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    # 3 training examples at batch 2: 2 steps per epoch, 4 in all.
    assert [step for step, _ in job.validation_loss_history] == [0, 2, 3, 4]
    assert len(job.loss_history) == 4 and "1 validation examples" in job.log
    meta = json.loads((Path(job.result.path) / "palms_metadata.json").read_text())
    assert meta["held_out_items"] == job.held_out_items and meta["examples"] == 3
    assert [pair[0] for pair in meta["validation_loss_history"]] == [0, 2, 3, 4]
    assert meta["best_validation_loss"]["step"] in (0, 2, 3, 4)


def test_a_run_with_a_validation_snapshot(artifacts, benign_snapshot, held_out_set, tiny_base):
    hp = {"batch_size": 2, "max_seq_len": 128, "learning_rate": 1e-3, "epochs": 1}
    job = launch(tiny_base, benign_snapshot, hyperparameters=hp, validation_snapshot=held_out_set)
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert [step for step, _ in job.validation_loss_history] == [0, 2]
    assert job.result.metadata["validation_snapshot_hash"] == held_out_set.content_hash


def test_a_run_keeping_the_best_validation_checkpoint_says_which_step_it_saved(
    artifacts, admin_client_, benign_snapshot, held_out_set, tiny_base, monkeypatch
):
    # Scripted validation losses at steps 0, 2, 3, 4: the best is step 2's of 4.
    scripted = iter([3.0, 1.0, 2.0, 2.5])
    monkeypatch.setattr("training.engine.finetune.validation_loss", lambda *a: next(scripted))
    hp = {"batch_size": 2, "max_seq_len": 128, "learning_rate": 1e-3, "epochs": 2,
          "eval_every_steps": 3, "keep_best_validation": True}  # fmt: skip
    job = launch(tiny_base, benign_snapshot, hyperparameters=hp, validation_snapshot=held_out_set)
    services.finetune_execute(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.result.metadata["saved_checkpoint"] == {
        "step": 2, "of_steps": 4, "validation_loss": 1.0, "chosen_by": "best validation loss"}
    page = admin_client_.get(job.get_absolute_url()).content.decode()
    assert "the best-validation checkpoint, step 2 of 4 (validation loss 1.0000)" in page
    detail = admin_client_.get(f"/api/finetunes/{job.pk}/").json()
    assert detail["hyperparameters"]["keep_best_validation"] is True


# --- the API, the form and the job page ---------------------------------------------------------


def test_the_api_launches_with_validation_and_reports_it(admin_client_, three_categories,
                                                         held_out_set, tiny_base):  # fmt: skip
    data = {"base_model": tiny_base.pk, "snapshot": three_categories.pk,
            "validation_snapshot": held_out_set.pk,
            "hyperparameters": {"eval_every_steps": 5}}  # fmt: skip
    response = admin_client_.post("/api/finetunes/", data, content_type=JSON)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["validation_snapshot"] == held_out_set.pk and body["validation_loss"] == []
    FineTuneJob.objects.filter(pk=body["id"]).update(validation_loss_history=[[0, 3.1]])
    detail = admin_client_.get(f"/api/finetunes/{body['id']}/").json()
    assert detail["validation_loss"] == [[0, 3.1]] and detail["held_out_items"] == []


@pytest.mark.parametrize(
    ("extra", "detail"),
    [
        ({"hyperparameters": {"validation_share": 0.9}}, "validation_share must be between"),
        ({"hyperparameters": {"validation_share": 0.3}, "validation_snapshot": "other"},
         "not both"),
        ({"validation_snapshot": 999}, None),
        ({"hyperparameters": {"keep_best_validation": True}}, "keep_best_validation needs"),
    ],
)  # fmt: skip
def test_the_api_refuses_bad_validation_with_a_400(admin_client_, three_categories, held_out_set,
                                                   tiny_base, extra, detail):  # fmt: skip
    if extra.get("validation_snapshot") == "other":
        extra = extra | {"validation_snapshot": held_out_set.pk}
    data = {"base_model": tiny_base.pk, "snapshot": three_categories.pk} | extra
    response = admin_client_.post("/api/finetunes/", data, content_type=JSON)
    assert response.status_code == 400
    body = response.json()
    assert detail in body["detail"] if detail else "validation_snapshot" in body
    assert not FineTuneJob.objects.exists()


def test_the_form_launches_with_a_held_out_share_and_shows_refusals(
    admin_client_, three_categories, held_out_set, tiny_base
):
    form = {"base_model": tiny_base.pk, "snapshot": three_categories.pk, "arm": "values_targeted",
            "method": "full", "epochs": 1, "learning_rate": "0.0001", "batch_size": 4,
            "grad_accum": 1, "max_seq_len": 256, "warmup_steps": 0, "seed": 7}  # fmt: skip
    url = reverse("training:finetune-create")
    page = admin_client_.get(url).content.decode()
    assert 'name="validation_snapshot"' in page and 'name="validation_share"' in page
    both = form | {"validation_share": "0.25", "validation_snapshot": held_out_set.pk}
    assert "not both" in admin_client_.post(url, both).content.decode()
    assert "less than or equal to 0.5" in admin_client_.post(
        url, form | {"validation_share": "0.7"}
    ).content.decode()
    assert not FineTuneJob.objects.exists()
    assert 'name="keep_best_validation"' in page
    refused = admin_client_.post(url, form | {"keep_best_validation": "on"}).content.decode()
    assert "keep_best_validation needs a validation snapshot" in refused
    assert not FineTuneJob.objects.exists()
    response = admin_client_.post(url, form | {"validation_share": "0.25", "eval_every_steps": 2,
                                               "keep_best_validation": "on"})  # fmt: skip
    job = FineTuneJob.objects.get()
    assert response.status_code == 302 and len(job.held_out_items) == 3
    assert job.hyperparameters["eval_every_steps"] == 2
    assert job.hyperparameters["keep_best_validation"] is True


def test_the_job_page_plots_validation_with_training_loss(admin_client_, three_categories,
                                                          held_out_set, tiny_base):  # fmt: skip
    job = launch(tiny_base, three_categories, validation_snapshot=held_out_set)
    FineTuneJob.objects.filter(pk=job.pk).update(
        loss_history=[[1, 3.0], [2, 2.5], [3, 2.0]],
        validation_loss_history=[[0, 3.2], [2, 2.9], [3, 2.7]],
    )
    page = admin_client_.get(job.get_absolute_url()).content.decode()
    assert 'class="curve"' in page and 'id="validation-curve"' in page
    assert "best 2.7000 at step 3" in page and held_out_set.short_hash in page
    without = launch(tiny_base, three_categories)
    FineTuneJob.objects.filter(pk=without.pk).update(loss_history=[[1, 3.0], [2, 2.5]])
    assert "validation-curve" not in admin_client_.get(without.get_absolute_url()).content.decode()


def test_both_curves_share_the_axes():
    from training.selectors import loss_chart

    chart = loss_chart([[1, 2.0], [2, 1.0]], validation=[[0, 4.0], [2, 3.0]])
    train = [tuple(map(float, p.split(","))) for p in chart.points.split()]
    checks = [tuple(map(float, p.split(","))) for p in chart.validation_points.split()]
    assert checks[0] == (chart.left, chart.top)  # step 0, the highest loss: top left
    assert train[-1] == (chart.right, chart.bottom)  # the last step, the lowest loss
    assert [t.label for t in chart.x_ticks] == ["0", "1", "2"]
