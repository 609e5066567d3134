"""Sweeps: a tiny-model grid end to end (API launch, the runs on the worker, the ranking
and overlaid curves, promotion into studies, deleting the losers' weights), refusals that
create nothing, cancel-all, and the shared chart axes."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from training import services, tasks
from training.models import FineTuneJob, JobStatus, ModelVersion, Sweep
from training.services.errors import TrainingError

pytestmark = pytest.mark.django_db

JSON = "application/json"
TINY = {"batch_size": 2, "max_seq_len": 128, "validation_share": 0.25, "eval_every_steps": 1}


def grid(**axes):
    return {"learning_rate": [1e-3, 1e-2], "epochs": [1], "method": ["full", "lora"]} | axes


def test_a_tiny_sweep_end_to_end(admin_client_, artifacts, benign_snapshot, tiny_base,
                                 no_training_queue):  # fmt: skip
    body = {"base_model": tiny_base.pk, "snapshot": benign_snapshot.pk, "grid": grid(),
            "max_runs": 4, "hyperparameters": TINY}  # fmt: skip
    response = admin_client_.post("/api/sweeps/", body, content_type=JSON)
    assert response.status_code == 201, response.json()
    sweep = Sweep.objects.get(pk=response.json()["id"])
    runs = list(sweep.runs.order_by("pk"))
    assert [(j.method, j.hyperparameters["learning_rate"]) for j in runs] == [
        ("full", 1e-3), ("lora", 1e-3), ("full", 1e-2), ("lora", 1e-2)
    ]  # fmt: skip
    assert {j.status for j in runs} == {JobStatus.QUEUED} and all(j.held_out_items for j in runs)
    for job in runs:  # what each gpu worker does with its task
        tasks.run_finetune(job.pk)

    detail = admin_client_.get(f"/api/sweeps/{sweep.pk}/").json()
    assert detail["status"] == "succeeded"
    ranked = detail["runs"]
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4]
    losses = [r["best_validation_loss"] for r in ranked]
    assert losses == sorted(losses) and all(r["validation_loss"][0][0] == 0 for r in ranked)

    page = admin_client_.get(sweep.get_absolute_url()).content.decode()
    assert page.count('class="sweep-curve"') == 4 and "Promote into studies" in page
    polled = admin_client_.get(sweep.get_absolute_url(), headers={"HX-Request": "true"})
    assert 'id="sweep-runs"' in polled.content.decode() and "<html" not in polled.content.decode()
    job_page = admin_client_.get(runs[0].get_absolute_url()).content.decode()
    assert sweep.get_absolute_url() in job_page
    too_big = admin_client_.post(f"/api/sweeps/{sweep.pk}/promote/", {"run": 2**70},
                                 content_type=JSON)  # fmt: skip
    assert too_big.status_code == 400

    sweep_versions = {j.result_id for j in sweep.runs.all()}
    unpromoted = set(ModelVersion.objects.for_studies().values_list("pk", flat=True))
    assert not unpromoted & sweep_versions  # candidates only, until one is promoted
    second = FineTuneJob.objects.get(pk=ranked[1]["id"])
    promote = reverse("training:sweep-promote", args=[sweep.pk])
    assert admin_client_.post(promote, {"run": second.pk}).status_code == 302
    sweep.refresh_from_db()
    assert sweep.promoted_version == second.result
    offered = set(ModelVersion.objects.for_studies().values_list("pk", flat=True))
    assert offered & sweep_versions == {second.result_id}
    loser = next(job for job in sweep.runs.all() if job != second).result_id
    arm = admin_client_.post(
        "/api/studies/", {"name": "x", "arms": [{"model_version": loser}]}, content_type=JSON
    )  # the API refuses a candidate as the form hides it
    assert arm.status_code == 400 and "model_version" in str(arm.json()["arms"])

    deleted = admin_client_.post(f"/api/sweeps/{sweep.pk}/delete-weights/").json()
    assert deleted["cleared"] == 3 and deleted["bytes_freed"] > 0
    for job in sweep.runs.select_related("result"):
        assert Path(job.result.path).is_dir() == (job == second)
        assert job.validation_loss_history and job.result.metadata["snapshot_id"]
        if job != second:
            assert job.result.metadata["weights_deleted_at"]
    loser = ranked[0]["id"]
    refused = admin_client_.post(f"/api/sweeps/{sweep.pk}/promote/", {"run": loser},
                                 content_type=JSON)  # fmt: skip
    assert refused.status_code == 400 and "weights were deleted" in refused.json()["detail"]
    assert admin_client_.post(f"/api/sweeps/{sweep.pk}/delete-weights/").json()["cleared"] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_runs": 3}, "holds 4 runs, more than max_runs"),
        ({"grid": grid(learning_rate=[1.0])}, "learning_rate must be between"),
        ({"grid": grid(epochs=[0])}, "epochs must be between"),
        ({"hyperparameters": {"batch_size": 2}}, "ranks its runs by validation loss"),
        ({"hyperparameters": TINY | {"learning_rate": 1e-3}}, "come from the grid"),
    ],
)
def test_bad_sweeps_are_refused_with_a_400_and_create_nothing(
    admin_client_, benign_snapshot, tiny_base, no_training_queue, change, message
):
    body = {"base_model": tiny_base.pk, "snapshot": benign_snapshot.pk, "grid": grid(),
            "max_runs": 4, "hyperparameters": TINY} | change  # fmt: skip
    response = admin_client_.post("/api/sweeps/", body, content_type=JSON)
    assert response.status_code == 400 and message in response.json()["detail"]
    assert not Sweep.objects.exists() and not FineTuneJob.objects.exists()


def test_malformed_grids_are_refused_by_the_api(admin_client_, benign_snapshot, tiny_base):
    base = {"base_model": tiny_base.pk, "snapshot": benign_snapshot.pk, "max_runs": 4}
    for bad in (grid(method=["qlora"]), grid() | {"warmup": [1]}, {"epochs": [1]}):
        response = admin_client_.post("/api/sweeps/", base | {"grid": bad}, content_type=JSON)
        assert response.status_code == 400 and "grid" in response.json()
    assert not Sweep.objects.exists()


def test_the_form_launches_a_sweep_and_shows_refusals(admin_client_, benign_snapshot, tiny_base,
                                                      no_training_queue):  # fmt: skip
    url = reverse("training:sweep-create")
    page = admin_client_.get(url).content.decode()
    assert 'name="learning_rates"' in page and 'name="methods"' in page
    form = {"base_model": tiny_base.pk, "snapshot": benign_snapshot.pk,
            "learning_rates": "1e-3, 2e-3", "epochs": "1", "methods": ["full"], "max_runs": 2,
            "validation_share": "0.25"}  # fmt: skip
    too_many = admin_client_.post(url, form | {"max_runs": 1}).content.decode()
    assert "holds 2 runs, more than max_runs (1)" in too_many
    assert "as numbers" in admin_client_.post(url, form | {"epochs": "one"}).content.decode()
    assert not Sweep.objects.exists()
    response = admin_client_.post(url, form)
    sweep = Sweep.objects.get()
    assert response.status_code == 302 and sweep.runs.count() == 2


def test_cancel_cancels_every_run(admin_client_, benign_snapshot, tiny_base, no_training_queue):
    sweep = services.sweep_launch(base_model=tiny_base, snapshot=benign_snapshot, grid=grid(),
                                  max_runs=4, hyperparameters=TINY)  # fmt: skip
    with pytest.raises(TrainingError, match="still queued or running"):
        services.sweep_delete_losing_weights(sweep=sweep)
    response = admin_client_.post(reverse("training:sweep-cancel", args=[sweep.pk]))
    assert response.status_code == 302
    assert set(sweep.runs.values_list("status", flat=True)) == {JobStatus.CANCELLED}
    assert services.sweep_status(sweep) == JobStatus.CANCELLED
    api = admin_client_.post(f"/api/sweeps/{sweep.pk}/cancel/").json()
    assert api["status"] == "cancelled" and api["cancelled_at"]


def test_readers_see_sweeps_and_only_admins_change_them(
    researcher_client, benign_snapshot, tiny_base, no_training_queue
):
    sweep = services.sweep_launch(base_model=tiny_base, snapshot=benign_snapshot, grid=grid(),
                                  max_runs=4, hyperparameters=TINY)  # fmt: skip
    researcher = researcher_client
    assert researcher.get(sweep.get_absolute_url()).status_code == 200
    assert researcher.get("/api/sweeps/").status_code == 200
    assert researcher.post(f"/api/sweeps/{sweep.pk}/cancel/").status_code == 403
    assert researcher.post(reverse("training:sweep-cancel", args=[sweep.pk])).status_code == 403
    assert sweep.runs.active().count() == 4


def test_overlaid_curves_share_the_axes():
    from training.selectors import overlay_chart

    chart, curves = overlay_chart([("a", [[0, 4.0], [2, 3.0]]), ("b", [[0, 2.0], [4, 1.0]])])
    first = [tuple(map(float, p.split(","))) for p in curves[0].points.split()]
    second = [tuple(map(float, p.split(","))) for p in curves[1].points.split()]
    assert first[0] == (chart.left, chart.top)  # step 0, the highest loss of both
    assert second[-1] == (chart.right, chart.bottom)  # the last step, the lowest loss
    assert curves[0].colour != curves[1].colour
    assert overlay_chart([("empty", [])])[1] == []


def test_every_run_of_a_sweep_can_keep_its_best_validation_checkpoint(
    admin_client_, benign_snapshot, tiny_base, no_training_queue
):
    url = reverse("training:sweep-create")
    assert 'name="keep_best_validation"' in admin_client_.get(url).content.decode()
    form = {"base_model": tiny_base.pk, "snapshot": benign_snapshot.pk,
            "learning_rates": "1e-3, 2e-3", "epochs": "1", "methods": ["full"], "max_runs": 2,
            "validation_share": "0.25"}  # fmt: skip
    admin_client_.post(url, form)  # unticked: not asked
    admin_client_.post(url, form | {"keep_best_validation": "on"})
    plain, keeping = Sweep.objects.order_by("pk")
    assert "keep_best_validation" not in plain.hyperparameters
    assert all("keep_best_validation" not in run.hyperparameters for run in plain.runs.all())
    assert keeping.hyperparameters["keep_best_validation"] is True
    assert all(run.hyperparameters["keep_best_validation"] for run in keeping.runs.all())
    api = {"base_model": tiny_base.pk, "snapshot": benign_snapshot.pk, "max_runs": 4,
           "grid": grid(), "hyperparameters": {"keep_best_validation": True}}  # fmt: skip
    refused = admin_client_.post("/api/sweeps/", api, content_type=JSON)
    assert refused.status_code == 400  # no validation data: nothing to choose the best by
    assert "validation" in refused.json()["detail"]
    assert Sweep.objects.count() == 2
