"""The WebSocket contract across Daphne replicas, origin checks and message limits."""

import asyncio
import json
import time
import uuid

import pytest
import websockets

from conftest import ASGI_APP_ROLE, http, recv_json, ws_connect


async def _sockets_on_two_replicas(room: str, within: float = 20.0):
    """Open sockets until two hello frames name different Daphne replicas holding them
    (bounded in time: nginx briefly avoids a replica that just restarted)."""
    opened, seen = [], {}
    deadline = time.monotonic() + within
    while len(seen) < 2 and time.monotonic() < deadline:
        socket = await ws_connect(room)
        opened.append(socket)
        hello = await recv_json(socket)
        assert hello["type"] == "hello"
        assert hello["server"].startswith(ASGI_APP_ROLE)  # who ran the consumer
        assert hello["interface"].startswith("daphne/")  # who holds the socket
        seen.setdefault(hello["interface"], socket)
        if len(seen) < 2 and len(opened) % 4 == 0:
            await asyncio.sleep(1)
    keep = list(seen.values())
    for socket in opened:
        if socket not in keep:
            await socket.close()
    return keep


def test_two_replicas_exchange_chat_messages():
    room = f"e2e-{uuid.uuid4().hex[:8]}"

    async def scenario():
        sockets = await _sockets_on_two_replicas(room)
        assert len(sockets) == 2, "nginx never spread sockets over two Daphne replicas"
        first, second = sockets
        await first.send(json.dumps({"message": "from the first replica"}))
        for socket in (first, second):
            event = await recv_json(socket)
            assert event["type"] == "message"
            assert event["room"] == room
            assert event["message"] == "from the first replica"
        await second.send(json.dumps({"message": "and back"}))
        assert (await recv_json(first))["message"] == "and back"
        assert (await recv_json(second))["message"] == "and back"
        for socket in sockets:
            await socket.close()

    asyncio.run(scenario())
    history = http("GET", f"/history/{room}/").json()["messages"]
    assert [m["message"] for m in history] == ["from the first replica", "and back"]


def test_foreign_origin_is_rejected():
    async def scenario():
        with pytest.raises(websockets.InvalidStatus) as rejected:
            async with ws_connect("e2e-origin", origin="http://evil.example"):
                pass
        assert rejected.value.response.status_code == 403

    asyncio.run(scenario())


def test_oversized_websocket_message_drops_the_socket():
    """Daphne (Autobahn) drops a socket whose message exceeds WS_MAX_MESSAGE_BYTES; nothing is relayed."""

    async def scenario():
        async with ws_connect("e2e-limit") as sender, ws_connect("e2e-limit") as bystander:
            await recv_json(sender)
            await recv_json(bystander)
            await sender.send(json.dumps({"message": "x" * 100_000}))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(sender.recv(), 10)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(bystander.recv(), 1)

    asyncio.run(scenario())


def test_overlong_chat_message_gets_an_error_frame():
    async def scenario():
        async with ws_connect("e2e-long") as socket:
            await recv_json(socket)
            await socket.send(json.dumps({"message": "y" * 2001}))
            event = await recv_json(socket)
            assert event["type"] == "error"

    asyncio.run(scenario())
