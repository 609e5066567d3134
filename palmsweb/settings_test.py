"""Test override: the same settings with fast hashing and an in-process cache."""

import os

os.environ["PALMSWEB_TESTING"] = "1"

from palmsweb.settings import *  # noqa: E402,F403

# Production mode (DATABASE_URL set) turns on the HTTPS redirect; the test client and the
# live server speak plain HTTP.
SECURE_SSL_REDIRECT = False

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # A file, not memory: worker processes started by tests open the same test database.
    # The process id keeps two test runs on one checkout from deleting each other's file.
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": str(VAR_DIR / f"test-palmsweb-{os.getpid()}.sqlite3")  # noqa: F405
    }

# The hosted providers' dates are compared with this day, not the machine's clock, so tests
# do not change their outcome when the real date passes a cut-off; a test moves it with the
# ``settings`` fixture (training.services.hosted_dates.today).
HOSTED_DATES_TODAY = "2026-12-01"
