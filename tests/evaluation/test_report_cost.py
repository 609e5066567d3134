"""The report says what the study cost: its models' local fine-tunes and its sampling,
summed into one line that names no arm (so it shows before unblinding too)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from evaluation.report.build import build_report
from palmsweb.lib.compute import job_record
from training.models import FineTuneJob, SamplingJob

from .test_report import closed_study

pytestmark = pytest.mark.django_db


def record(kind: str, kwh: float, measured: bool, flops: int | None = 6_000) -> dict:
    return job_record(
        kind=kind, device_type="cpu", device_name="test CPU", device_count=1, wall_seconds=3600,
        tokens=1000, flops=flops, energy_kwh=kwh, energy_method="test",
        energy_measured=measured, grid_g_per_kwh=500,
    )  # fmt: skip


def test_the_report_sums_the_fine_tunes_of_its_models_and_its_sampling(
    no_queue, benign_snapshot, researcher_client
):
    setup = closed_study(samples=1, levels={"base": 2, "control": 3, "values_targeted": 4})
    study = setup.study
    trained = setup.versions["values_targeted"]
    base, spent = trained.base_model, record("fine-tune", 0.4, measured=True)
    FineTuneJob.objects.create(base_model=base, snapshot=benign_snapshot, arm="values_targeted",
                               result=trained, compute=spent)  # fmt: skip
    elsewhere = record("fine-tune", 9.0, measured=True)  # a model this study does not use
    FineTuneJob.objects.create(base_model=base, snapshot=benign_snapshot, arm="control",
                               compute=elsewhere)  # fmt: skip
    SamplingJob.objects.filter(pk=study.sampling_job_id).update(
        compute=record("sampling", 0.1, measured=False)
    )
    study.refresh_from_db()
    cost = build_report(study, blinded=True).cost
    assert cost["jobs"] == 2  # the other fine-tune made no model of this study
    assert cost["energy_kwh"] == pytest.approx(0.5) and cost["energy_estimated"] is True
    assert cost["co2e_kg"] == pytest.approx(0.25) and cost["device_seconds"] == 7200
    page = researcher_client.get(reverse("evaluation:study-results", args=[study.pk]))
    html = page.content.decode()
    assert 'id="study-cost"' in html and "0.5 kWh (estimated)" in html and "250 g CO2e" in html


def test_the_bundle_manifest_carries_the_cost(no_queue, benign_snapshot, tmp_path):
    import json
    import zipfile

    from evaluation.report.exports import write_bundle

    setup = closed_study(samples=1, levels={"base": 2, "control": 3, "values_targeted": 4})
    study = setup.study
    SamplingJob.objects.filter(pk=study.sampling_job_id).update(
        compute=record("sampling", 0.1, measured=True)
    )
    study.refresh_from_db()
    written = write_bundle(study, tmp_path / "bundle.zip", includes_arms=False)
    with zipfile.ZipFile(written.path) as bundle:
        manifest = json.loads(bundle.read(f"study-{study.pk}/manifest.json"))
    assert manifest["cost"]["jobs"] == 1
    assert manifest["cost"]["energy_kwh"] == pytest.approx(0.1)
    assert manifest["cost"]["energy_estimated"] is False


def test_the_cost_adds_the_scoring_runs_and_the_co_occurrence_sampling(
    no_queue, benign_snapshot, researcher_client, tmp_path
):
    import json
    import zipfile

    from evaluation.models import ScoringRun
    from evaluation.report.exports import write_bundle

    setup = closed_study(samples=1, levels={"base": 2, "control": 3, "values_targeted": 4})
    study = setup.study
    local = record("scoring", 0.2, measured=True, flops=4_000)
    remote = record("scoring", 0.1, measured=True, flops=None)
    ScoringRun.objects.create(study=study, kind="adherence", status="succeeded", compute=local)
    ScoringRun.objects.create(study=study, kind="judge", status="failed", compute=remote)
    ScoringRun.objects.create(study=study, kind="toxicity", status="queued")  # nothing spent yet
    sampled = SamplingJob.objects.create(prompts=[], compute=record("sampling", 0.3, measured=True))
    ScoringRun.objects.create(study=study, kind="cooccurrence", status="succeeded",
                              options={"sampling_job_id": sampled.pk})  # fmt: skip
    cost = build_report(study, blinded=True).cost
    assert cost["jobs_by_kind"] == {"sampling": 1, "scoring": 2}
    assert cost["energy_kwh"] == pytest.approx(0.6) and cost["flops"] == 6_000 + 4_000
    assert cost["flops_missing"] == 1
    html = researcher_client.get(reverse("evaluation:study-results", args=[study.pk]))
    text = html.content.decode()
    assert "1 sampling, 2 scoring" in text and "(1 job(s) not estimated)" in text
    written = write_bundle(study, tmp_path / "bundle.zip", includes_arms=False)
    with zipfile.ZipFile(written.path) as bundle:
        manifest = json.loads(bundle.read(f"study-{study.pk}/manifest.json"))
    assert manifest["cost"]["jobs_by_kind"]["scoring"] == 2


def test_the_cost_counts_every_fine_tune_in_the_arms_lineage_once(no_queue, benign_snapshot):
    """A DPO arm started from an SFT version that a sweep chose; a control arm saved as a
    checkpoint by a fine-tune that started from the same SFT: the DPO, the checkpoint's
    fine-tune, the SFT and the sweep's losing run (failed, its time spent) count, once each;
    a fine-tune of another model does not."""
    from tests.evaluation.conftest import build_study
    from training.models import FineTuneCheckpoint, ModelVersion, Sweep

    setup = build_study(n_categories=1, per_category=1, open_rating=False)
    base_model = setup.versions["base"].base_model
    sft = ModelVersion.objects.create(base_model=base_model, name="sft", arm="values_targeted")

    def finetune(kwh: float, **fields) -> FineTuneJob:
        fields.setdefault("snapshot", benign_snapshot)
        return FineTuneJob.objects.create(base_model=base_model, arm="values_targeted",
                                          compute=record("fine-tune", kwh, measured=True),
                                          **fields)  # fmt: skip

    sweep = Sweep.objects.create(name="lr grid", base_model=base_model, snapshot=benign_snapshot,
                                 grid={}, max_runs=2, promoted_version=sft)  # fmt: skip
    finetune(1.0, sweep=sweep, result=sft)
    finetune(0.5, sweep=sweep, status="failed")  # no version, but spent choosing the SFT
    finetune(0.25, objective="dpo", snapshot=None, start_version=sft,
             result=setup.versions["values_targeted"])  # fmt: skip
    went_on = finetune(2.0, start_version=sft)  # its result is no arm; a checkpoint is
    FineTuneCheckpoint.objects.create(job=went_on, step=5, model_version=setup.versions["control"])
    finetune(9.0)  # another model's
    cost = build_report(setup.study, blinded=True).cost
    assert cost["jobs_by_kind"]["fine-tune"] == 4
    assert cost["energy_kwh"] == pytest.approx(1.0 + 0.5 + 0.25 + 2.0)


def test_the_pairwise_report_says_what_the_study_cost(no_queue):
    from evaluation.report.document import render_report_document
    from tests.conftest import client_for
    from tests.evaluation.conftest import build_study

    setup = build_study(n_categories=1, per_category=2, mode="pairwise")
    SamplingJob.objects.filter(pk=setup.study.sampling_job_id).update(
        compute=record("sampling", 0.1, measured=True)
    )
    setup.study.refresh_from_db()
    url = reverse("evaluation:study-pairwise-results", args=[setup.study.pk])
    page = client_for(setup.admin).get(url).content.decode()
    document = render_report_document(setup.study, "letters")
    for html in (page, document):
        assert 'id="study-cost"' in html and "0.1 kWh" in html and "(1 sampling;" in html
