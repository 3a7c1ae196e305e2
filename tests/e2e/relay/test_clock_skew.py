"""A worker whose clock is 30 s ahead or behind the interface servers', in relay mode: no
stall, nothing run twice.

The stack's web workers stop; compose/test.yaml's ``worker-skewed`` (the same worker in the
test image, its clock moved by libfaketime: ``FAKETIME=+30s`` or ``-30s``) serves alone.
Deadlines and start windows are in the layer server's time (Redis ``TIME``), which both
sides read, so the skew changes nothing: sockets connect and chat, pages and a POST are
answered, at once, once. Then 120 one-second echoes at once make a backlog, whose
last frames are sent again: each still runs once. (Before, by the hosts' own clocks:
+30 s, every copy looked stale until a start window outgrew the skew, so a connect, a
post or a page took 34-39 s; -30 s, 24 of the 120 echoes ran twice.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections import Counter

import pytest
import websockets
from test_post_kill import tasks_with_token
from test_worker_kill import relay_stats

from conftest import WS_URL, compose, dotenv, http, parts, post_json, wait_for

pytestmark = parts("relay")

SOCKETS, POSTS = 4, 3
# Sockets that each send one frame to a one-second echo at once: with the worker's 16
# WebSocket slots, the last frames wait past their start window (4 s + 2 beats) and are
# sent again, so a first copy taken late must be found stale, whatever the worker's clock.
BACKLOG = 120
# Far above a normal answer (tens of ms) and a loaded machine's noise (up to 5 s seen
# with four stacks on two cores), far below the 34 s a skewed worker used to cost.
PROMPT = 8.0


def skewed_compose(skew: str, *args: str) -> subprocess.CompletedProcess:
    """`docker compose` with the stack's files plus compose/test.yaml, profile skew."""
    files = [arg for name in dotenv("COMPOSE_FILE", "compose.yaml").split(":") for arg in ("-f", name)]
    return compose(*files, "-f", "compose/test.yaml", "--profile", "skew", *args, env={"TEST_FAKETIME": skew})


def container_clock(container: str) -> float:
    """The container's time.time() minus this host's (libfaketime reaches `docker exec` too)."""
    command = ["docker", "exec", container, "python", "-c", "import time; print(time.time())"]
    before = time.time()
    theirs = float(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return theirs - (before + time.time()) / 2


class Member:
    """One socket of the room: its hello frames, the message frames by id, its round trips."""

    def __init__(self, number: int, room: str) -> None:
        self.number, self.room = number, room
        self.hellos: list[dict] = []
        self.frames: Counter[int] = Counter()
        self.texts: dict[str, float] = {}
        self.connect_took = 0.0
        self.round_trips: list[float] = []

    async def run(self, all_connected: asyncio.Barrier, expected: set[str], settle: float) -> None:
        started = time.monotonic()
        url = f"{WS_URL}/ws/chat/{self.room}/"
        async with websockets.connect(url, origin="http://localhost", open_timeout=60) as socket:
            reader = asyncio.ensure_future(self._read(socket))
            await wait_until(lambda: self.hellos, 60)
            self.connect_took = time.monotonic() - started
            await all_connected.wait()
            for n in range(POSTS):
                text = f"s{self.number}-{n}"
                sent = time.monotonic()
                await socket.send(json.dumps({"message": text}))
                await wait_until(lambda text=text: text in self.texts, 60)
                self.round_trips.append(self.texts[text] - sent)
            # Every member's posts (bounded), then a while for a repeated hello or message.
            with contextlib.suppress(TimeoutError):
                await wait_until(lambda: expected <= set(self.texts), 30)
            await asyncio.sleep(settle)
            reader.cancel()

    async def _read(self, socket) -> None:
        async for frame in socket:
            event = json.loads(frame)
            if event.get("type") == "hello":
                self.hellos.append(event)
            elif event.get("type") == "message":
                self.frames[event["id"]] += 1
                self.texts.setdefault(event["message"], time.monotonic())


async def wait_until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.02)


async def echo_once(number: int, echoes: Counter[str], stop_at: float) -> None:
    url = f"{WS_URL}/ws/echo/?ms=1000"
    async with websockets.connect(url, origin="http://localhost", open_timeout=60) as socket:
        await socket.send(f"b{number}")
        while (left := stop_at - time.monotonic()) > 0:
            try:
                echoes[await asyncio.wait_for(socket.recv(), left)] += 1
            except TimeoutError:
                return


def backlog() -> Counter[str]:
    """Each frame's echoes, ``BACKLOG`` one-second echoes sent at once, counted for 30 s."""
    echoes: Counter[str] = Counter()

    async def scenario() -> None:
        stop_at = time.monotonic() + 30
        await asyncio.gather(*(echo_once(n, echoes, stop_at) for n in range(BACKLOG)))

    asyncio.run(asyncio.wait_for(scenario(), 120))
    return echoes


def chat(room: str) -> list[Member]:
    members = [Member(n, room) for n in range(SOCKETS)]

    async def scenario() -> None:
        barrier = asyncio.Barrier(SOCKETS)
        expected = {f"s{m.number}-{n}" for m in members for n in range(POSTS)}
        await asyncio.gather(*(m.run(barrier, expected, settle=2.0) for m in members))

    asyncio.run(asyncio.wait_for(scenario(), 120))
    return members


@pytest.fixture(scope="module")
def only_skewed_workers():
    """The stack's web workers stopped for the module, and started again after it."""
    compose("stop", "worker")
    try:
        yield
    finally:
        skewed_compose("+0s", "rm", "--stop", "--force", "worker-skewed")
        compose("up", "--detach", "--no-deps", "--wait", "worker")


@pytest.mark.parametrize("skew", ["+30s", "-30s"])
def test_a_worker_30_s_off_answers_promptly_and_runs_every_event_once(only_skewed_workers, skew, capsys):
    skewed_compose(skew, "up", "--detach", "--no-deps", "--force-recreate", "worker-skewed")
    container = skewed_compose(skew, "ps", "--quiet", "worker-skewed").stdout.split()[0]
    off = container_clock(container)
    assert abs(off - float(skew[:-1])) < 3, f"the worker's clock is {off:+.1f} s off, not {skew}"
    serving = lambda: http("GET", "/healthz").json()["workers"]["http.request"]  # noqa: E731
    wait_for(serving, 90, "the skewed worker serves")
    before = relay_stats()

    members = chat(f"e2e-skew-{uuid.uuid4().hex[:6]}")
    pages = []
    for _ in range(3):
        started = time.monotonic()
        page = http("GET", "/io/?ms=10")
        pages.append((page.status, time.monotonic() - started, page.json().get("server")))
    token = uuid.uuid4().hex
    started = time.monotonic()
    task = post_json("/tasks/", {"channel": "tasks", "token": token})
    post_took = time.monotonic() - started
    after = relay_stats()
    echoes = backlog()
    lost_echoes = sum(1 for n in range(BACKLOG) if not echoes[f"b{n}"])
    twice = sum(count - 1 for count in echoes.values() if count > 1)

    worker = f"worker/{container[:12]}"
    connects = sorted(m.connect_took for m in members)
    trips = sorted(t for m in members for t in m.round_trips)
    hellos = [len(m.hellos) for m in members]
    repeated = sum(count - 1 for m in members for count in m.frames.values() if count > 1)
    posted = {f"s{m.number}-{n}" for m in members for n in range(POSTS)}
    missing = sum(1 for m in members for text in posted if text not in m.texts)
    resent = {
        kind: sum(after[s][kind] - before.get(s, {}).get(kind, 0) for s in after)
        for kind in ("websocket_events_resent", "http_resent", "websocket_timeouts", "http_timeouts")
    }
    with capsys.disabled():
        print(
            f"\n  worker clock {off:+.1f} s: connects max {connects[-1]:.2f} s,"
            f" posts round trip max {trips[-1]:.2f} s, pages {[round(p[1], 2) for p in pages]} s,"
            f" POST {post_took:.2f} s ({task.status}); hellos per socket {hellos},"
            f" {repeated} frames repeated, {missing} missing; {resent};"
            f" backlog of {BACKLOG} slow echoes: {lost_echoes} lost, {twice} ran twice"
        )
    assert {m.hellos[0]["server"] for m in members} == {worker}, "served by another worker"
    assert hellos == [1] * SOCKETS, "a connect handler ran twice"
    assert repeated == 0 and missing == 0
    assert connects[-1] < PROMPT and trips[-1] < PROMPT, (connects, trips)
    assert all(status == 200 and took < PROMPT and server == worker for status, took, server in pages), pages
    assert task.status == 202 and post_took < PROMPT and tasks_with_token(token) == 1
    assert set(resent.values()) == {0}, resent
    assert lost_echoes == 0 and twice == 0, f"{lost_echoes} echoes lost, {twice} ran twice"
