"""Pages through the test client, with and without htmx."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils.html import escape

from evaluation.models import Prompt, PromptSet, Rating, Study, StudyEvent, StudyOutput
from evaluation.studies import lifecycle, queue
from tests.conftest import client_for
from tests.evaluation.conftest import build_study, fake_sampling_run
from tests.factories import CategoryFactory

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


def rate_url(name: str, study, output=None) -> str:
    args = [study.pk] if output is None else [study.pk, output.public_id]
    return reverse(f"evaluation:{name}", args=args)


def live_claim(study, rater) -> Rating:
    return Rating.objects.get(study=study, rater=rater, status="claimed")


# --- the rating page ---------------------------------------------------------------------


def test_the_rating_page_works_without_javascript(rating_study):
    study, rater = rating_study.study, rating_study.raters[0]
    client = client_for(rater)
    page = client.get(rate_url("rate", study))
    # The first visit shows the instructions, with a plain form to start.
    assert page.status_code == 200 and page.context["state"] == "intro"
    assert b'action="%s"' % rate_url("rate-claim", study).encode() in page.content
    response = client.post(rate_url("rate-claim", study))
    assert response.status_code == 302 and response.url == rate_url("rate", study)
    page = client.get(rate_url("rate", study))
    claim = live_claim(study, rater)
    assert page.context["state"] == "task"
    assert claim.output.text.encode() in page.content
    assert claim.output.prompt.category.position.encode() in page.content
    for anchor in study.rubric:
        assert escape(anchor).encode() in page.content
    response = client.post(
        rate_url("rate-submit", study, claim.output), {"score": "4", "comment": "Good."}
    )
    assert response.status_code == 302
    done = Rating.objects.get(pk=claim.pk)
    assert (done.status, done.score, done.comment) == ("completed", 4, "Good.")
    assert live_claim(study, rater).output_id != claim.output_id  # the next one is waiting


def test_htmx_swaps_in_the_next_output_and_the_progress(rating_study):
    study, rater = rating_study.study, rating_study.raters[0]
    client = client_for(rater)
    response = client.post(rate_url("rate-claim", study), **HX)
    assert response.status_code == 200
    html = response.content.decode().strip()
    assert html.startswith('<section id="task"') and 'id="rate-progress"' in html
    assert 'hx-swap-oob="true"' in html and "<html" not in html
    first = live_claim(study, rater)
    response = client.post(rate_url("rate-submit", study, first.output), {"score": "5"}, **HX)
    html = response.content.decode()
    second = live_claim(study, rater)
    assert second.output.text in html and "Saved your rating (5)." in html
    assert "<strong>1</strong> rated · up to 11 to go" in html  # 12 outputs, 1 done
    response = client.post(rate_url("rate-skip", study, second.output), **HX)
    assert "Skipped" in response.content.decode()
    third = live_claim(study, rater)
    response = client.post(
        rate_url("rate-flag", study, third.output), {"reason": "It says it is a chatbot"}, **HX
    )
    assert "Flagged" in response.content.decode()
    statuses = dict(Rating.objects.filter(rater=rater).values_list("output_id", "status"))
    assert statuses[first.output_id] == "completed"
    assert statuses[second.output_id] == "skipped"
    assert statuses[third.output_id] == "flagged"
    assert StudyOutput.objects.get(pk=third.output_id).screening == "held"


def test_a_submit_without_a_score_keeps_the_same_output_with_a_message(rating_study):
    study, rater = rating_study.study, rating_study.raters[0]
    client = client_for(rater)
    client.post(rate_url("rate-claim", study))
    claim = live_claim(study, rater)
    response = client.post(rate_url("rate-submit", study, claim.output), {"comment": "kept"}, **HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Pick a score 1–5 first." in html and claim.output.text in html
    assert "kept" in html
    response = client.post(rate_url("rate-submit", study, claim.output), {"score": "9"})
    assert response.status_code == 400
    assert live_claim(study, rater).pk == claim.pk


def test_nothing_left_and_closed_studies_say_so(no_queue):
    setup = build_study(
        raters=1, raters_per_output=1, n_categories=1, per_category=1, arms=("base",)
    )
    study, rater = setup.study, setup.raters[0]
    client = client_for(rater)
    client.post(rate_url("rate-claim", study))
    claim = live_claim(study, rater)
    response = client.post(rate_url("rate-submit", study, claim.output), {"score": "3"}, **HX)
    assert response.status_code == 200
    assert "all the ratings it needs" in response.content.decode()
    lifecycle.study_close(study=study, user=setup.admin)
    page = client.get(rate_url("rate", study))
    assert page.context["state"] == "closed"
    response = client.post(rate_url("rate-claim", study), **HX)
    assert "not open for rating" in response.content.decode()


def test_the_rater_home_lists_only_my_open_studies(rating_study, no_queue):
    other = build_study(raters=3, rater_prefix="other")
    client = client_for(rating_study.raters[0])
    page = client.get(reverse("evaluation:rate-home"))
    assert [row[0] for row in page.context["rows"]] == [rating_study.study]
    assert other.study.name.encode() in page.content  # same name, but only one card
    assert page.content.count(b'class="card"') == 1


def test_a_submit_and_next_needs_a_bounded_number_of_queries(
    rating_study, django_assert_max_num_queries
):
    study, rater = rating_study.study, rating_study.raters[0]
    client = client_for(rater)
    client.post(rate_url("rate-claim", study), **HX)
    claim = live_claim(study, rater)
    # The next output's page also reads what is still open to the rater, their last rating
    # (to offer changing it) and whether this is their first output of its category: three
    # constant queries, whatever the study's size (24 on SQLite, 25 on PostgreSQL).
    with django_assert_max_num_queries(25):
        client.post(rate_url("rate-submit", study, claim.output), {"score": "2"}, **HX)


# --- study management --------------------------------------------------------------------


def study_form_data(setup, prompt_set, **overrides) -> dict:
    data = {
        "name": "Form study",
        "description": "",
        "prompt_set": prompt_set.pk,
        "samples_per_prompt": 2,
        "raters_per_output": 2,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_new_tokens": 64,
        "seed": 1,
        "lease_minutes": 10,
        "raters": [r.pk for r in setup.raters],
        "arms-TOTAL_FORMS": 4,
        "arms-INITIAL_FORMS": 0,
        "arms-MIN_NUM_FORMS": 0,
        "arms-MAX_NUM_FORMS": 24,
        "arms-0-arm": "base",
        "arms-0-model_version": setup.versions["base"].pk,
        "arms-0-size_tag": "",
        "arms-1-arm": "values_targeted",
        "arms-1-model_version": setup.versions["values_targeted"].pk,
        "arms-1-size_tag": "S",
        "arms-2-arm": "",
        "arms-2-model_version": "",
        "arms-2-size_tag": "",
        "arms-3-arm": "",
        "arms-3-model_version": "",
        "arms-3-size_tag": "",
    }
    for score in range(1, 6):
        data[f"rubric_{score}"] = f"Anchor for {score}"
    data.update(overrides)
    return data


def test_an_admin_creates_opens_and_follows_a_study_in_the_browser(no_queue):
    setup = build_study(open_rating=False)
    client = client_for(setup.admin)
    assert client.get(reverse("evaluation:study-create")).status_code == 200
    prompt_set = setup.study.prompt_set
    response = client.post(reverse("evaluation:study-create"), study_form_data(setup, prompt_set))
    study = Study.objects.get(name="Form study")
    assert response.status_code == 302 and response.url == study.get_absolute_url()
    assert [(a.arm, a.size_tag) for a in study.arms.all()] == [
        ("base", "77M"),
        ("values_targeted", "S"),
    ]
    assert study.rubric[0] == "Anchor for 1" and study.raters.count() == 3
    page = client.get(study.get_absolute_url())
    assert page.status_code == 200 and b"Open: sample outputs" in page.content
    client.post(reverse("evaluation:study-open", args=[study.pk]))
    study.refresh_from_db()
    assert study.status == "sampling"
    status_url = reverse("evaluation:study-status", args=[study.pk])
    response = client.get(status_url, **HX)
    assert response.status_code == 200 and b'hx-trigger="every 2s"' in response.content
    fake_sampling_run(study)
    response = client.get(status_url, **HX)
    # The poll that sees rating open swaps the badge and the log in place: no reload.
    body = response.content.decode()
    assert response.status_code == 200 and "HX-Refresh" not in response
    assert '<div id="study-head" class="row spread" hx-swap-oob="true">' in body
    assert '<span class="badge study-rating" id="study-badge">Rating</span>' in body
    assert '<section class="panel" id="study-log" hx-swap-oob="true">' in body
    assert "Rating opened" in body and 'hx-trigger="every 10s"' in body
    study.refresh_from_db()
    assert study.status == "rating" and study.outputs.count() == 2 * 4 * 2


def test_a_bad_study_form_is_refused_and_nothing_is_created(no_queue):
    setup = build_study(open_rating=False)
    client = client_for(setup.admin)
    data = study_form_data(
        setup,
        setup.study.prompt_set,
        **{
            "arms-0-arm": "",
            "arms-0-model_version": "",
            "arms-1-arm": "",
            "arms-1-model_version": "",
        },
    )
    response = client.post(reverse("evaluation:study-create"), data)
    assert response.status_code == 400 and b"Add at least one arm." in response.content
    assert Study.objects.count() == 1


def test_editing_an_open_study_changes_only_rubric_and_pool(rating_study):
    study = rating_study.study
    client = client_for(rating_study.admin)
    page = client.get(reverse("evaluation:study-edit", args=[study.pk]))
    assert b"Arms" not in page.content
    data = {f"rubric_{s}": f"New anchor {s}" for s in range(1, 6)}
    data["raters"] = [r.pk for r in rating_study.raters]
    response = client.post(reverse("evaluation:study-edit", args=[study.pk]), data)
    assert response.status_code == 302
    study.refresh_from_db()
    assert study.rubric[4] == "New anchor 5"


def test_screening_outputs_with_htmx(no_queue):
    setup = build_study(text=lambda v, p, s: "OpenAI trained me." if p == 0 else "Fine.")
    study = setup.study
    client = client_for(setup.admin)
    page = client.get(reverse("evaluation:study-outputs", args=[study.pk]) + "?screening=held")
    held = list(page.context["page"])
    assert len(held) == 3 and b"OpenAI" in page.content
    response = client.post(reverse("evaluation:output-clear", args=[held[0].pk]), **HX)
    assert response.status_code == 200 and response.content.decode().lstrip().startswith("<tr")
    response = client.post(
        reverse("evaluation:output-exclude", args=[held[1].pk]), {"reason": "vendor"}
    )
    assert response.status_code == 302
    screening = dict(
        StudyOutput.objects.filter(pk__in=[held[0].pk, held[1].pk]).values_list("pk", "screening")
    )
    assert screening == {held[0].pk: "active", held[1].pk: "excluded"}
    detail = client.get(study.get_absolute_url())
    assert b"1 output held for review" in detail.content


@pytest.mark.parametrize(
    "target", ["https://evil.example/phish", "//evil.example/", "javascript:alert(1)"]
)
def test_excluding_an_output_never_redirects_off_site(rating_study, target):
    output = rating_study.study.outputs.first()
    client = client_for(rating_study.admin)
    url = reverse("evaluation:output-exclude", args=[output.pk])
    response = client.post(url, {"reason": "x", "next": target})
    assert response.status_code == 302
    assert response.url == reverse("evaluation:study-outputs", args=[output.study_id])
    same_site = reverse("evaluation:study-outputs", args=[output.study_id]) + "?screening=held"
    assert client.post(url, {"next": same_site}).url == same_site


def test_close_unblind_and_results_in_the_browser(rating_study, researcher_client, researcher):
    study = rating_study.study
    rater = rating_study.raters[0]
    claim = queue.rating_claim_next(study=study, rater=rater)
    queue.rating_submit(public_id=claim.output.public_id, rater=rater, score=4)
    admin = client_for(rating_study.admin)
    assert admin.get(reverse("evaluation:study-results", args=[study.pk])).status_code == 200
    results_url = reverse("evaluation:study-results", args=[study.pk])
    assert researcher_client.get(results_url).status_code == 403
    admin.post(reverse("evaluation:study-close", args=[study.pk]))
    study.refresh_from_db()
    assert study.status == "closed"
    page = researcher_client.get(study.get_absolute_url())
    assert b"Unblind" in page.content
    response = researcher_client.post(reverse("evaluation:study-unblind", args=[study.pk]))
    assert response.status_code == 302 and response.url == results_url
    page = researcher_client.get(results_url)
    assert page.status_code == 200 and b"4.00" in page.content
    assert StudyEvent.objects.get(study=study, kind="unblinded").actor == researcher


# --- prompt sets -------------------------------------------------------------------------


def test_a_curator_authors_a_prompt_set_in_the_browser(curator_client):
    category = CategoryFactory()
    response = curator_client.post(
        reverse("evaluation:prompt-set-create"), {"name": "Fresh prompts", "description": "Mine."}
    )
    prompt_set = PromptSet.objects.get(name="Fresh prompts")
    assert response.status_code == 302
    curator_client.post(
        reverse("evaluation:prompt-add", args=[prompt_set.pk]),
        {"category": category.pk, "text": "First prompt?"},
    )
    curator_client.post(
        reverse("evaluation:prompt-add-lines", args=[prompt_set.pk]),
        {"category": category.pk, "lines": "Second?\n\nThird?\n"},
    )
    assert [p.text for p in prompt_set.prompts.all()] == ["First prompt?", "Second?", "Third?"]
    third = prompt_set.prompts.get(text="Third?")
    response = curator_client.post(
        reverse("evaluation:prompt-move", args=[third.pk]), {"direction": "up"}, **HX
    )
    assert response.status_code == 200 and b'id="prompts"' in response.content
    assert [p.text for p in prompt_set.prompts.all()] == ["First prompt?", "Third?", "Second?"]
    page = curator_client.get(prompt_set.get_absolute_url())
    assert page.status_code == 200 and b"Third?" in page.content
    response = curator_client.post(
        reverse("evaluation:prompt-add", args=[prompt_set.pk]),
        {"category": category.pk, "text": ""},
    )
    assert response.status_code == 400


def test_editing_a_locked_set_in_the_browser_goes_to_a_copy(curator_client, no_queue):
    setup = build_study(open_rating=False)
    prompt_set = setup.study.prompt_set
    prompt = prompt_set.prompts.first()
    response = curator_client.post(
        reverse("evaluation:prompt-edit", args=[prompt.pk]),
        {"category": prompt.category_id, "text": "Edited?"},
    )
    copy = PromptSet.objects.get(copied_from=prompt_set)
    assert response.status_code == 302 and response.url == copy.get_absolute_url()
    assert Prompt.objects.get(pk=prompt.pk).text != "Edited?"
    assert copy.prompts.first().text == "Edited?"
    response = curator_client.post(reverse("evaluation:prompt-delete", args=[prompt.pk]), **HX)
    assert response.status_code == 204 and response["HX-Redirect"].startswith(
        "/evaluation/prompt-sets/"
    )
    page = curator_client.get(reverse("evaluation:prompt-set-list"))
    assert page.status_code == 200 and b"locked" in page.content


def test_the_django_admin_lists_evaluation_records(rating_study):
    client = client_for(rating_study.admin)
    rating_study.admin.is_superuser = True
    rating_study.admin.save(update_fields=["is_superuser"])
    for model in ("promptset", "study", "studyoutput", "rating"):
        response = client.get(f"/admin/evaluation/{model}/")
        assert response.status_code == 200, model
    response = client.get(f"/admin/evaluation/study/{rating_study.study.pk}/change/")
    assert response.status_code == 200
