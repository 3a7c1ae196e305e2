"""Unit tests of the kit package. They need a real Redis: TEST_REDIS_URL."""

from __future__ import annotations

import os

import django
import pytest

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
django.setup()


@pytest.fixture
def redis_url() -> str:
    """URL of a real Redis server for layer tests (the test compose overlay provides one)."""
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.fail("TEST_REDIS_URL is not set: run the unit tests through `make test`")
    return url
