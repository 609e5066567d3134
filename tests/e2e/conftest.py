"""Playwright fixtures: one headless Chromium per session, a page per persona, login.

The journeys drive Debian's Chromium (``PALMSWEB_CHROMIUM`` overrides the path) through
Playwright's sync API against pytest-django's ``live_server``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread, so Django would refuse the
# ORM calls a test makes between browser steps; they are synchronous and safe here.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from tests.conftest import PASSWORD  # noqa: E402

CHROMIUM = os.environ.get("PALMSWEB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (set PALMSWEB_CHROMIUM to its path)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    # Assertions wait as long as actions do: expect's own default (5 s) is shorter than one
    # htmx round trip takes on a 2-core machine running the rest of a test run beside it.
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser, live_server):
    """Factory: a page in its own browser context (own cookies), so each curator has a
    separate session, as on separate machines."""
    contexts = []

    def make():
        context = browser.new_context(base_url=live_server.url, accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def sign_in(page, user) -> None:
    """Sign ``user`` in through the real login form."""
    page.goto("/accounts/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


def download_exit_kit(page, job, to: Path, *, timeout_ms: int) -> Path:
    """From ``job``'s page, ask for its exit kit, wait (up to ``timeout_ms``) for the worker
    to write it and save the download as ``to``."""
    from playwright.sync_api import expect  # here: the browser fixture skips without it

    page.goto(job.get_absolute_url())
    page.locator("#exit-kit").click()  # queued; the worker writes it, the page polls
    page.wait_for_url(re.compile(r"/exit-kits/$"))
    ready = page.locator("#kits").get_by_role("link", name="Download")
    expect(ready).to_be_visible(timeout=timeout_ms)
    with page.expect_download() as download:
        ready.click()
    download.value.save_as(to)
    return to


@pytest.fixture
def login():
    """``login(page, user)``: sign a user in on that page's browser context."""
    return sign_in


# The two viewport sizes the UX issues are checked at: a laptop and a phone.
SCREENSHOT_SIZES = {"desktop": (1366, 768), "phone": (390, 844)}


@pytest.fixture
def screenshot():
    """``screenshot(page, name)``: when PALMSWEB_SCREENSHOTS names a folder, save the page at
    both sizes as ``<name>-desktop.png`` and ``<name>-phone.png`` (full page), then restore
    the viewport. Without the variable it does nothing, so journeys stay fast in CI."""
    folder = os.environ.get("PALMSWEB_SCREENSHOTS")

    def take(page, name: str) -> None:
        if not folder:
            return
        Path(folder).mkdir(parents=True, exist_ok=True)
        original = page.viewport_size
        for label, (width, height) in SCREENSHOT_SIZES.items():
            page.set_viewport_size({"width": width, "height": height})
            page.screenshot(path=str(Path(folder) / f"{name}-{label}.png"), full_page=True)
        if original:
            page.set_viewport_size(original)

    return take


# --- a real Celery worker for journeys that run jobs -------------------------------------


def _reset_broker_pools(app) -> None:
    # The producer and connection pools are cached per app; dropping them makes the next
    # send connect with the current transport options (what Celery itself does after fork).
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def celery_worker(settings, tmp_path, transactional_db, live_server):
    """A real worker on the gpu and default queues, for the duration of one test."""
    from celery.contrib.testing.worker import start_worker

    from palmsweb.celery import app

    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    saved_options = dict(app.conf.broker_transport_options or {})
    if app.conf.broker_url.startswith("filesystem"):
        folders = {name: tmp_path / f"broker-{name}" for name in ("queue", "processed", "control")}
        for folder in folders.values():
            folder.mkdir()
        app.conf.broker_transport_options = saved_options | {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]),
            "control_folder": str(folders["control"]),
        }
        _reset_broker_pools(app)
    try:
        with start_worker(
            app,
            pool="solo",
            perform_ping_check=False,
            queues=["gpu", "default"],
            shutdown_timeout=60,
        ) as worker:
            yield worker
    finally:
        app.conf.broker_transport_options = saved_options
        _reset_broker_pools(app)
