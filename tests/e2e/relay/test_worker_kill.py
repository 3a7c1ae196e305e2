"""A worker's process killed with SIGKILL under chat load, in relay mode: nothing lost.

50 sockets in 5 rooms post about 50 messages a second while 12 clients keep slow pages
(`/io/?ms=1000`) and 12 sockets slow echoes (`/ws/echo/?ms=1000`, one frame at a time) in
flight on both workers, so the one killed surely holds some; its process is killed with
`kill -9` (inside its container, as a crash or the OOM killer would: Docker restarts it,
unlike a `docker kill`). The interface servers send again what the dead worker held
(`relay.alive` beats stop; or nothing was said by `start_by`), so every post reaches
every member of its room, no post is stored twice, every page is answered 200, no
socket closes, and the sockets it stalled go on within seconds. The counts are printed.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
import uuid
from collections import Counter

import websockets

from conftest import WS_URL, compose, http, parts, wait_container_healthy, wait_for
from kit_clients import ChatMember

pytestmark = parts("relay")

ROOMS, MEMBERS = 5, 10
POST_EVERY = (0.6, 1.4)  # seconds between two posts of one socket: about 50 posts/s in all
KILL_AFTER, POST_FOR = 8.0, 22.0  # seconds into the posting
SLOW_PAGES = 12  # clients looping on /io/?ms=1000: both workers always hold some
SLOW_ECHOES = 12  # sockets on /ws/echo/?ms=1000, one frame in flight each


def posting_for(seconds: float):
    """A member's ``posting()``: true for ``seconds`` from its first call (once connected)."""
    deadline: list[float] = []

    def posting() -> bool:
        if not deadline:
            deadline.append(time.monotonic() + seconds)
        return time.monotonic() < deadline[0]

    return posting


class Member(ChatMember):
    """One socket of a room: posts now and then; records when each message reached it."""

    tag = "k"

    def __init__(self, number: int, room: str) -> None:
        super().__init__(number, room, WS_URL, POST_EVERY)
        self.received: dict[str, float] = {}
        self.ids: dict[str, set[int]] = {}  # text -> message ids it came with
        self.frames: Counter[int] = Counter()  # message id -> frames with it

    def record(self, event: dict) -> None:
        self.received.setdefault(event["message"], time.monotonic())
        self.ids.setdefault(event["message"], set()).add(event["id"])
        self.frames[event["id"]] += 1


class SlowPages:
    """Clients that keep a one-second page in flight each, counting the answers by status."""

    def __init__(self, clients: int) -> None:
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.statuses[http("GET", "/io/?ms=1000").status] += 1
            except OSError as error:  # no answer within the client's 30 s
                self.statuses[type(error).__name__] += 1

    def __enter__(self) -> SlowPages:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


class SlowEcho:
    """A socket that sends numbered frames to a one-second echo, each after the last came back."""

    def __init__(self) -> None:
        self.sent = 0
        self.echoes: Counter[int] = Counter()
        self.longest = 0.0
        self.closes = 0

    async def run(self, stop: asyncio.Event) -> None:
        url = f"{WS_URL}/ws/echo/?ms=1000"
        async with websockets.connect(url, origin="http://localhost", open_timeout=60) as socket:
            while not stop.is_set():
                self.sent += 1
                started = time.monotonic()
                await socket.send(str(self.sent))
                try:
                    while (n := int(await asyncio.wait_for(socket.recv(), 30))) != self.sent:
                        self.echoes[n] += 1  # a late repeat of an earlier frame
                except (TimeoutError, websockets.ConnectionClosed):
                    self.closes += isinstance(socket.close_code, int)
                    return
                self.echoes[n] += 1
                self.longest = max(self.longest, time.monotonic() - started)


def relay_stats() -> dict[str, dict]:
    """Each interface server's relay counters (nginx alternates between the replicas)."""
    replicas = len(compose("ps", "--quiet", "daphne").stdout.split())
    stats: dict[str, dict] = {}
    for _ in range(20 * replicas):
        body = http("GET", "/healthz").json()
        stats[body["server"]] = body["relay"]
        if len(stats) == replicas:
            break
    return stats


def kill_9(container: str) -> None:
    """SIGKILL the container's main process (the child of its init), as a crash would."""
    script = "kill -9 $(cat /proc/1/task/1/children)"
    subprocess.run(["docker", "exec", container, "sh", "-c", script], check=True, capture_output=True)


def restarts(container: str) -> int:
    inspect = ["docker", "inspect", "--format", "{{.RestartCount}}", container]
    return int(subprocess.run(inspect, check=True, capture_output=True, text=True).stdout)


def test_kill_9_of_a_worker_under_chat_load_loses_nothing_and_it_comes_back(capsys):
    compose("up", "--detach", "--no-deps", "--wait", "--scale", "worker=2", "worker")
    victim = compose("ps", "--quiet", "worker").stdout.split()[0]
    restarts_before = restarts(victim)
    before = relay_stats()
    tag = uuid.uuid4().hex[:6]
    members = [Member(n, f"e2e-kill9-{tag}-{n % ROOMS}") for n in range(ROOMS * MEMBERS)]
    echoes = [SlowEcho() for _ in range(SLOW_ECHOES)]

    async def scenario() -> float:
        done = asyncio.Event()
        now = asyncio.Event()
        now.set()
        tasks = [asyncio.ensure_future(m.run(now, posting_for(POST_FOR), done)) for m in members]
        tasks += [asyncio.ensure_future(echo.run(done)) for echo in echoes]
        await asyncio.sleep(KILL_AFTER)
        killed_at = time.monotonic()
        await asyncio.to_thread(kill_9, victim)
        await asyncio.sleep(POST_FOR - KILL_AFTER + 2)
        # Every post reaches every member of its room, or 30 s pass.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all_delivered():
            await asyncio.sleep(0.5)
        done.set()
        await asyncio.gather(*tasks)
        return killed_at

    def all_delivered() -> bool:
        return all(
            text in other.received
            for m in members
            for text in m.sent
            for other in members
            if other.room == m.room
        )

    with SlowPages(SLOW_PAGES) as pages:
        killed_at = asyncio.run(scenario())
    came_back = wait_for(lambda: restarts(victim) > restarts_before, 30, "the killed worker restarted")
    wait_container_healthy(victim, 90)
    after = relay_stats()

    posts = [(m, text, sent) for m in members for text, sent in m.sent.items()]
    expected = sum(MEMBERS for _ in posts)
    delivered = sum(1 for m, text, _ in posts for o in members if o.room == m.room and text in o.received)
    stored_twice = sum(1 for m in members for ids in m.ids.values() if len(ids) > 1)
    repeated_frames = sum(count - 1 for m in members for count in m.frames.values() if count > 1)
    # A post's own way back to its sender: what a stall costs it.
    waits = sorted(m.received[text] - sent for m, text, sent in posts if text in m.received)
    around_kill = [
        m.received[t] - s for m, t, s in posts if t in m.received and killed_at - 1 <= s <= killed_at + 8
    ]
    resent = {
        kind: sum(after[s][kind] - before.get(s, {}).get(kind, 0) for s in after)
        for kind in ("websocket_events_resent", "http_resent", "websocket_timeouts", "http_timeouts")
    }
    closes = sum(m.closes for m in members) + sum(e.closes for e in echoes)
    echoes_sent = sum(e.sent for e in echoes)
    echoes_lost = sum(1 for e in echoes for n in range(1, e.sent + 1) if not e.echoes[n])
    echoes_repeated = sum(c - 1 for e in echoes for c in e.echoes.values() if c > 1)
    longest_echo = max(e.longest for e in echoes)
    report = [
        f"{len(posts)} posts, {delivered}/{expected} deliveries ({expected - delivered} lost)",
        f"{stored_twice} stored twice, {repeated_frames} frames repeated (same id: the page drops them)",
        f"resent {resent['websocket_events_resent']} events and {resent['http_resent']} requests",
        f"timeouts {resent['websocket_timeouts']} events, {resent['http_timeouts']} requests",
        f"post round trip p50 {waits[len(waits) // 2] * 1000:.0f} ms, max {waits[-1]:.1f} s"
        f" (posted within 8 s of the kill: max {max(around_kill):.1f} s)",
        f"slow echoes {echoes_sent} sent, {echoes_lost} lost, {echoes_repeated} repeated,"
        f" longest {longest_echo:.1f} s",
        f"pages {dict(pages.statuses)}",
        f"{closes} sockets closed",
        f"the worker restarted by itself: {came_back}",
    ]
    with capsys.disabled():
        print("\n  kill -9 of a worker under chat load: " + "; ".join(report))
    assert expected - delivered == 0, "posts lost"
    assert stored_twice == 0
    # Only a resent post can repeat, and it repeats to each member of its room (a worker killed
    # after its group_send, before the interface heard the event was done).
    assert repeated_frames <= resent["websocket_events_resent"] * MEMBERS
    assert echoes_lost == 0 and echoes_repeated <= resent["websocket_events_resent"]
    assert closes == 0
    assert set(pages.statuses) == {200}, pages.statuses
    assert resent["websocket_events_resent"] >= 1 and resent["http_resent"] >= 1, "it held nothing?"
    assert resent["websocket_timeouts"] == resent["http_timeouts"] == 0
    assert waits[-1] < 15 and longest_echo < 15, (
        f"a post waited {waits[-1]:.1f} s, an echo {longest_echo:.1f} s"
    )
