"""Replicated shards fail over (issue #28): `REDIS_REPLICAS=1 make up` (each shard a primary
and a replica, three Sentinels), relay mode, on one host. Under chatting sockets and a stream
of background tasks, the primary of shard-1 hangs (`docker pause`: its connections stay open
and silent, as a lost host's) or vanishes (`docker kill -s KILL`; not yet reliable, see below).

Asserted: the Sentinels promote the replica within 10 s; no socket closes; every task runs,
once; every post reaches every member of its room (the posts sent meanwhile late by the
failover: a group send waits for it, and relay events queued on the lost primary are taken
from its replica or sent again); every room delivers normally within 15 s of the loss. The
old primary, woken or started again, comes back as a replica (the kit's start-redis asks
the Sentinels before it starts).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_shard_hang import Member, queue_task, task_runs

from conftest import compose, parts, service_exec, wait_for, wait_for_task

pytestmark = parts("replicas")

ROOMS, MEMBERS = 8, 5
FAULT_AFTER, POST_AFTER_PROMOTION = 5.0, 12.0
# The goals on one host: the replica promoted within 10 s, no relay event lost. And
# no stall beyond the failover and one resend of the relay events it held up: every room
# delivering normally (each post within 1 s) 15 s after the loss (3-11 s measured).
FAILOVER_GOAL, RECOVERY_SECONDS = 10.0, 15.0
MASTER = "shard-1"


def primary_of(master: str) -> str:
    """The server the first Sentinel that answers names as ``master``'s primary."""
    for sentinel in ("sentinel-1", "sentinel-2", "sentinel-3"):
        answer = service_exec(
            sentinel,
            "redis-cli",
            "-p",
            "26379",
            "--raw",
            "SENTINEL",
            "get-master-addr-by-name",
            master,
            check=False,
        )
        if answer.returncode == 0 and answer.stdout.strip():
            return answer.stdout.split()[0]
    pytest.fail(f"no Sentinel names a primary of {master}")


def role(service: str) -> str:
    answer = service_exec(service, "redis-cli", "-p", "6379", "--raw", "ROLE", check=False)
    return answer.stdout.split()[0] if answer.returncode == 0 and answer.stdout.strip() else "?"


# Only the hang runs in `make test`. A killed primary (`"killed"`, run by hand: edit this list)
# met every goal in 4 of 7 runs on 2026-12-08 and not in the other 3 (a task POST answered 502,
# a socket closed 4500, 5 deliveries missing with a p99 of 15 s): open in issue #28.
@pytest.mark.parametrize("fault", ["paused"])
def test_a_lost_primary_fails_over_and_loses_nothing(fault, capsys):
    tag = uuid.uuid4().hex[:6]
    rooms = [f"e2e-failover-{tag}-{n}" for n in range(ROOMS)]
    members = [Member(n, rooms[n % ROOMS]) for n in range(ROOMS * MEMBERS)]
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
    old = primary_of(MASTER)
    times: dict[str, float] = {}

    async def scenario() -> list[str]:
        start, done = asyncio.Event(), asyncio.Event()
        runs = [asyncio.ensure_future(m.run(start, lambda: "stop" not in times, done)) for m in members]
        deadline = time.monotonic() + 60
        while not all(m.hello for m in members):
            assert time.monotonic() < deadline, "not every socket joined its room"
            await asyncio.sleep(0.5)
        start.set()
        requests = ThreadPoolExecutor(max_workers=20, thread_name_prefix="task-post")
        loop = asyncio.get_running_loop()
        posted = []
        await asyncio.sleep(FAULT_AFTER)
        if fault == "killed":
            await asyncio.to_thread(compose, "kill", "--signal", "KILL", old)
        else:
            await asyncio.to_thread(compose, "pause", old)
        times["fault"] = time.monotonic()
        try:
            while primary_of(MASTER) == old and time.monotonic() - times["fault"] < 30:
                posted.append(loop.run_in_executor(requests, queue_task, len(posted)))
                await asyncio.sleep(0.5)
            times["promoted"] = time.monotonic()
            while time.monotonic() - times["promoted"] < POST_AFTER_PROMOTION:
                posted.append(loop.run_in_executor(requests, queue_task, len(posted)))
                await asyncio.sleep(1)
        finally:
            # The old primary back: started again, or woken.
            await asyncio.to_thread(compose, "start" if fault == "killed" else "unpause", old)
        times["stop"] = time.monotonic()
        await asyncio.sleep(3)
        # Every member should have every post of its room by now; give the last ones time.
        expected = {room: set() for room in rooms}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for member in members:
                expected[member.room].update(member.sent)
            if all(expected[m.room] <= m.received.keys() for m in members):
                break
            await asyncio.sleep(0.5)
        done.set()
        await asyncio.gather(*runs)
        try:
            return await asyncio.gather(*posted)
        finally:
            requests.shutdown(wait=False)

    tasks = asyncio.run(scenario())
    statuses = [wait_for_task(task_id, timeout=60)["status"] for task_id in tasks]
    runs = task_runs(since)
    started = time.monotonic()
    wait_for(lambda: role(old) == "slave", 30, f"{old} back as a replica")
    back_as = time.monotonic() - started
    failover = times["promoted"] - times["fault"]
    in_room = {room: [m for m in members if m.room == room] for room in rooms}
    posts = [(m, text, sent) for m in members for text, sent in m.sent.items()]
    missing = [(m.room, t) for m, t, _ in posts for o in in_room[m.room] if t not in o.received]
    # When the posts that some member never got, or got over 1 s late, were sent (s after the fault).
    missing_at = sorted(
        {round(s - times["fault"]) for m, t, s in posts for o in in_room[m.room] if t not in o.received}
    )
    late_at = sorted(
        {
            round(s - times["fault"])
            for m, t, s in posts
            for o in in_room[m.room]
            if o.received.get(t, s) - s > 1
        }
    )
    delays = sorted(o.received[t] - s for m, t, s in posts for o in in_room[m.room] if t in o.received)
    recovered = times["fault"] + RECOVERY_SECONDS
    late_after = sorted(
        o.received[t] - s for m, t, s in posts if s >= recovered for o in in_room[m.room] if t in o.received
    )
    closes = sum(m.closes for m in members)
    ran_twice = {task: n for task, n in runs.items() if n > 1}
    during = sum(1 for _, _, s in posts if times["fault"] <= s < times["promoted"])
    with capsys.disabled():
        print(
            f"\n  {old} {fault}: {primary_of(MASTER)} promoted after {failover:.1f} s; {len(posts)} posts, "
            f"{during} sent during the failover; {len(delays)}/{len(delays) + len(missing)} deliveries, "
            f"{len(missing)} missing; delays p50 {delays[len(delays) // 2]:.2f} s, "
            f"p99 {delays[int(len(delays) * 0.99)]:.2f} s, max {delays[-1]:.2f} s; "
            f"{RECOVERY_SECONDS:g} s after the loss max {(late_after or [float('nan')])[-1]:.2f} s; "
            f"{len(tasks)} tasks {dict(Counter(statuses))}, run twice {ran_twice}; {closes} closes; "
            f"{old} a replica again {back_as:.1f} s after it came back; "
            f"missing posts sent at {missing_at[:20]} s, late ones at {late_at[:20]} s after the loss"
        )
    assert failover <= FAILOVER_GOAL, f"the replica was promoted after {failover:.1f} s"
    assert closes == 0
    assert statuses == ["done"] * len(tasks), Counter(statuses)
    assert not ran_twice, f"tasks run twice: {ran_twice}"
    assert not missing, f"{len(missing)} deliveries never came, e.g. {missing[:5]}"
    assert late_after and late_after[-1] <= 1.0, (
        f"delays {RECOVERY_SECONDS:g} s after the loss: {late_after[-5:]}"
    )
