"""nginx limits each client address, not the site (issue #27, point 6).

nginx is recreated with small limits (NGINX_LIMIT_CONN=4, NGINX_LIMIT_REQ_RATE=5 with a
burst of 5) and TRUSTED_PROXIES naming the test's own address, so that each request's
X-Forwarded-For is its client address, as behind a real proxy. One client that holds four
long-polls gets 429 for a fifth and for a WebSocket; one that fires requests beyond the
rate gets 429 for the excess, with Retry-After; meanwhile another address is served. The
module puts nginx back as the stack's configuration has it.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import websockets

from conftest import BASE_URL, ORIGIN, WS_URL, compose, http, parts
from kit_clients import fetch

pytestmark = parts("direct")

GREEDY, OTHER = "198.51.100.7", "198.51.100.8"
LIMITS = {
    "NGINX_LIMIT_CONN": "4",
    "NGINX_LIMIT_REQ_RATE": "5",
    "NGINX_LIMIT_REQ_BURST": "5",
    # The test's requests come from the Docker bridge's gateway: believe its X-Forwarded-For.
    "TRUSTED_PROXIES": "0.0.0.0/0",
}


def recreate_nginx(env: dict[str, str]) -> None:
    compose("up", "--detach", "--no-deps", "--wait", "nginx", env=env, timeout=120)
    deadline = time.monotonic() + 30
    while http("GET", "/nginx-health").status != 200:
        assert time.monotonic() < deadline, "nginx did not answer after its recreation"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def small_limits():
    recreate_nginx(LIMITS)
    yield
    recreate_nginx({})


def as_client(address: str, path: str, timeout: float = 30):
    return fetch(BASE_URL + path, headers={"X-Forwarded-For": address}, timeout=timeout)


def test_one_address_over_its_open_connections_gets_429_others_are_served(small_limits):
    room = f"limit{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(4) as pool:
        held = [pool.submit(as_client, GREEDY, f"/poll/{room}/?timeout=6") for _ in range(4)]
        time.sleep(1.5)
        fifth = as_client(GREEDY, f"/poll/{room}/?timeout=1")
        assert fifth.status == 429, fifth.status
        assert fifth.headers.get("Retry-After") == "1" and b"too many" in fifth.body
        with pytest.raises(websockets.InvalidStatus) as refused:
            connect_socket(GREEDY, room)
        assert refused.value.response.status_code == 429
        assert as_client(OTHER, "/").status == 200
        assert [poll.result().status for poll in held] == [204] * 4
    time.sleep(1.2)  # the rate limit's tokens come back
    assert as_client(GREEDY, "/").status == 200  # the polls are over: served again


def test_one_address_over_its_request_rate_gets_429_others_are_served(small_limits):
    time.sleep(1.2)
    statuses = [as_client(GREEDY, "/healthz").status for _ in range(20)]
    assert statuses.count(429) >= 8 and statuses.count(200) >= 5, statuses
    assert statuses[:5] == [200] * 5  # the burst goes through at once
    assert as_client(OTHER, "/healthz").status == 200


def connect_socket(address: str, room: str) -> None:
    async def attempt() -> None:
        url = f"{WS_URL}/ws/chat/{urllib.parse.quote(room)}/"
        async with websockets.connect(
            url, origin=ORIGIN, additional_headers={"X-Forwarded-For": address}, open_timeout=10
        ):
            pass

    asyncio.run(attempt())
