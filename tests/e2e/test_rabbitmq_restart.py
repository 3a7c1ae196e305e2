"""A RabbitMQ restart under open chat sockets (CHANNEL_BACKEND=rabbitmq): no process restarts,
the sockets stay open, and once the server is back every process reconnects on its own
(its consumers and group bindings restored) and the chat flows again. What the server held
while it was down (non-durable queues, messages in flight) is gone: the test posts after."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from test_backend import backend

from conftest import app_containers_started, compose, parts, recv_json, ws_connect

# How long the chat may take to flow again once the restart returned: the server's own start,
# the reconnect backoff (at most 2 s), consumers resubscribing, group bindings restored.
RECOVERY_SECONDS = 30.0

pytestmark = [
    *parts("direct", "rabbitmq"),
    pytest.mark.skipif(backend() != "rabbitmq", reason="the stack runs another backend"),
]


def test_chat_flows_again_after_a_rabbitmq_restart(capsys):
    room = f"e2e-rmq-{uuid.uuid4().hex[:8]}"
    before = app_containers_started()

    async def scenario() -> float:
        sockets = [await ws_connect(room) for _ in range(4)]
        for socket in sockets:
            assert (await recv_json(socket))["type"] == "hello"
        await sockets[0].send(json.dumps({"message": "before"}))
        for socket in sockets:
            assert (await recv_json(socket))["message"] == "before"
        await asyncio.to_thread(compose, "restart", "--timeout", "10", "rabbitmq", timeout=120)
        back = time.monotonic()
        # Post until a message reaches every socket (each attempt has a fresh text).
        attempt = 0
        while True:
            attempt += 1
            text = f"after-{attempt}"
            await sockets[attempt % len(sockets)].send(json.dumps({"message": text}))
            try:
                for socket in sockets:
                    while (await recv_json(socket, timeout=3)).get("message") != text:
                        pass
                break
            except TimeoutError:
                if time.monotonic() - back > RECOVERY_SECONDS:
                    pytest.fail(f"the chat did not flow again in {RECOVERY_SECONDS:g} s")
        took = time.monotonic() - back
        for socket in sockets:
            assert socket.close_code is None, "a socket closed during the RabbitMQ restart"
            await socket.close()
        return took

    try:
        took = asyncio.run(scenario())
    except BaseException:
        # What the servers said is the only clue to a failure here: the stack goes down after.
        logs = compose("logs", "--no-color", "--tail", "60", "rabbitmq", "daphne", "worker", check=False)
        print(logs.stdout[-20000:])
        raise
    with capsys.disabled():
        print(f"\nRabbitMQ restart: chat flowing {took:.1f} s after the restart returned; 0 sockets closed")
    assert app_containers_started() == before, "an app process restarted"
