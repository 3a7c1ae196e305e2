"""Relay mode without workers, with filtered workers, and with a worker killed mid-request.

These run on Daphne replicas recreated with a short DAPHNE_HTTP_TIMEOUT (the relay's
--http-timeout), put back to the stack's own settings afterwards."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import subprocess
import time
import uuid

import pytest
import websockets

from conftest import WS_URL, compose, http, parts, post_task, recv_json, wait_for, wait_for_task, ws_connect

pytestmark = parts("relay")

TIMEOUT = 12


def daphne_up(env: dict[str, str] | None = None) -> None:
    compose("up", "--detach", "--no-deps", "--wait", "daphne", env=env)
    time.sleep(6)  # nginx re-reads Daphne's replicas every 5 s


@pytest.fixture(scope="module")
def short_timeout():
    daphne_up({"DAPHNE_HTTP_TIMEOUT": str(TIMEOUT)})
    try:
        yield TIMEOUT
    finally:
        compose("up", "--detach", "--no-deps", "--wait", "worker")
        daphne_up()


def workers(count: int) -> None:
    compose("up", "--detach", "--no-deps", "--wait", "--scale", f"worker={count}", "worker")


async def connect_outcome(room: str) -> tuple[str, float]:
    """What a WebSocket connect gets: ("hello", s) or ("closed <code>", s)."""
    started = time.monotonic()
    url = f"{WS_URL}/ws/chat/{room}/"
    # The handshake itself waits for a worker: up to the relay's timeout.
    async with websockets.connect(url, origin="http://localhost", open_timeout=TIMEOUT + 10) as socket:
        try:
            frame = json.loads(await asyncio.wait_for(socket.recv(), TIMEOUT + 10))
            return frame["type"], time.monotonic() - started
        except websockets.ConnectionClosed as closed:
            return f"closed {closed.rcvd.code if closed.rcvd else None}", time.monotonic() - started


def relays_see_no_worker() -> bool:
    """Both Daphne replicas (nginx alternates) say no live worker serves http.request."""
    reports = [http("GET", "/healthz").json().get("workers", {}) for _ in range(4)]
    return all(report.get("http.request") is False for report in reports)


def test_no_worker_means_503_and_4503_at_once_not_after_the_timeout(short_timeout, capsys):
    """With every worker gone (their published states withdrawn), the relay says so in
    /healthz within seconds, and refuses new requests (503, /readyz included) and new
    sockets (4503) after its short no-worker wait, not after the timeout."""
    workers(0)
    wait_for(relays_see_no_worker, 15, "the relays seeing no worker")
    started = time.monotonic()
    response = http("GET", "/readyz")
    took = time.monotonic() - started
    assert response.status == 503 and b"no worker serves http.request" in response.body, response
    assert response.headers["X-Relayed-By"].startswith("daphne/")
    assert took < short_timeout - 3, took  # the no-worker wait (5 s), not the timeout
    outcome, connect_took = asyncio.run(connect_outcome(f"e2e-none-{uuid.uuid4().hex[:6]}"))
    assert outcome == "closed 4503", outcome  # the relay's "no worker"
    assert connect_took < short_timeout - 3, connect_took
    # A worker comes back: everything answers again.
    workers(1)
    assert wait_for(lambda: http("GET", "/whoami").status == 200, 20, "a page once a worker is back")
    assert asyncio.run(connect_outcome(f"e2e-back-{uuid.uuid4().hex[:6]}"))[0] == "hello"
    with capsys.disabled():
        print(f"\n  no worker: /readyz 503 in {took:.1f} s, a socket 4503 in {connect_took:.1f} s")


def test_a_web_only_worker_serves_pages_and_sockets_but_no_task(short_timeout):
    """A web-only worker: `runworker --only-channels=http.* --only-channels=websocket.*`."""
    workers(0)
    name = f"e2e-web-only-{uuid.uuid4().hex[:6]}"
    compose(
        "run",
        "--detach",
        "--no-deps",
        "--name",
        name,
        "worker",
        "worker",
        "--only-channels=http.*",
        "--only-channels=websocket.*",
    )
    try:
        page = wait_for(lambda: (r := http("GET", "/whoami")).status == 200 and r, TIMEOUT * 3, "a page")
        assert page.json()["server"].startswith("worker/")
        assert asyncio.run(connect_outcome(f"e2e-web-{uuid.uuid4().hex[:6]}"))[0] == "hello"
        task_id = post_task({"n": 1}, channel="tasks")
        time.sleep(3)
        assert wait_for_task(task_id, statuses=("pending",), timeout=1)["status"] == "pending"
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stdout
        assert "serving http.request, websocket.connect" in logs, logs
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)
    workers(1)
    assert wait_for_task(task_id)["status"] == "done"  # a general worker took the queued task


def busy_worker() -> str | None:
    """The host of a worker running a message, from the published states (`make status`)."""
    ids = compose("ps", "--quiet", "worker").stdout.split()
    out = subprocess.run(
        ["docker", "exec", ids[0], "python", "manage.py", "channels_status", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    busy = [w for w in json.loads(out)["workers"] if w["busy"] and "http.request" in w["channels"]]
    return max(busy, key=lambda w: w["busy"])["host"] if busy else None


def test_a_worker_killed_mid_request_costs_its_requests_only(short_timeout, capsys):
    workers(2)
    room = f"e2e-kill-{uuid.uuid4().hex[:6]}"

    async def scenario():
        sockets = [await ws_connect(room) for _ in range(6)]
        for socket in sockets:
            await recv_json(socket)
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            started = time.monotonic()
            # Long-polls that wait 10 s on whichever worker took them.
            polls = [
                loop.run_in_executor(pool, http, "GET", f"/poll/{room}-quiet/?timeout={TIMEOUT - 2}")
                for _ in range(8)
            ]
            host = await asyncio.to_thread(
                wait_for, busy_worker, TIMEOUT - 4, "a busy worker in `make status`"
            )
            subprocess.run(["docker", "kill", "--signal", "KILL", host], check=True, capture_output=True)
            # The other worker keeps serving.
            assert (await asyncio.to_thread(http, "GET", "/whoami")).status == 200
            results = await asyncio.gather(*polls)
            took = time.monotonic() - started
        statuses = sorted(r.status for r in results)
        with capsys.disabled():
            print(f"\nlong-polls after SIGKILL of worker {host}: {statuses} in {took:.1f} s")
        assert set(statuses) <= {204, 503} and 503 in statuses, statuses
        assert took <= TIMEOUT + 6  # the killed worker's clients got their error within the timeout
        # No socket dropped; the room still works.
        await sockets[0].send(json.dumps({"message": "after the kill"}))
        for socket in sockets:
            assert (await recv_json(socket, timeout=30))["message"] == "after the kill"
            await socket.close()

    asyncio.run(scenario())
