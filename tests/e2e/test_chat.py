"""The WebSocket contract across Daphne replicas, origin checks and message limits."""

import asyncio
import json
import time
import uuid

import pytest
import websockets

from conftest import ASGI_APP_ROLE, http, parts, recv_json, ws_connect

pytestmark = parts("direct", "local", "rabbitmq", "postgres", "relay")


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


@pytest.mark.parametrize("size", [100_000, 4 * 1024 * 1024], ids=["message-100KB", "frame-4MiB"])
def test_oversized_websocket_message_closes_the_socket_with_1009(size):
    """A message over WS_MAX_MESSAGE_BYTES (or a frame over Daphne's 1 MiB frame limit) closes
    its socket with 1009, "message too big"; nothing is relayed, the other socket stays."""

    async def scenario():
        async with ws_connect("e2e-limit") as sender, ws_connect("e2e-limit") as bystander:
            await recv_json(sender)
            await recv_json(bystander)
            await sender.send(json.dumps({"message": "x" * size}))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(sender.recv(), 10)
            assert sender.close_code == 1009, sender.close_code
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(bystander.recv(), 1)
            await bystander.send(json.dumps({"message": "still here"}))
            assert (await recv_json(bystander))["message"] == "still here"

    asyncio.run(scenario())


async def answered_with_an_error(socket, frame: str) -> None:
    """After its hello, ``socket`` sends ``frame`` and gets an error frame back."""
    await recv_json(socket)
    await socket.send(frame)
    assert (await recv_json(socket))["type"] == "error"


def test_malformed_json_gets_an_error_frame_and_the_socket_stays():
    async def scenario():
        async with ws_connect("e2e-malformed") as socket:
            await answered_with_an_error(socket, "{not json")
            await socket.send(json.dumps({"message": "after the error"}))
            assert (await recv_json(socket))["message"] == "after the error"

    asyncio.run(scenario())


def test_overlong_chat_message_gets_an_error_frame():
    async def scenario():
        async with ws_connect("e2e-long") as socket:
            await answered_with_an_error(socket, json.dumps({"message": "y" * 2001}))

    asyncio.run(scenario())


def test_a_reconnecting_socket_gets_every_message_it_missed_in_order():
    """A socket drops; five messages are posted meanwhile; it comes back with the last id it
    saw and gets exactly those five, oldest first, then a "recovered" frame; then live ones."""
    room = f"e2e-recover-{uuid.uuid4().hex[:8]}"

    async def scenario():
        async with ws_connect(room) as poster:
            await recv_json(poster)
            async with ws_connect(room) as leaving:
                await recv_json(leaving)
                await poster.send(json.dumps({"message": "before"}))
                assert (await recv_json(poster))["message"] == "before"
                last_seen = (await recv_json(leaving))["id"]
            missed = [f"missed-{n}" for n in range(5)]
            for text in missed:
                await poster.send(json.dumps({"message": text}))
                assert (await recv_json(poster))["message"] == text
            async with ws_connect(room, after=last_seen) as back:
                assert (await recv_json(back))["type"] == "hello"
                replayed = [await recv_json(back) for _ in missed]
                assert [event["message"] for event in replayed] == missed
                assert [event["id"] for event in replayed] == sorted(event["id"] for event in replayed)
                assert await recv_json(back) == {"type": "recovered", "count": 5, "complete": True}
                await poster.send(json.dumps({"message": "live again"}))
                assert (await recv_json(back))["message"] == "live again"

    asyncio.run(scenario())


def test_a_flooding_socket_is_closed_with_1008_and_the_others_chat_on():
    """One socket sends 1,000 messages at once, far over WS_MAX_MESSAGES_PER_SECOND (50, in
    bursts of 50): it is closed with 1008, and another socket chats on meanwhile."""

    async def scenario():
        async with ws_connect("e2e-flood") as flooder, ws_connect("e2e-calm") as calm:
            await recv_json(flooder)
            await recv_json(calm)
            for _ in range(1000):  # no chat message: each gets an error frame, cheaply
                await flooder.send("{}")
            await calm.send(json.dumps({"message": "during the flood"}))
            assert (await recv_json(calm, timeout=15))["message"] == "during the flood"
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(flooder.recv(), 20)
            assert flooder.close_code == 1008, flooder.close_code

    asyncio.run(scenario())
