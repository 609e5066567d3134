"""Prompt sets and the study lifecycle: draft → sampling → rating → closed, unblinding."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from evaluation import access, errors, tasks
from evaluation.models import Prompt, PromptSet, Rating, Study, StudyEvent, StudyOutput
from evaluation.studies import lifecycle, prompt_sets, queue
from evaluation.studies.selectors import study_progress, study_results
from tests.conftest import make_user
from tests.evaluation.conftest import build_study, fake_sampling_run
from tests.factories import CategoryFactory
from training.models import JobStatus, ModelVersion, SamplingJob

pytestmark = pytest.mark.django_db


# --- prompt sets ---------------------------------------------------------------------------


def test_demo_prompt_set_loads_40_prompts_once():
    first = prompt_sets.load_demo_prompt_set()
    again = prompt_sets.load_demo_prompt_set()
    assert first == again
    # Locked only once a study uses it, like every set.
    assert first.name == prompt_sets.DEMO_PROMPT_SET_NAME and not first.is_locked
    prompts = list(first.prompts.select_related("category"))
    assert len(prompts) == 40
    per_category = {}
    for prompt in prompts:
        per_category[prompt.category.name] = per_category.get(prompt.category.name, 0) + 1
    assert len(per_category) == 8 and set(per_category.values()) == {5}
    assert PromptSet.objects.filter(name=prompt_sets.DEMO_PROMPT_SET_NAME).count() == 1


def test_the_management_command_loads_the_demo_set(capsys):
    call_command("load_demo_prompt_set")
    call_command("load_demo_prompt_set")
    assert Prompt.objects.count() == 40
    assert "40 prompts" in capsys.readouterr().out


def test_an_unlocked_set_is_edited_in_place():
    category = CategoryFactory()
    prompt_set = prompt_sets.prompt_set_create(name="Mine")
    prompt = prompt_sets.prompt_add(prompt_set=prompt_set, category=category, text="First?")
    prompt_sets.prompt_add(prompt_set=prompt_set, category=category, text="Second?")
    edited = prompt_sets.prompt_update(prompt=prompt, category=category, text="First, edited?")
    assert edited.pk == prompt.pk and edited.prompt_set == prompt_set
    moved = prompt_sets.prompt_move(prompt=edited, offset=1)
    assert moved == prompt_set
    assert [p.text for p in prompt_set.prompts.all()] == ["Second?", "First, edited?"]
    assert PromptSet.objects.count() == 1


def test_a_set_locks_when_a_study_uses_it_and_edits_then_go_to_a_copy(no_queue):
    setup = build_study(open_rating=False)
    prompt_set = setup.study.prompt_set
    prompt_set.refresh_from_db()
    assert prompt_set.is_locked
    before = [(p.text, p.category_id) for p in prompt_set.prompts.all()]
    second = prompt_set.prompts.all()[1]
    edited = prompt_sets.prompt_update(prompt=second, category=second.category, text="Changed?")
    copy = edited.prompt_set
    assert copy != prompt_set and not copy.is_locked and copy.copied_from == prompt_set
    assert [(p.text, p.category_id) for p in prompt_set.prompts.all()] == before
    texts = [p.text for p in copy.prompts.all()]
    assert texts[1] == "Changed?" and len(texts) == len(before)
    # Deleting from the locked set also copies; the original keeps every prompt.
    target = prompt_sets.prompt_delete(prompt=prompt_set.prompts.first())
    assert target not in (prompt_set, copy) and target.prompts.count() == len(before) - 1
    assert prompt_set.prompts.count() == len(before)


def test_empty_prompts_and_duplicate_names_are_refused():
    prompt_set = prompt_sets.prompt_set_create(name="Mine")
    with pytest.raises(errors.EvaluationError, match="text"):
        prompt_sets.prompt_add(prompt_set=prompt_set, category=CategoryFactory(), text="   ")
    with pytest.raises(errors.EvaluationError, match="already exists"):
        prompt_sets.prompt_set_create(name="Mine")
    assert not Prompt.objects.exists()


# --- creating and opening -----------------------------------------------------------------


def test_a_new_study_is_a_draft_with_the_defaults_and_a_rubric(no_queue):
    setup = build_study(open_rating=False)
    study = setup.study
    assert study.status == Study.Status.DRAFT
    assert study.rubric == services_default_rubric()
    assert [a.size_tag for a in study.arms.all()] == ["Tiny-77M"] * 3
    assert StudyEvent.objects.filter(study=study, kind="created").exists()


def services_default_rubric():
    from evaluation.rubric import DEFAULT_RUBRIC

    return DEFAULT_RUBRIC


def test_study_rules_are_enforced(no_queue):
    setup = build_study(open_rating=False)
    study = setup.study
    arm = lifecycle.ArmSpec(arm="base", model_version=setup.versions["base"])
    common = dict(name="x", prompt_set=study.prompt_set)
    with pytest.raises(errors.EvaluationError, match="only once"):
        lifecycle.study_create(**common, arms=[arm, arm], raters=setup.raters)
    with pytest.raises(errors.EvaluationError, match="at least one arm"):
        lifecycle.study_create(**common, arms=[], raters=setup.raters)
    with pytest.raises(errors.EvaluationError, match="rubric"):
        lifecycle.study_create(**common, arms=[arm], raters=setup.raters, rubric=["a", "b"])
    with pytest.raises(errors.EvaluationError, match="raters of this study's value profile"):
        lifecycle.study_create(**common, arms=[arm], raters=[setup.admin])
    # Two values-targeted models at one size (an SFT model and its DPO'd successor) would
    # be pooled by the report: refused until their size tags differ.
    sft = setup.versions["values_targeted"]
    dpo = ModelVersion.objects.create(
        base_model=sft.base_model, name="VT + DPO", arm="values_targeted", path=sft.path,
        parameter_count=sft.parameter_count, metadata=dict(sft.metadata),
    )  # fmt: skip
    pair = [lifecycle.ArmSpec(arm="values_targeted", model_version=v) for v in (sft, dpo)]
    with pytest.raises(errors.EvaluationError, match="would pool their ratings"):
        lifecycle.study_create(**common, arms=pair, raters=setup.raters)
    assert Study.objects.count() == 1
    pair[1] = lifecycle.ArmSpec(arm="values_targeted", model_version=dpo, size_tag="+ DPO")
    assert lifecycle.study_create(**common, arms=pair, raters=setup.raters).arms.count() == 2


def test_opening_launches_one_sampling_job_for_every_arm(no_queue):
    setup = build_study(open_rating=False, samples=3)
    study = lifecycle.study_open(study=setup.study, user=setup.admin)
    job = study.sampling_job
    assert study.status == Study.Status.SAMPLING
    assert set(job.model_versions.all()) == set(setup.versions.values())
    assert job.n_samples == 3 and job.temperature == study.temperature
    prompts = list(study.prompt_set.prompts.select_related("category"))
    assert job.prompts == [{"text": p.text, "category": p.category.name} for p in prompts]
    assert study.prompt_ids == [p.pk for p in prompts]
    with pytest.raises(errors.StudyStateError):
        lifecycle.study_open(study=study, user=setup.admin)


def test_opening_needs_enough_raters_for_the_quota(no_queue):
    setup = build_study(open_rating=False, raters=2, raters_per_output=3)
    with pytest.raises(errors.EvaluationError, match="2 raters"):
        lifecycle.study_open(study=setup.study, user=setup.admin)
    assert not SamplingJob.objects.exists()


def test_sync_waits_for_the_job_then_opens_rating_once(no_queue):
    setup = build_study(open_rating=False, samples=2)
    study = lifecycle.study_open(study=setup.study, user=setup.admin)
    assert lifecycle.study_sync_sampling(study_id=study.pk).status == Study.Status.SAMPLING
    fake_sampling_run(study)
    study = lifecycle.study_sync_sampling(study_id=study.pk)
    assert study.status == Study.Status.RATING and study.rating_opened_at
    assert StudyOutput.objects.filter(study=study).count() == 3 * 4 * 2
    lifecycle.study_sync_sampling(study_id=study.pk)
    assert StudyOutput.objects.filter(study=study).count() == 3 * 4 * 2  # idempotent
    output = StudyOutput.objects.filter(study=study).select_related("generation").first()
    assert output.text == output.generation.text and output.quota == 3
    assert len(output.public_id) >= 16
    assert StudyEvent.objects.filter(study=study, kind="rating_opened").count() == 1


def test_the_periodic_task_and_the_sync_task_move_studies_on(no_queue):
    setup = build_study(open_rating=False)
    study = lifecycle.study_open(study=setup.study, user=setup.admin)
    assert tasks.sync_study_sampling(study.pk) == Study.Status.SAMPLING
    fake_sampling_run(study)
    assert tasks.sync_sampling_studies() == 1
    assert tasks.sync_study_sampling(study.pk) == Study.Status.RATING
    assert tasks.sync_study_sampling(999_999) is None


def test_a_failed_job_sends_the_study_back_to_draft_with_the_reason(no_queue):
    setup = build_study(open_rating=False)
    study = lifecycle.study_open(study=setup.study, user=setup.admin)
    SamplingJob.objects.filter(pk=study.sampling_job_id).update(
        status=JobStatus.FAILED, error="Out of memory."
    )
    study = lifecycle.study_sync_sampling(study_id=study.pk)
    assert study.status == Study.Status.DRAFT and study.sampling_error == "Out of memory."
    assert not study.outputs.exists()


def test_outputs_naming_a_model_are_held_until_an_admin_decides(no_queue):
    def text(version, p, s):
        if p == 0:
            return "As an AI language model, I think kindness matters."
        if p == 1:
            return f"I am {version.name} and I say hello."
        return "Kindness matters."

    setup = build_study(text=text)
    study = setup.study
    held = list(study.outputs.filter(screening=StudyOutput.Screening.HELD))
    assert len(held) == 6  # prompts 0 and 1, three arms each
    assert all(o.flag_reasons.startswith("Names:") for o in held)
    rater = setup.raters[0]
    seen = set()
    while (claim := queue.rating_claim_next(study=study, rater=rater)) is not None:
        seen.add(claim.output_id)
        queue.rating_submit(public_id=claim.output.public_id, rater=rater, score=3)
    assert seen.isdisjoint({o.pk for o in held})
    lifecycle.output_clear(output=held[0], user=setup.admin)
    lifecycle.output_exclude(output=held[1], user=setup.admin, reason="names the vendor")
    claim = queue.rating_claim_next(study=study, rater=rater)
    assert claim.output_id == held[0].pk
    progress = study_progress(study)
    assert (progress.held, progress.excluded) == (4, 1)
    assert StudyEvent.objects.filter(kind__in=["output_cleared", "output_excluded"]).count() == 2


def test_closing_stops_rating_and_ends_open_claims(rating_study):
    study, rater = rating_study.study, rating_study.raters[0]
    claim = queue.rating_claim_next(study=study, rater=rater)
    lifecycle.study_close(study=study, user=rating_study.admin)
    claim.refresh_from_db()
    assert claim.status == Rating.Status.EXPIRED
    with pytest.raises(errors.StudyStateError):
        queue.rating_submit(public_id=claim.output.public_id, rater=rater, score=4)
    with pytest.raises(errors.StudyStateError):
        queue.rating_claim_next(study=study, rater=rater)
    with pytest.raises(errors.StudyStateError):
        lifecycle.study_close(study=study, user=rating_study.admin)


def test_unblinding_needs_a_closed_study_and_is_logged(rating_study, researcher):
    study = rating_study.study
    with pytest.raises(errors.StudyStateError):
        lifecycle.study_unblind(study=study, user=researcher)
    assert not access.can_see_arm_results(researcher, study)
    lifecycle.study_close(study=study, user=rating_study.admin)
    assert not access.can_see_arm_results(researcher, study)
    study = lifecycle.study_unblind(study=study, user=researcher)
    assert study.unblinded_by == researcher and study.unblinded_at
    lifecycle.study_unblind(study=study, user=make_user("rowan", *researcher_roles()))
    events = StudyEvent.objects.filter(study=study, kind="unblinded")
    assert [e.actor.username for e in events] == ["rhea", "rowan"]
    assert access.can_see_arm_results(researcher, study)
    assert not access.can_see_arm_results(rating_study.raters[0], study)
    with pytest.raises(errors.EvaluationError):
        lifecycle.study_unblind(study=study, user=rating_study.raters[0])


def researcher_roles():
    from palmsweb.roles import Role

    return (Role.RESEARCHER,)


def test_results_are_mean_scores_per_arm_and_category(rating_study):
    study = rating_study.study
    scores = {"base": 2, "control": 3, "values_targeted": 5}
    for rater in rating_study.raters:
        while (claim := queue.rating_claim_next(study=study, rater=rater)) is not None:
            arm = claim.output.arm.arm
            queue.rating_submit(public_id=claim.output.public_id, rater=rater, score=scores[arm])
    progress = study_progress(study)
    assert progress.done and progress.completed == 12 * 3
    results = study_results(study)
    assert len(results["categories"]) == 2
    by_arm = {row["arm"].arm: row for row in results["rows"]}
    for arm, score in scores.items():
        assert by_arm[arm]["overall"] == score
        assert [c["ratings"] for c in by_arm[arm]["cells"]] == [6, 6]


def test_only_a_draft_study_can_be_redesigned_or_deleted(rating_study):
    study = rating_study.study
    with pytest.raises(errors.StudyStateError):
        lifecycle.study_delete(study=study)
    with pytest.raises(errors.StudyStateError):
        lifecycle.study_update(
            study=study,
            name="x",
            prompt_set=study.prompt_set,
            arms=[],
            raters=[],
            samples_per_prompt=1,
            raters_per_output=1,
            temperature=0.7,
            top_p=0.9,
            max_new_tokens=10,
            seed=0,
            lease_minutes=10,
            rubric=study.rubric,
        )
    new_rubric = [f"Anchor {i}" for i in range(1, 6)]
    lifecycle.study_update_live(study=study, rubric=new_rubric, raters=rating_study.raters)
    study.refresh_from_db()
    assert study.rubric == new_rubric
