"""Issue 12, item 21: 403 and 404 are pages of the site — navigation, the reason, who is
signed in with which roles and where they can go — and `dev.py run` serves them rather
than Django's debug pages unless asked for --debug."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from palmsweb.roles import Role
from tests.conftest import client_for, make_user

pytestmark = pytest.mark.django_db
ROOT = Path(settings.BASE_DIR)


def test_a_rater_on_a_study_page_gets_the_reason_their_role_and_a_way_out(db):
    rater = make_user("rita", Role.RATER)
    response = client_for(rater).get(reverse("evaluation:study-list"))
    body = response.content.decode()
    assert response.status_code == 403
    assert "Not for your role" in body and "Your role does not allow this page." in body
    assert "signed in as <strong>rita</strong> (rater)" in body
    assert 'class="mainnav"' in body  # the site's navigation
    assert reverse("evaluation:rate-home") in body.split("Where you can go")[1]
    assert reverse("evaluation:study-list") not in body.split("Where you can go")[1]


def test_the_views_own_reason_reaches_the_page(db):
    outsider = make_user("otto")
    body = client_for(outsider).get(reverse("evaluation:rate", args=[1])).content.decode()
    assert "no role yet" in body


def test_an_unknown_object_says_what_is_missing_in_words(db):
    admin = make_user("ada", Role.ADMIN, staff=True)
    response = client_for(admin).get(reverse("evaluation:study-detail", args=[987654]))
    body = response.content.decode()
    assert response.status_code == 404
    assert "There is no study with this number" in body
    assert "signed in as <strong>ada</strong> (admin)" in body


def test_an_unknown_address_lists_no_routes(db):
    admin = make_user("ada", Role.ADMIN, staff=True)
    response = client_for(admin).get("/no/such/page/")
    body = response.content.decode()
    assert response.status_code == 404 and "Nothing is at this address" in body
    assert "tried" not in body and "URLconf" not in body and "prompt-sets/<int:pk>" not in body


def test_signed_out_visitors_get_a_sign_in_button(client):
    body = client.get("/no/such/page/").content.decode()
    assert "Sign in" in body and "/accounts/login/?next=/no/such/page/" in body


def load_dev():
    spec = importlib.util.spec_from_file_location("dev_script", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dev_run_turns_debug_pages_off_unless_asked():
    dev = load_dev()
    assert dev.run_env([], base={"DEBUG": "1", "X": "y"}) == {"DEBUG": "0", "X": "y"}
    assert dev.run_env(["--debug"], base={})["DEBUG"] == "1"
    with pytest.raises(SystemExit, match="only --debug"):
        dev.run_env(["--verbose"], base={})


def test_embedded_mode_without_debug_serves_plain_http_and_its_own_static_files(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SECRET_KEY"}}
    env |= {"DEBUG": "0", "PALMSWEB_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE":
            "palmsweb.settings", "PYTHONPATH": str(ROOT)}  # fmt: skip
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.DEBUG, getattr(s, 'SECURE_SSL_REDIRECT', False), "
        "getattr(s, 'SESSION_COOKIE_SECURE', False), s.WHITENOISE_USE_FINDERS, "
        "s.STORAGES['staticfiles']['BACKEND']]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout  # fmt: skip
    assert json.loads(out) == [
        False, False, False, True, "django.contrib.staticfiles.storage.StaticFilesStorage",
    ]  # fmt: skip
