"""Relay mode on the real stack (ASGI_MODE=relay): Daphne runs the kit's relay and no
project code; the workers run the project. scripts/test starts the stack that way."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import pytest

from conftest import ASGI_MODE, compose, http, parts, recv_json, service_exec, ws_connect

pytestmark = parts("relay")


@pytest.fixture(autouse=True, scope="module")
def relay_stack():
    """These tests need a relay-mode stack: fail (never skip) on any other."""
    mode = http("GET", "/healthz").json().get("mode", "direct")
    if ASGI_MODE != "relay" or mode != "relay":
        pytest.fail(
            f"relay tests on a {mode} stack (KIT_ASGI_MODE={ASGI_MODE}): start it with ASGI_MODE=relay"
        )


def python_in(service: str, code: str) -> str:
    return service_exec(service, "python", "-c", code).stdout.strip()


def test_the_interface_image_holds_no_project_and_may_run_another_python():
    version = "import sys; print('%d.%d' % sys.version_info[:2])"
    assert python_in("daphne", version) == "3.11"
    assert python_in("worker", version) == "3.13"
    present = "import importlib.util as u; print(','.join(m for m in ('chat', 'chatdemo') if u.find_spec(m)))"
    assert python_in("daphne", present) == ""
    assert python_in("worker", present) == "chat,chatdemo"
    assert service_exec("daphne", "test", "-e", "/app/project", check=False).returncode != 0


def test_both_sides_run_the_kit_installed_from_its_wheel():
    """What `pip install ./app` installs is what the stack runs: no source copy, no PYTHONPATH."""
    where = "import channels_kit as k, importlib.metadata as m; print(k.__file__, m.version('channels-kit'))"
    for service in ("daphne", "worker"):
        location, version = python_in(service, where).split()
        assert location.startswith("/opt/venv/lib/") and "/site-packages/channels_kit/" in location
        assert version == python_in(service, "import channels_kit; print(channels_kit.__version__)")
        assert "PYTHONPATH" not in service_exec(service, "env").stdout


def test_long_poll_runs_on_a_worker_through_the_relay():
    room = f"e2e-lp-{uuid.uuid4().hex[:8]}"
    result = {}
    poller = threading.Thread(target=lambda: result.update(r=http("GET", f"/poll/{room}/?timeout=15")))
    poller.start()

    async def speak():
        async with ws_connect(room) as socket:
            await recv_json(socket)
            await asyncio.sleep(1.5)  # the poll is waiting on a worker by now
            await socket.send(json.dumps({"message": "to the poller"}))
            await recv_json(socket)

    asyncio.run(speak())
    poller.join(20)
    response = result["r"]
    assert response.status == 200, response
    assert response.json()["message"] == "to the poller"
    assert response.headers["X-Served-By"].startswith("worker/")


def redis_group_members(group: str) -> int:
    """Members of a channel-layer group, summed over the stack's Redis shards."""
    total = 0
    for shard in ("redis-1", "redis-2"):
        out = service_exec(shard, "redis-cli", "ZCARD", f"asgi:group:{group}").stdout.strip()
        total += int(out or 0)
    return total


def test_a_room_costs_one_group_membership_per_interface_server():
    room = f"e2e-fan-{uuid.uuid4().hex[:8]}"

    async def scenario():
        sockets, interfaces = [], set()
        for _ in range(12):
            socket = await ws_connect(room)
            interfaces.add((await recv_json(socket))["interface"])
            sockets.append(socket)
        assert len(interfaces) == 2, f"nginx spread 12 sockets over {interfaces}"
        # Twelve sockets, two members: the interface servers themselves.
        assert redis_group_members(f"chat.{room}") == 2
        await sockets[0].send(json.dumps({"message": "to twelve"}))
        for socket in sockets:
            assert (await recv_json(socket))["message"] == "to twelve"
        for socket in sockets:
            await socket.close()
        deadline = time.monotonic() + 10
        while redis_group_members(f"chat.{room}") and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert redis_group_members(f"chat.{room}") == 0, "the interfaces did not leave the empty group"

    asyncio.run(scenario())


def test_restarting_the_workers_drops_no_socket_and_loses_no_message():
    room = f"e2e-restart-{uuid.uuid4().hex[:8]}"

    async def scenario():
        sockets = [await ws_connect(room) for _ in range(20)]
        for socket in sockets:
            await recv_json(socket)
        restart = asyncio.ensure_future(asyncio.to_thread(compose, "restart", "worker", timeout=120))
        await asyncio.sleep(1.0)
        # Sent while the only general worker drains or is down: it waits in Redis.
        await sockets[0].send(json.dumps({"message": "during the restart"}))
        await restart
        await sockets[1].send(json.dumps({"message": "after the restart"}))
        for socket in sockets:
            # Two senders: their posts may run side by side on the new worker, in either order.
            got = {(await recv_json(socket, timeout=60))["message"] for _ in range(2)}
            assert got == {"during the restart", "after the restart"}
            assert socket.close_code is None
        for socket in sockets:
            await socket.close()

    asyncio.run(scenario())
    # The consumers' state (their room) travelled with the events: both were stored there.
    history = {m["message"] for m in http("GET", f"/history/{room}/").json()["messages"]}
    assert history == {"during the restart", "after the restart"}
