"""A Redis shard hung, not stopped (issue #27, point 1): `docker compose pause` of redis-2 (the
cgroup freezer: its connections stay open and silent, as a lost host's) for 15 s under
chatting sockets and background tasks, in direct and relay mode, at the compose default
socket timeout (30 s; scripts/test lowers it to 2 s, so this test recreates the app
services at the default first, and back afterwards).

Asserted: rooms whose group lives on the healthy shard get every post to every member within
1 s, members of interface servers whose own inbox lives on the hung shard included (the
shard is chosen so that there are some: their messages go to the inbox's spare shard, which
they read too); every room delivers normally within 5 s of the shard's return; no task runs
twice and every task is done; no post is stored twice (a frame may come twice: printed);
every socket got one hello frame (the connect handler ran once); no socket closed.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_backend import backend

from conftest import BASE_URL, WS_URL, compose, parts, placement, service_exec, wait_for_task
from kit_clients import ChatMember, fetch

pytestmark = [
    *parts("direct", "relay"),
    pytest.mark.skipif(backend() != "redis", reason="the stack runs another backend"),
]

ROOMS, MEMBERS = 8, 5
POST_EVERY = (0.7, 1.3)
PAUSE_AFTER, PAUSE_SECONDS, POST_AFTER_RETURN = 5.0, 15.0, 10.0
HEALTHY_DELAY, RECOVERY_SECONDS = 1.0, 5.0
DEFAULT_SOCKET_TIMEOUT = "30"
APP_SERVICES = ("daphne", "worker", "worker-slow")


class Member(ChatMember):
    """A socket of a room: posts now and then; when each message reached it, how often."""

    tag = "h"

    def __init__(self, number: int, room: str) -> None:
        super().__init__(number, room, WS_URL, POST_EVERY)
        self.received: dict[str, float] = {}
        self.times: Counter[str] = Counter()
        self.ids: dict[str, set[int]] = {}  # text -> the stored message ids it came with

    def record(self, event: dict) -> None:
        self.received.setdefault(event["message"], time.monotonic())
        self.times[event["message"]] += 1
        self.ids.setdefault(event["message"], set()).add(event["id"])


def cut_off_interfaces(found: dict[str, dict], paused: int) -> set[str]:
    """The interface processes whose inbox is on shard ``paused`` and that hold members of a
    room whose group is on the healthy shard: only the inbox's spare keeps them delivering."""
    return {
        name
        for p in found.values()
        if p["group"] != paused
        for name, shard in p["inboxes"].items()
        if shard == paused
    }


def at_socket_timeout(value: str) -> None:
    """The app services recreated with this REDIS_SOCKET_TIMEOUT (the stack's other settings kept)."""
    compose("up", "--detach", "--wait", "--no-deps", *APP_SERVICES, env={"REDIS_SOCKET_TIMEOUT": value})


def task_runs(since: str) -> Counter[str]:
    """How often each task ran to its end, from the workers' logs."""
    logs = compose("logs", "--no-color", "--since", since, "worker", "worker-slow").stdout
    return Counter(re.findall(r"task (\d+) (?:done|failed) on", logs))


def queue_task(number: int) -> str:
    """POST /tasks/ (the demo's background work), waiting as long as a paused shard may make it."""
    body = json.dumps({"hang": number, "channel": "tasks"}).encode()
    created = fetch(f"{BASE_URL}/tasks/", "POST", body, {"Content-Type": "application/json"}, timeout=90)
    assert created.status == 202, created.body
    return created.json()["id"]


@pytest.fixture
def default_socket_timeout():
    before = service_exec("worker", "printenv", "REDIS_SOCKET_TIMEOUT", check=False).stdout.strip()
    at_socket_timeout(DEFAULT_SOCKET_TIMEOUT)
    try:
        yield
    finally:
        if before and before != DEFAULT_SOCKET_TIMEOUT:
            at_socket_timeout(before)


def test_a_shard_paused_under_chat_and_tasks_stalls_nothing_beyond_it(default_socket_timeout, capsys):
    tag = uuid.uuid4().hex[:6]
    rooms = [f"e2e-hang-{tag}-{n}" for n in range(ROOMS)]
    members = [Member(n, rooms[n % ROOMS]) for n in range(ROOMS * MEMBERS)]
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
    found: dict[str, dict] = {}
    pause: dict[str, float | int] = {}

    async def scenario() -> list[str]:
        done, start = asyncio.Event(), asyncio.Event()
        total = PAUSE_AFTER + PAUSE_SECONDS + POST_AFTER_RETURN
        runs = [asyncio.ensure_future(m.run(start, lambda: posting(total), done)) for m in members]
        deadline = time.monotonic() + 60
        while not (all(m.hello for m in members) and all(p["members"] for p in found.values()) and found):
            assert time.monotonic() < deadline, f"not every socket joined its room: {found}"
            await asyncio.sleep(0.5)
            found.update(await asyncio.to_thread(placement, rooms))
        # The shard to pause: the one that cuts off more interfaces holding members of rooms
        # whose group is on the other shard (without them, the inboxes' spares go untried).
        pause["shard"] = max((1, 0), key=lambda shard: len(cut_off_interfaces(found, shard)))
        assert cut_off_interfaces(found, int(pause["shard"])), f"no interface's inbox to cut off: {found}"
        service = f"redis-{pause['shard'] + 1}"
        pause["started"] = time.monotonic()
        start.set()
        posted = []
        # The requests have threads of their own: in the default executor (a few threads on a
        # small host) the ones waiting for the shard held up the `unpause` behind them.
        requests = ThreadPoolExecutor(max_workers=int(PAUSE_SECONDS) + 1, thread_name_prefix="task-post")
        loop = asyncio.get_running_loop()
        await asyncio.sleep(PAUSE_AFTER)
        await asyncio.to_thread(compose, "pause", service)
        pause["at"] = time.monotonic()
        try:
            while time.monotonic() - pause["at"] < PAUSE_SECONDS:
                # Not awaited here: a request whose reply channel waits for the paused shard
                # must not hold up the next ones.
                posted.append(loop.run_in_executor(requests, queue_task, len(posted)))
                await asyncio.sleep(1)
        finally:
            await asyncio.to_thread(compose, "unpause", service)
        pause["back"] = time.monotonic()
        await asyncio.sleep(POST_AFTER_RETURN + 3)
        done.set()
        await asyncio.gather(*runs)
        try:
            return await asyncio.gather(*posted)
        finally:
            requests.shutdown(wait=False)

    def posting(total: float) -> bool:
        return time.monotonic() - pause["started"] < total

    tasks = asyncio.run(scenario())
    statuses = [wait_for_task(task_id, timeout=60)["status"] for task_id in tasks]
    runs = task_runs(since)
    report = Report(members, found, int(pause["shard"]), pause["at"], pause["back"])
    ran_twice = {task: n for task, n in runs.items() if n > 1}
    with capsys.disabled():
        print(
            f"\n  redis-{int(pause['shard']) + 1} paused {PAUSE_SECONDS:g} s: {report.summary()}; "
            f"{len(tasks)} tasks, {dict(Counter(statuses))}, run twice {ran_twice}"
        )
    assert report.closes == 0
    assert statuses == ["done"] * len(tasks), Counter(statuses)
    assert not ran_twice, f"tasks run twice: {ran_twice}"
    assert report.stored_twice == 0, f"{report.stored_twice} posts were stored twice"
    # Frames may come twice (printed, not asserted): a send the shard ran just as it froze,
    # before its reply left, goes to the spare too (at least once; docs/channel-layer.md).
    assert report.hellos == [1] * len(members), "a connect handler ran more than once"
    assert not report.late_rooms, (
        f"rooms not delivering normally {RECOVERY_SECONDS:g} s after the return: {report.late_rooms}"
    )
    assert report.healthy_missing == 0, (
        f"{report.healthy_missing} deliveries in rooms on the healthy shard never came"
    )
    assert report.healthy_delays[-1] <= HEALTHY_DELAY, (
        f"rooms on the healthy shard delayed up to {report.healthy_delays[-1]:.2f} s"
    )


class Report:
    """What the members saw, around a pause from ``paused`` to ``back`` of shard ``shard``."""

    def __init__(self, members: list[Member], found: dict[str, dict], shard: int, paused: float, back: float):
        self.posts = [(m, text, sent) for m in members for text, sent in m.sent.items()]
        healthy = {room for room, p in found.items() if p["group"] != shard}
        self.healthy_rooms = len(healthy)
        self.cut_off = len(cut_off_interfaces(found, shard))
        in_room = {room: [o for o in members if o.room == room] for room in found}
        # Every post sent during the pause in a room on the healthy shard, to every member.
        measured = [
            (o, t, s)
            for m, t, s in self.posts
            if paused <= s <= back and m.room in healthy
            for o in in_room[m.room]
        ]
        self.healthy_missing = sum(1 for o, t, _ in measured if t not in o.received)
        self.healthy_delays = sorted(o.received[t] - s for o, t, s in measured if t in o.received) or [
            float("nan")
        ]
        # The same rooms' delays before the pause: what the machine gives without a fault.
        before = [(m, t, s) for m, t, s in self.posts if s < paused and m.room in healthy]
        self.before_delays = sorted(
            o.received[t] - s for m, t, s in before for o in in_room[m.room] if t in o.received
        ) or [float("nan")]
        # When the posts delayed beyond the bound were sent, in seconds after the pause began.
        self.slow_sent = sorted(
            {round(s - paused, 1) for o, t, s in measured if o.received.get(t, s) - s > HEALTHY_DELAY}
        )
        self.late_rooms = {}
        for room, inroom in in_room.items():
            after = [(t, s) for m, t, s in self.posts if m.room == room and s >= back + RECOVERY_SECONDS]
            bad = [t for t, s in after if any(t not in o.received or o.received[t] - s > 1.0 for o in inroom)]
            if bad or not after:
                # The first late posts, with when they were sent (after the return) and their delays.
                sent_at = dict(after)
                self.late_rooms[room] = [
                    (
                        t,
                        round(sent_at[t] - back, 1),
                        [round(o.received[t] - sent_at[t], 1) if t in o.received else None for o in inroom],
                    )
                    for t in bad[:2]
                ]
        self.twice = sum(count - 1 for m in members for count in m.times.values() if count > 1)
        self.stored_twice = sum(1 for m in members for ids in m.ids.values() if len(ids) > 1)
        self.closes = sum(m.closes for m in members)
        self.hellos = [m.hello_frames for m in members]
        self.expected = sum(len(in_room[m.room]) for m, _, _ in self.posts)
        self.delivered = sum(1 for m, t, _ in self.posts for o in in_room[m.room] if t in o.received)

    def summary(self) -> str:
        delays = self.healthy_delays
        over = sum(1 for d in delays if d > HEALTHY_DELAY)
        p50, p99 = delays[len(delays) // 2], delays[int(len(delays) * 0.99)]
        return "; ".join(
            [
                f"{len(self.posts)} posts, {self.delivered}/{self.expected} deliveries",
                f"{self.healthy_rooms} rooms' groups on the healthy shard, {self.cut_off} interface(s) "
                "holding their members with the inbox on the paused one",
                f"their delays p50 {p50:.2f} s, p99 {p99:.2f} s, max {delays[-1]:.2f} s "
                f"(before the pause: max {self.before_delays[-1]:.2f} s), {self.healthy_missing} missing",
                f"{over} over {HEALTHY_DELAY:g} s (posted at {self.slow_sent[:8]} s into the pause)",
                f"{self.twice} frames repeated (same id), {self.stored_twice} stored twice",
                f"{self.closes} closes",
                f"hellos {dict(Counter(self.hellos))}; rooms late after return: {self.late_rooms or 'none'}",
            ]
        )
