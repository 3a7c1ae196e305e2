"""An overload that must be reported, not silent (issue #27, point 11).

- A socket that floods a slow echo beyond RELAY_MAX_QUEUED_EVENTS: the frames the relay
  drops close the socket with 4429, the relay logs a WARNING naming the socket's channel,
  and its /metrics count the drop.
- A room flooded while one of its interfaces hangs (`docker pause`): the worker's group
  sends meet that interface's full inbox (the worker recreated with
  CHANNEL_LAYER_RELAY_CAPACITY=10, so a few posts fill it); each drop is a WARNING naming
  the channel and the group, and the worker's /metrics count them.
- A worker started in direct mode beside the relay interfaces (as an exported ASGI_MODE
  does) refuses to run, naming both modes.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import uuid

import pytest
import websockets

from conftest import ORIGIN, WS_URL, compose, parts, recv_json, service_exec, ws_connect

pytestmark = parts("relay")

METRIC = "channels_messages_dropped_total"


def dropped_total(service: str, port: int, operation: str, reason: str) -> float:
    """The counter on every container of ``service``, summed (each process counts its own)."""
    script = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics').read().decode())"
    total = 0.0
    for container in compose("ps", "--quiet", service).stdout.split():
        text = subprocess.run(
            ["docker", "exec", container, "python", "-c", script],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        pattern = rf'^{METRIC}\{{operation="{operation}",reason="{reason}"\}} (\S+)$'
        total += sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))
    return total


def logs_since(service: str, since: str) -> str:
    return compose("logs", "--no-color", "--since", since, service).stdout


def test_a_flooding_socket_is_closed_with_4429_and_the_drop_is_reported():
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    before = dropped_total("daphne", 9101, "relay event", "queue full")

    async def flood() -> int:
        url = f"{WS_URL}/ws/echo/?ms=1000"
        async with websockets.connect(url, origin=ORIGIN, open_timeout=30) as socket:
            # 40 frames a second, under Daphne's rate limit (WS_MAX_MESSAGES_PER_SECOND, 50:
            # beyond, 1008), each a 1 s echo: within 3 s more than the 100 that may wait.
            for number in range(130):
                try:
                    await socket.send(f"frame {number}")
                except websockets.ConnectionClosed:
                    break
                await asyncio.sleep(0.025)
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(socket.recv(), 30)
            return socket.close_code

    assert asyncio.run(flood()) == 4429
    assert dropped_total("daphne", 9101, "relay event", "queue full") > before
    logs = logs_since("daphne", since)
    assert re.search(
        r"WARNING .*dropped 1 message\(s\) of relay event to relay\.\S+!c\.\w+ "
        r"\(\d+ frames wait\): queue full",
        logs,
    ), logs[-3000:]


async def flood_room_past_a_hung_interface(room: str, posts: int) -> str:
    """Members on both interfaces; the one that is not the poster's is paused while the poster
    posts. Returns the paused container's host name."""
    async with ws_connect(room) as poster:
        hello = await recv_json(poster)
        ours = hello["interface"]
        for _ in range(10):  # a member on the other interface (nginx spreads the sockets)
            other = await ws_connect(room).__aenter__()
            theirs = (await recv_json(other))["interface"]
            if theirs != ours:
                break
            await other.close()
        else:
            pytest.fail("every socket landed on one interface")
        paused = theirs.split("/", 1)[1]
        subprocess.run(["docker", "pause", paused], check=True, timeout=30)
        try:
            for number in range(posts):
                await poster.send(json.dumps({"message": f"flood {number}"}))
                while (await recv_json(poster, 30)).get("message") != f"flood {number}":
                    pass
        finally:
            subprocess.run(["docker", "unpause", paused], check=True, timeout=30)
        await other.close()
        return paused


def test_group_sends_to_a_hung_interface_are_warnings_and_counted():
    room = f"flood{uuid.uuid4().hex[:8]}"
    compose(
        "up",
        "--detach",
        "--no-deps",
        "--wait",
        "worker",
        env={"CHANNEL_LAYER_RELAY_CAPACITY": "10"},
        timeout=180,
    )
    try:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
        before = dropped_total("worker", 9100, "group_send", "full")
        asyncio.run(flood_room_past_a_hung_interface(room, posts=15))
        after = dropped_total("worker", 9100, "group_send", "full")
        logs = logs_since("worker", since)
    finally:
        compose("up", "--detach", "--no-deps", "--wait", "worker", timeout=180)
    assert after > before, (before, after)
    pattern = rf"WARNING .*dropped \d+ message\(s\) of group_send to relay\.\S+! \(group chat\.{room}\): full"
    assert re.search(pattern, logs), logs[-3000:]


def test_a_worker_in_direct_mode_refuses_to_run_beside_relay_interfaces():
    started = time.monotonic()
    run = compose(
        "run", "--rm", "--no-deps", "-T", "-e", "ASGI_MODE=direct", "worker", check=False, timeout=120
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-2000:]
    assert "direct mode (ASGI_MODE=direct)" in output and "relay interfaces (ASGI_MODE=relay)" in output, (
        output[-2000:]
    )
    assert time.monotonic() - started < 90
    assert service_exec("worker", "true").returncode == 0  # the stack's own worker runs on
