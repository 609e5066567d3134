"""Test override: the same settings with fast hashing and an in-process cache."""

import os

os.environ["PALMSWEB_TESTING"] = "1"

from palmsweb.settings import *  # noqa: E402,F403

# Production mode (DATABASE_URL set) turns on the HTTPS redirect; the test client and the
# live server speak plain HTTP.
SECURE_SSL_REDIRECT = False
