"""Unit tests of the kit package. They need a real Redis: TEST_REDIS_URL."""

from __future__ import annotations

import os
import uuid

import django
import pytest

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
django.setup()


def required_env(name: str) -> str:
    """A server's URL the test compose overlay provides; a clear failure outside it."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the unit tests through `make test`")
    return value


@pytest.fixture
def redis_url() -> str:
    """URL of a real Redis server for layer tests (the test compose overlay provides one)."""
    return required_env("TEST_REDIS_URL")


@pytest.fixture
def prefix() -> str:
    """A channel prefix of this test's own."""
    return f"t{uuid.uuid4().hex[:8]}"
