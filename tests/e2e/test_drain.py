"""A Daphne replica stopped as `make deploy` and `docker stop` stop it (SIGTERM): it takes no
new connection, closes its WebSockets with 1012 ("service restart") spread over
DAPHNE_DRAIN_SECONDS, and its clients, reconnecting with the last message id they saw,
miss nothing that was posted meanwhile. The other replica's sockets never notice. In relay
mode the stopped relay leaves its groups on the way out (its lifespan shutdown), rather
than stay a member that every group message is sent to, unread, for a day."""

import asyncio
import json
import subprocess
import time
import uuid

import pytest
import websockets

from conftest import ASGI_MODE, parts, placement, recv_json, wait_container_healthy, ws_connect

pytestmark = parts("direct", "relay")

DRAIN_SECONDS = 10  # compose's default DAPHNE_DRAIN_SECONDS


async def open_sockets(room: str, count: int) -> dict[str, list]:
    """``count`` sockets in ``room``, by the Daphne replica holding each."""
    by_replica: dict[str, list] = {}
    for _ in range(count):
        socket = await ws_connect(room)
        hello = await recv_json(socket)
        by_replica.setdefault(hello["interface"].split("/", 1)[1], []).append(socket)
    return by_replica


async def keep_reading(socket) -> None:
    """Read a socket's frames as they come (a client that stops reading stops answering
    pings, and the server then closes it: not what this test is about)."""
    try:
        while True:
            await socket.recv()
    except websockets.ConnectionClosed:
        pass


async def follow(socket, room: str, posted: dict[int, str], done: asyncio.Event) -> dict:
    """Read a socket until the server closes it, then reconnect with ``?after=`` and read on
    until every posted message has arrived. What happened, for the assertions."""
    seen: dict[int, str] = {}
    last = 0
    closed_at = code = None
    while True:
        try:
            event = await recv_json(socket, timeout=DRAIN_SECONDS + 20)
        except websockets.ConnectionClosed:
            break
        if event.get("type") == "message":
            seen[event["id"]] = event["message"]
            last = max(last, event["id"])
    closed_at, code = time.monotonic(), socket.close_code
    async with ws_connect(room, after=last) as again:
        deadline = time.monotonic() + DRAIN_SECONDS + 30
        while not (done.is_set() and posted.keys() <= seen.keys()) and time.monotonic() < deadline:
            try:
                event = await recv_json(again, timeout=1)
            except TimeoutError:
                continue
            if event.get("type") == "message":
                seen[event["id"]] = event["message"]
    return {"code": code, "closed_at": closed_at, "seen": seen}


def test_a_stopped_daphne_drains_its_sockets_with_1012_and_their_clients_miss_nothing(capsys):
    room = f"e2e-drain-{uuid.uuid4().hex[:8]}"

    async def scenario():
        by_replica = await open_sockets(room, 16)
        if len(by_replica) < 2:
            pytest.fail(f"every socket landed on one Daphne replica: {list(by_replica)}")
        target, *others = sorted(by_replica, key=lambda host: -len(by_replica[host]))
        draining, staying = by_replica[target], [s for host in others for s in by_replica[host]]
        posted: dict[int, str] = {}
        done = asyncio.Event()
        followers = [asyncio.ensure_future(follow(s, room, posted, done)) for s in draining]
        command = ["docker", "stop", "--time", "20", target]
        stop = asyncio.ensure_future(asyncio.to_thread(subprocess.run, command, check=True, timeout=60))
        started = time.monotonic()
        poster = staying[0]
        readers = [asyncio.ensure_future(keep_reading(socket)) for socket in staying[1:]]
        try:
            n = 0
            while time.monotonic() - started < DRAIN_SECONDS + 2:
                text = f"during the drain {n}"
                await poster.send(json.dumps({"message": text}))
                while (event := await recv_json(poster))["message"] != text:
                    pass
                posted[event["id"]] = text
                n += 1
                await asyncio.sleep(0.4)
            done.set()
            results = await asyncio.gather(*followers)
            await stop
            stopped_after = time.monotonic() - started
            # Relay mode: one membership per relay process; the stopped one's is gone.
            members = placement([room])[room]["members"] if ASGI_MODE == "relay" else None
            for socket in staying:
                assert socket.close_code is None, "a socket of the other replica was closed"
            for reader in readers:
                reader.cancel()
            for socket in staying:
                await socket.close()
        finally:
            subprocess.run(["docker", "start", target], check=True, capture_output=True, timeout=60)
            wait_container_healthy(target)
            time.sleep(6)  # nginx re-reads its replicas every 5 s
        return results, posted, stopped_after, members

    results, posted, stopped_after, members = asyncio.run(scenario())
    codes = [result["code"] for result in results]
    assert codes == [1012] * len(results), codes
    closes = sorted(result["closed_at"] for result in results)
    spread = closes[-1] - closes[0]
    assert len(results) < 3 or spread > 1.0, f"the closes came together ({spread:.2f} s apart)"
    missed = [sorted(posted.keys() - result["seen"].keys()) for result in results]
    assert not any(missed), f"messages missed after the reconnect: {missed}"
    assert members in (None, 1), f"{members} relay memberships of the room, the stopped relay's among them"
    with capsys.disabled():
        print(
            f"\n  drain: {len(results)} sockets closed with 1012 over {spread:.1f} s, "
            f"{len(posted)} posts meanwhile, 0 missed after reconnecting; the replica stopped "
            f"{stopped_after:.1f} s after SIGTERM"
        )
