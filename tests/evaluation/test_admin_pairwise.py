"""The Django admin shows the pairwise and preference records read-only: support can look,
but judgments, pairs and snapshots change only through their services."""

from __future__ import annotations

import pytest

from evaluation.models import Study
from evaluation.pairwise_models import PairJudgment
from evaluation.studies import pairwise_queue
from tests.conftest import client_for
from tests.evaluation.conftest import build_study

pytestmark = pytest.mark.django_db


def test_the_django_admin_shows_pairwise_records_read_only(no_queue):
    setup = build_study(samples=1, mode=Study.Mode.PAIRWISE)
    claim = pairwise_queue.pair_claim_next(study=setup.study, rater=setup.raters[0])
    pairwise_queue.pair_judge(public_id=claim.pair.public_id, rater=setup.raters[0], verdict="a")
    judgment = PairJudgment.objects.get(pair=claim.pair, rater=setup.raters[0])
    setup.admin.is_superuser = True
    setup.admin.save(update_fields=["is_superuser"])
    client = client_for(setup.admin)
    models = ("studypair", "pairjudgment", "preferenceset", "preferencepair", "preferencesnapshot")
    for model in models:
        assert client.get(f"/admin/evaluation/{model}/").status_code == 200, model
        assert client.get(f"/admin/evaluation/{model}/add/").status_code == 403, model
    change = f"/admin/evaluation/pairjudgment/{judgment.pk}/change/"
    page = client.get(change)
    html = page.content.decode()
    assert page.status_code == 200 and claim.pair.public_id in html
    assert 'name="verdict"' not in html and 'name="rater"' not in html  # shown, not editable
    assert client.get(f"/admin/evaluation/pairjudgment/{judgment.pk}/delete/").status_code == 403
    pair_page = client.get(f"/admin/evaluation/studypair/{claim.pair.pk}/change/")
    assert pair_page.status_code == 200
