"""A Redis shard stopped for 10 s under chatting sockets and background tasks, then started
again, empty: the other shard keeps carrying tasks meanwhile, no socket closes, no app
process restarts, and every room delivers to every member again once the shard is back
(each process writes its group memberships back). What the stopped shard held (messages
queued there, rooms whose group lives there) is lost or late for the outage (replies to a
process whose inbox is there go to the next shard); the test prints how much got through."""

import asyncio
import json
import time
import uuid

import pytest
from test_backend import backend

from conftest import app_containers_started, compose, parts, post_task, recv_json, wait_for_task, ws_connect

pytestmark = [
    *parts("direct", "relay"),
    pytest.mark.skipif(backend() != "redis", reason="the stack runs another backend"),
]

OUTAGE_SECONDS = 10
ROOMS, PER_ROOM = 8, 2
RECOVERY_SECONDS = 30


async def drain(socket, seconds: float, until: str | None = None) -> list[str]:
    """Chat messages the socket gets within ``seconds`` (or until one says ``until``)."""
    got, deadline = [], time.monotonic() + seconds
    while until not in got and (left := deadline - time.monotonic()) > 0:
        try:
            event = await recv_json(socket, timeout=left)
        except TimeoutError:
            break
        if event.get("type") == "message":
            got.append(event["message"])
    return got


async def room_flows(sockets: list, text: str) -> bool:
    """One post reaches every socket of the room within a few seconds."""
    await sockets[0].send(json.dumps({"message": text}))
    for socket in sockets:
        if text not in await drain(socket, 5, until=text):
            return False
    return True


def test_a_shard_stopped_for_ten_seconds_then_back_empty(capsys):
    before = app_containers_started()
    tag = uuid.uuid4().hex[:6]

    async def scenario():
        rooms = {
            f"e2e-outage-{tag}-{n}": [await ws_connect(f"e2e-outage-{tag}-{n}") for _ in range(PER_ROOM)]
            for n in range(ROOMS)
        }
        for sockets in rooms.values():
            for socket in sockets:
                await recv_json(socket)
        await asyncio.to_thread(compose, "stop", "--timeout", "1", "redis-2")

        async def start_again() -> float:
            # On a clock of its own, whatever the requests meanwhile take.
            await asyncio.sleep(OUTAGE_SECONDS)
            await asyncio.to_thread(compose, "start", "redis-2")
            return time.monotonic()

        restart = asyncio.ensure_future(start_again())
        tasks, posted = [], 0
        try:
            while not restart.done():
                tasks.append(await asyncio.to_thread(post_task, {"outage": len(tasks)}, "tasks"))
                for sockets in rooms.values():
                    await sockets[0].send(json.dumps({"message": f"during {posted}"}))
                posted += 1
                await asyncio.sleep(1)
            delivered = sum(
                len([m for m in got if m.startswith("during")])
                for got in await asyncio.gather(*(drain(s, 2) for ss in rooms.values() for s in ss))
            )
        finally:
            back = await restart
        pending = dict(rooms)
        attempt = 0
        while pending and time.monotonic() - back < RECOVERY_SECONDS:
            attempt += 1
            for room, sockets in list(pending.items()):
                if await room_flows(sockets, f"after {attempt}"):
                    del pending[room]
        recovered = time.monotonic() - back
        closed = [s for ss in rooms.values() for s in ss if s.close_code is not None]
        for sockets in rooms.values():
            for socket in sockets:
                await socket.close()
        return tasks, posted, delivered, pending, recovered, closed

    tasks, posted, delivered, pending, recovered, closed = asyncio.run(scenario())
    assert not pending, (
        f"rooms still silent {RECOVERY_SECONDS} s after the shard came back: {sorted(pending)}"
    )
    assert not closed, f"{len(closed)} socket(s) closed during the outage"
    done = [wait_for_task(task_id, timeout=60)["status"] for task_id in tasks]
    assert done == ["done"] * len(tasks), done
    assert app_containers_started() == before, "an app container restarted"
    expected = posted * ROOMS * PER_ROOM
    with capsys.disabled():
        print(
            f"\n  redis-2 stopped {OUTAGE_SECONDS} s: {len(tasks)}/{len(tasks)} tasks done, "
            f"{delivered}/{expected} chat posts of the outage delivered (by 2 s after it), "
            f"every room delivering again {recovered:.1f} s after the start, 0 sockets closed, "
            "0 containers restarted"
        )
