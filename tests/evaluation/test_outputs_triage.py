"""Issue 12, item 17: the admins' output triage page shows the report's letters until the
study is unblinded; revealing the arms is a deliberate, logged step, and so is hiding
them again."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from evaluation.models import StudyEvent
from evaluation.studies import lifecycle
from evaluation.studies.blinding import blind_labels
from tests.conftest import client_for
from tests.evaluation.conftest import VERSION_NAMES, build_study

pytestmark = pytest.mark.django_db
ARM_NAMES = re.compile(r"\b(Base|Control|Values-targeted)\b")
HX = {"HTTP_HX_REQUEST": "true"}


def outputs_page(client, study, **query) -> str:
    url = reverse("evaluation:study-outputs", args=[study.pk])
    return client.get(url, query).content.decode()


def arm_cells(page: str) -> list[str]:
    return re.findall(
        r'<td class="small arm-cell">((?:(?!</td>).)*)</td>\s*<td class="prewrap', page, re.S
    )


def test_outputs_show_letters_until_an_admin_reveals_the_arms_and_that_is_logged(no_queue):
    setup = build_study()
    study, admin = setup.study, client_for(setup.admin)
    letters = set(blind_labels(study).values())
    page = outputs_page(admin, study)
    cells = arm_cells(page)
    assert len(cells) == 12 and {c.split("<br>")[0].strip() for c in cells} == letters
    assert not any(ARM_NAMES.search(c) for c in cells)
    assert not any(name in page for name in VERSION_NAMES.values())
    assert "Reveal arms (logged)" in page

    reveal = reverse("evaluation:study-outputs-reveal", args=[study.pk])
    response = admin.post(reveal, {"reveal": "1", "screening": "held"})
    assert response.status_code == 302 and response.url.endswith("/outputs/?screening=held")
    page = outputs_page(admin, study)
    assert VERSION_NAMES["values_targeted"] in page and "Hide the arms again" in page
    event = StudyEvent.objects.filter(study=study, kind="arms_revealed").get()
    assert event.actor == setup.admin
    log = admin.get(study.get_absolute_url()).content.decode()
    assert "Arms revealed on the outputs page (before unblinding) — admin-rater" in log

    # Another admin's session still sees letters.
    other = client_for(setup.admin)
    assert VERSION_NAMES["values_targeted"] not in outputs_page(other, study)

    admin.post(reveal, {"reveal": "0"})
    assert VERSION_NAMES["values_targeted"] not in outputs_page(admin, study)
    assert StudyEvent.objects.filter(study=study, kind="arms_hidden").count() == 1


def test_an_htmx_row_update_keeps_the_letters(no_queue):
    setup = build_study()
    study, admin = setup.study, client_for(setup.admin)
    output = study.outputs.first()
    row = admin.post(
        reverse("evaluation:output-exclude", args=[output.pk]), {"reason": "odd"}, **HX
    ).content.decode()
    assert blind_labels(study)[output.arm_id] in row
    [cell] = arm_cells(row)
    assert not ARM_NAMES.search(cell)


def test_an_unblinded_study_shows_arms_without_a_reveal(no_queue):
    setup = build_study()
    study = lifecycle.study_close(study=setup.study, user=setup.admin)
    lifecycle.study_unblind(study=study, user=setup.admin)
    page = outputs_page(client_for(setup.admin), study)
    assert VERSION_NAMES["control"] in page and "Reveal arms" not in page
