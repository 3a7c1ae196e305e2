"""Faults under the running stack, each ending with the stack as it was.

PostgreSQL stopped: pages answer 503 with Retry-After at once (not a 500, not a hang),
/readyz says the database is down, and everything serves again once it is back, with no
app process restarted.
"""

import time

import pytest
from test_backend import backend

from conftest import compose, http, parts

pytestmark = [
    *parts("direct", "relay"),
    pytest.mark.skipif(
        backend() == "postgres", reason="the channel layer lives in the database: its outage is the layer's"
    ),
]


def wait_healthy(service: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = compose("ps", "--format", "{{.Health}}", service).stdout.split()
        if status and all(s == "healthy" for s in status):
            return
        time.sleep(1)
    pytest.fail(f"{service} not healthy {timeout:g} s after its start")


def test_pages_answer_503_at_once_while_the_database_is_down_then_recover(capsys):
    assert http("GET", "/?room=e2e-db").status == 200
    compose("stop", "--timeout", "10", "db")
    try:
        started = time.monotonic()
        page = http("GET", "/?room=e2e-db")
        took = time.monotonic() - started
        ready = http("GET", "/readyz")
    finally:
        compose("start", "db")
    assert page.status == 503, page
    assert page.headers.get("Retry-After") == "5"
    assert took < 10, f"the 503 took {took:.1f} s"  # a connect timeout (5 s) at the very worst
    assert ready.status == 503 and b"database" in ready.body
    wait_healthy("db")
    deadline = time.monotonic() + 30
    while (status := http("GET", "/?room=e2e-db").status) != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status == 200, "pages did not recover once the database was back"
    with capsys.disabled():
        print(f"\n  database stopped: page 503 in {took * 1000:.0f} ms; pages served again after the start")
