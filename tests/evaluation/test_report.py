"""The report: statistics against direct scipy/krippendorff results, blinding, permissions,
the self-contained HTML report, comparing studies, query counts."""

from __future__ import annotations

import re
from collections import defaultdict

import krippendorff
import numpy as np
import pytest
from django.urls import reverse
from scipy import stats as sps

from evaluation.models import Rating, StudyOutput
from evaluation.report.build import build_report
from evaluation.report.compare import compare_studies
from evaluation.studies import blinding, lifecycle, queue
from palmsweb.roles import Role
from tests.conftest import client_for, make_user
from tests.evaluation.conftest import SIZE_TAG, VERSION_NAMES, build_study

pytestmark = pytest.mark.django_db

ARM_LEVEL = {"base": 2, "control": 3, "values_targeted": 4}
ARM_WORDS = ["Values-targeted", "values_targeted", "Control", "Base", SIZE_TAG, "vt-ft", "ctl-ft"]


def score_for(output: StudyOutput, rater_index: int, levels=ARM_LEVEL) -> int:
    """Fixed, arm-dependent scores with some disagreement between raters."""
    offset = (output.prompt.order * 7 + output.sample_index * 3 + output.arm.order) % 3 - 1
    nudge = 1 if rater_index == (output.prompt.order + output.sample_index) % 3 else 0
    return max(1, min(5, levels[output.arm.arm] + offset + nudge))


def rate_everything(setup, levels=ARM_LEVEL) -> None:
    for i, rater in enumerate(setup.raters):
        while (claim := queue.rating_claim_next(study=setup.study, rater=rater)) is not None:
            output = StudyOutput.objects.select_related("arm", "prompt").get(pk=claim.output_id)
            queue.rating_submit(
                public_id=output.public_id, rater=rater, score=score_for(output, i, levels)
            )


def closed_study(*, unblind: bool = False, researcher=None, levels=ARM_LEVEL, **kwargs):
    setup = build_study(**kwargs)
    rate_everything(setup, levels)
    setup.study = lifecycle.study_close(study=setup.study, user=setup.admin)
    if unblind:
        setup.study = lifecycle.study_unblind(study=setup.study, user=researcher or setup.admin)
    return setup


def db_output_means(study):
    """(arm kind, category id) -> per-output means, straight from the ratings table."""
    scores = defaultdict(list)
    where = {}
    for output_id, arm, category, score in (
        Rating.objects.filter(study=study, status="completed")
        .values_list("output_id", "output__arm__arm", "output__prompt__category_id", "score")
        .order_by("output_id")
    ):
        scores[output_id].append(score)
        where[output_id] = (arm, category)
    cells = defaultdict(list)
    for output_id, values in scores.items():
        cells[where[output_id]].append(float(np.mean(values)))
    return cells


def holm_by_hand(pvalues: list[float]) -> list[float]:
    order = np.argsort(pvalues)
    m = len(pvalues)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return list(adjusted)


@pytest.fixture
def researcher_client(researcher):
    return client_for(researcher)


# --- statistics ------------------------------------------------------------------------------


def db_prompt_means(study):
    """(arm kind, category id) -> one mean per prompt (the mean of its outputs' means)."""
    scores = defaultdict(list)
    where = {}
    for output_id, prompt, arm, category, score in (
        Rating.objects.filter(study=study, status="completed")
        .values_list(
            "output_id",
            "output__prompt_id",
            "output__arm__arm",
            "output__prompt__category_id",
            "score",
        )
        .order_by("output_id")
    ):
        scores[output_id].append(score)
        where[output_id] = (prompt, arm, category)
    by_prompt = defaultdict(list)
    for output_id, values in scores.items():
        by_prompt[where[output_id]].append(float(np.mean(values)))
    cells = defaultdict(list)
    for (_prompt, arm, category), means in sorted(by_prompt.items()):
        cells[(arm, category)].append(float(np.mean(means)))
    return cells


def test_cell_summaries_are_prompt_level_with_outputs_as_description(no_queue):
    setup = closed_study(unblind=True, samples=2, n_categories=3)
    report = build_report(setup.study, blinded=False)
    cells = db_output_means(setup.study)
    prompts = db_prompt_means(setup.study)
    assert report.n_ratings == Rating.objects.filter(study=setup.study, status="completed").count()
    for row in report.rows:
        for cell in row.cells:
            values = np.array(cells[(row.arm.kind, cell.category.pk)])
            per_prompt = np.array(prompts[(row.arm.kind, cell.category.pk)])
            assert cell.n_outputs == len(values) == 4
            assert cell.n_ratings == 12
            assert cell.summary.n_prompts == len(per_prompt) == 2
            assert cell.summary.mean == pytest.approx(per_prompt.mean())
            assert cell.summary.sd == pytest.approx(per_prompt.std(ddof=1))
            assert cell.summary.output_mean == pytest.approx(values.mean())
            assert cell.summary.output_sd == pytest.approx(values.std(ddof=1))
            # 2 prompts: no interval, n is said instead
            assert cell.summary.ci_low is None and cell.summary.ci_method is None
        all_values = [m for cat in report.categories for m in cells[(row.arm.kind, cat.pk)]]
        all_prompts = [m for cat in report.categories for m in prompts[(row.arm.kind, cat.pk)]]
        assert row.overall.summary.mean == pytest.approx(np.mean(all_prompts))
        assert row.overall.summary.output_mean == pytest.approx(np.mean(all_values))
        assert row.overall.n_outputs == len(all_values)
        # 6 prompts over all categories: a cluster bootstrap stratified by category
        assert row.overall.summary.ci_method == "percentile (stratified by category)"
        assert row.overall.summary.ci_low <= row.overall.summary.mean <= row.overall.summary.ci_high


def test_comparisons_are_paired_by_prompt_and_holm_is_applied_per_family(no_queue):
    setup = closed_study(unblind=True, samples=2, n_categories=3)
    report = build_report(setup.study, blinded=False)
    prompts = db_prompt_means(setup.study)
    assert {f.key for f in report.families} == {"vt-base", "vt-control"}
    for family in report.families:
        other = family.b.kind
        raw = []
        for row in family.rows:
            a = np.array(prompts[("values_targeted", row.category.pk)])
            b = np.array(prompts[(other, row.category.pk)])
            assert row.result.n_prompts == 2
            assert row.result.mean_diff == pytest.approx(a.mean() - b.mean())
            if row.result.status == "tested":
                paired = sps.ttest_rel(a, b)
                assert row.result.p == pytest.approx(paired.pvalue)
                raw.append(paired.pvalue)
        expected = holm_by_hand(raw)
        tested = [r for r in family.rows if r.result.status == "tested"]
        assert [r.result.p_holm for r in tested] == pytest.approx(expected)
        # Holm only ever raises p-values.
        assert all(r.result.p_holm >= r.result.p for r in tested)
        # over all categories: the paired t on all 6 prompts, and the model's contrast
        a = np.concatenate([prompts[("values_targeted", c.pk)] for c in report.categories])
        b = np.concatenate([prompts[(other, c.pk)] for c in report.categories])
        assert family.overall.result.mean_diff == pytest.approx(a.mean() - b.mean())
        assert family.model is not None and family.model.estimate is not None
        assert family.achieved is not None
    vt_base = report.family("vt-base")
    assert vt_base.wins == sum(r.result.verdict() == "better" for r in vt_base.rows)
    assert not any("beats base" in s for s in report.summary)
    assert any(s.startswith("Values-targeted vs base: better in") for s in report.summary)


def test_agreement_equals_krippendorff_on_the_ratings_table(no_queue):
    setup = closed_study(unblind=True, samples=2)
    report = build_report(setup.study, blinded=False)
    rows = list(
        Rating.objects.filter(study=setup.study, status="completed").values_list(
            "rater_id", "output_id", "score", "output__arm__arm", "output__prompt__category_id"
        )
    )

    def alpha(subset, level):
        raters = sorted({r for r, *_ in subset})
        outputs = sorted({o for _r, o, *_ in subset})
        m = np.full((len(raters), len(outputs)), np.nan)
        for r, o, s, *_ in subset:
            m[raters.index(r), outputs.index(o)] = s
        return krippendorff.alpha(reliability_data=m, level_of_measurement=level)

    overall = report.agreement[0]
    assert overall.kind == "overall"
    assert overall.ordinal.alpha == pytest.approx(alpha(rows, "ordinal"))
    assert overall.interval.alpha == pytest.approx(alpha(rows, "interval"))
    assert overall.ordinal.ci_low <= overall.ordinal.alpha <= overall.ordinal.ci_high
    by_scope = {a.scope: a for a in report.agreement}
    for cat in report.categories:
        subset = [r for r in rows if r[4] == cat.pk]
        assert by_scope[cat.name].ordinal.alpha == pytest.approx(alpha(subset, "ordinal"))
    for arm in report.arms:
        subset = [r for r in rows if r[3] == arm.kind]
        assert by_scope[arm.label].interval.alpha == pytest.approx(alpha(subset, "interval"))


def test_a_textbook_table_gives_krippendorffs_published_alpha():
    # Krippendorff (2011), 4 observers × 12 units with missing data: ordinal 0.815.
    nan = np.nan
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
    from palmsweb.lib.stats import krippendorff_alpha

    assert krippendorff_alpha(data, "ordinal") == pytest.approx(0.815, abs=5e-4)


def test_several_sizes_give_an_effect_per_size(no_queue):
    from evaluation.models import StudyArm
    from training.models import ModelVersion

    setup = build_study(open_rating=False)
    base_model = setup.versions["base"].base_model
    big = {
        arm: ModelVersion.objects.create(
            base_model=base_model, name=f"Quokkalith big {arm}", arm=arm, parameter_count=10**9
        )
        for arm in ("control", "values_targeted")
    }
    # A bigger base: a second base version of another base model.
    from training.models import BaseModel

    big_base_model = BaseModel.objects.create(
        name="Quokkalith-1B", kind=BaseModel.Kind.LOCAL_DIR, path="/x", parameter_count=10**9
    )
    big["base"] = ModelVersion.objects.create(
        base_model=big_base_model, name="Quokkalith big base", arm="base", parameter_count=10**9
    )
    for order, (arm, version) in enumerate(big.items(), start=10):
        StudyArm.objects.create(
            study=setup.study, arm=arm, model_version=version, size_tag="Big-1B", order=order
        )
    study = lifecycle.study_open(study=setup.study, user=setup.admin)
    from tests.evaluation.conftest import fake_sampling_run

    fake_sampling_run(study)
    setup.study = lifecycle.study_sync_sampling(study_id=study.pk)
    rate_everything(setup)
    lifecycle.study_close(study=setup.study, user=setup.admin)
    study = lifecycle.study_unblind(study=setup.study, user=setup.admin)
    report = build_report(study, blinded=False)
    assert report.several_sizes
    assert [s.size_tag for s in report.sizes] == [SIZE_TAG, "Big-1B"]
    assert all(s.effect is not None and s.effect.mean_diff > 0 for s in report.sizes)
    assert len([f for f in report.families if f.key == "vt-base"]) == 2
    page = client_for(setup.admin).get(reverse("evaluation:study-results", args=[study.pk]))
    assert b"Score against model size" in page.content


# --- the page --------------------------------------------------------------------------------


def test_unblinded_page_shows_chart_tables_summary_and_gap_links(no_queue, researcher_client):
    setup = closed_study(
        unblind=True, samples=2, levels={"base": 2, "control": 2, "values_targeted": 2}
    )
    page = researcher_client.get(reverse("evaluation:study-results", args=[setup.study.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and "Mean rating per category" in html
    assert "Values-targeted vs base" in html and "Holm" in html
    assert VERSION_NAMES["values_targeted"] in html
    assert "Krippendorff" in html
    assert re.search(r"Values-targeted vs base: better in \d", html)
    assert "paired t" in html and "Wilcoxon" in html and "Methods" in html
    # every category is weak (no lead), and values-targeted outputs around 2 are low-rated
    assert "File a gap ticket" in html
    assert reverse("curation:gap-create") + "?category=" in html


def test_gap_links_are_hidden_when_the_gap_form_does_not_exist(
    no_queue, researcher_client, monkeypatch
):
    from django.urls import NoReverseMatch

    setup = closed_study(unblind=True, levels={"base": 2, "control": 2, "values_targeted": 2})

    def no_gap(name, *args, **kwargs):
        if name == "curation:gap-create":
            raise NoReverseMatch(name)
        return real_reverse(name, *args, **kwargs)

    from evaluation.report import document as report_views

    real_reverse = report_views.reverse
    monkeypatch.setattr(report_views, "reverse", no_gap)
    page = researcher_client.get(reverse("evaluation:study-results", args=[setup.study.pk]))
    assert page.status_code == 200 and b"File a gap ticket" not in page.content


def _assert_no_arm_words(html: str) -> None:
    for word in ARM_WORDS + list(VERSION_NAMES.values()):
        assert word not in html, word


def test_before_unblinding_a_researcher_sees_no_arm_and_can_unblind(
    no_queue, researcher, researcher_client
):
    setup = closed_study()
    url = reverse("evaluation:study-results", args=[setup.study.pk])
    page = researcher_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    _assert_no_arm_words(html)
    assert "Arm A" not in html  # not even letters: no per-arm numbers at all
    assert "Unblind" in html and "Krippendorff" in html
    download = researcher_client.get(
        reverse("evaluation:study-report-download", args=[setup.study.pk])
    )
    _assert_no_arm_words(download.content.decode())
    response = researcher_client.post(reverse("evaluation:study-unblind", args=[setup.study.pk]))
    assert response.status_code == 302
    html = researcher_client.get(url).content.decode()
    assert "Values-targeted vs base" in html and VERSION_NAMES["control"] in html


def test_admins_before_unblinding_see_arms_as_fixed_letters(no_queue):
    setup = closed_study()
    admin = client_for(setup.admin)
    url = reverse("evaluation:study-results", args=[setup.study.pk])
    first = admin.get(url).content.decode()
    _assert_no_arm_words(first)
    assert "Arm A" in first and "Arm B" in first and "Arm C" in first
    assert "Values-targeted vs" not in first
    letters = blinding.blind_letters(setup.study, list(setup.study.arms.all()))
    assert sorted(letters.values()) == ["A", "B", "C"]
    assert letters == blinding.blind_letters(setup.study, list(setup.study.arms.all()))


def test_who_may_open_the_results(no_queue, researcher_client):
    setup = build_study()
    url = reverse("evaluation:study-results", args=[setup.study.pk])
    download = reverse("evaluation:study-report-download", args=[setup.study.pk])
    # while rating: admins only
    assert researcher_client.get(url).status_code == 403
    assert researcher_client.get(download).status_code == 403
    assert client_for(setup.admin).get(url).status_code == 200
    lifecycle.study_close(study=setup.study, user=setup.admin)
    assert researcher_client.get(url).status_code == 200  # closed: arm-free page
    for role in (Role.RATER, Role.CURATOR):
        other = client_for(make_user(f"someone-{role.value}", role))
        assert other.get(url).status_code == 403
        assert other.get(download).status_code == 403
        assert other.get(reverse("evaluation:study-compare")).status_code == 403
    assert client_for(make_user("nobody")).get(url).status_code == 403
    assert client_for(setup.raters[0]).get(url).status_code == 403


def test_the_html_report_is_self_contained_with_provenance(no_queue, researcher_client):
    setup = closed_study(unblind=True)
    vt = setup.versions["values_targeted"]
    vt.metadata = {"snapshot_hash": "f" * 64}
    vt.save(update_fields=["metadata"])
    response = researcher_client.get(
        reverse("evaluation:study-report-download", args=[setup.study.pk])
    )
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    html = response.content.decode()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<link" not in html and "<script" not in html
    assert "<style>" in html and "<svg" in html
    for fact in ("Provenance", "f" * 64, "temperature 0.7", "Rubric", "Code version"):
        assert fact in html, fact
    assert VERSION_NAMES["values_targeted"] in html


def test_results_page_query_count_is_bounded(no_queue, django_assert_max_num_queries):
    setup = closed_study(unblind=True, samples=2, n_categories=3)
    admin = client_for(setup.admin)
    url = reverse("evaluation:study-results", args=[setup.study.pk])
    # A fixed number of queries whatever the study's size (15 and 12 when written; the
    # adherence section, the profile switcher, the cost's scoring runs and the fine-tunes in
    # its arms' lineage, one query per generation of it, have added one each since).
    with django_assert_max_num_queries(23):
        assert admin.get(url).status_code == 200
    with django_assert_max_num_queries(19):  # the report comes from the cache
        assert admin.get(url).status_code == 200


# --- comparing studies -----------------------------------------------------------------------


def test_compare_two_studies_gives_per_category_deltas(no_queue, researcher_client):
    first = closed_study(unblind=True, rater_prefix="a")
    second = closed_study(
        unblind=True, rater_prefix="b", levels={"base": 2, "control": 3, "values_targeted": 5}
    )
    # the second study uses new categories; reuse the first's prompts' categories instead
    comparison = compare_studies(first.study, first.study)
    assert all(r.delta == 0 for r in comparison.rows)
    comparison = compare_studies(first.study, second.study)
    assert len(comparison.rows) == 4  # two categories each, none shared
    assert all(r.delta is None for r in comparison.rows)
    assert all(r.gap_a is not None or r.gap_b is not None for r in comparison.rows)
    page = researcher_client.get(
        reverse("evaluation:study-compare"), {"a": first.study.pk, "b": second.study.pk}
    )
    assert page.status_code == 200 and b"Values-targeted A" in page.content
    picker = researcher_client.get(reverse("evaluation:study-compare"))
    assert picker.status_code == 200 and first.study.name.encode() in picker.content


def test_compare_on_shared_categories_measures_the_change(no_queue):
    first = closed_study(unblind=True, rater_prefix="a")
    second = closed_study(
        unblind=True, rater_prefix="b", levels={"base": 2, "control": 3, "values_targeted": 5}
    )
    # Point the second study's prompts at the first study's categories.
    cats = list(
        first.study.prompt_set.prompts.order_by("order").values_list("category_id", flat=True)
    )
    for prompt, cat in zip(second.study.prompt_set.prompts.order_by("order"), cats, strict=True):
        prompt.category_id = cat
        prompt.save(update_fields=["category"])
    from django.core.cache import cache

    cache.clear()
    comparison = compare_studies(first.study, second.study)
    assert len(comparison.rows) == 2
    before, after = db_output_means(first.study), db_output_means(second.study)
    for row in comparison.rows:
        key = ("values_targeted", row.category.pk)
        assert row.delta == pytest.approx(np.mean(after[key]) - np.mean(before[key]))
        assert row.delta > 0
        assert row.gap_delta > 0
        assert row.test is not None and row.p_holm >= row.test.welch_p
        # the unit is the prompt: 2 prompts per category in each study
        assert (row.test.n_a, row.test.n_b) == (2, 2)
        assert row.lead_a is not None and row.lead_a.n_prompts == 2
        assert row.lead_b.mean_diff == pytest.approx(row.gap_b)


def test_blinded_studies_cannot_be_compared_even_by_admins(no_queue):
    blinded = closed_study(rater_prefix="a")
    unblinded = closed_study(unblind=True, rater_prefix="b")
    admin = client_for(unblinded.admin)
    url = reverse("evaluation:study-compare")
    page = admin.get(url).content.decode()
    picker = page[page.index('name="a"') :]  # the study picker, not the profile switcher
    assert f'value="{unblinded.study.pk}"' in picker
    assert f'value="{blinded.study.pk}"' not in picker
    response = admin.get(url, {"a": blinded.study.pk, "b": unblinded.study.pk})
    assert response.status_code == 404
    body = response.content.decode()
    assert f"There is no closed, unblinded study #{blinded.study.pk}" in body
    assert 'name="a"' in body and "Values-targeted A" not in body  # the picker, no table


def test_compare_refuses_the_same_study_on_both_sides_and_unknown_ids(no_queue):
    setup = closed_study(unblind=True)
    researcher = client_for(setup.admin)
    url = reverse("evaluation:study-compare")
    same = researcher.get(url, {"a": setup.study.pk, "b": setup.study.pk})
    assert same.status_code == 400
    body = same.content.decode()
    assert "Pick two different studies" in body and "Values-targeted A" not in body
    for a, b in ((setup.study.pk, 999_999), ("abc", setup.study.pk)):
        unknown = researcher.get(url, {"a": a, "b": b})
        assert unknown.status_code == 404
        assert "There is no closed, unblinded study" in unknown.content.decode()
        assert "<nav" in unknown.content.decode()  # the site's navigation, not a bare page


def test_the_blinded_html_report_for_admins_uses_letters_only(no_queue):
    setup = closed_study()
    html = (
        client_for(setup.admin)
        .get(reverse("evaluation:study-report-download", args=[setup.study.pk]))
        .content.decode()
    )
    _assert_no_arm_words(html)
    assert "Arm A" in html and "Provenance" in html


# --- issue 15: the honest summary, rater quality, blinding of the new sections ------------------


def test_the_summary_names_small_n_and_the_methods_and_never_counts_point_estimates(no_queue):
    setup = closed_study(unblind=True, samples=2, n_categories=3)
    report = build_report(setup.study, blinded=False)
    summary = " ".join(report.summary)
    assert "No interval where fewer than 5 prompts" in summary
    assert "Over all categories (Values-targeted vs base)" in summary
    assert ("by a mixed model" in summary) or ("paired t on" in summary)
    assert "beats" not in summary and "Weak categories" not in summary


def test_rater_quality_shows_pseudonyms_only_on_every_report(no_queue, researcher_client):
    setup = closed_study()
    url = reverse("evaluation:study-results", args=[setup.study.pk])
    for client in (researcher_client, client_for(setup.admin)):
        html = client.get(url).content.decode()
        assert "Rater quality" in html and "Leave-one-out" in html
        for rater in setup.raters:
            assert f"<code>{rater.get_username()}</code>" not in html
        assert re.search(r"<code>R[0-9a-f]{10}</code>", html)
        _assert_no_arm_words(html)
    letters = build_report(setup.study, blinded=True)
    assert letters.numbers == {} and letters.settings == {} and letters.families == []
    arm_free = build_report(setup.study, blinded=True, include_arms=False)
    assert arm_free.numbers and not any("values_targeted" in k for k in arm_free.numbers)
