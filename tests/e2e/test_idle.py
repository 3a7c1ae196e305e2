"""The redis-py 8 trap (ENVIRONMENT.md): idle sockets and workers must outlive the Redis
client's socket timeout. scripts/test lowers it to 2 s, so 3x that is a real idle."""

import asyncio
import json
import time
import uuid

from conftest import compose, parts, recv_json, run_task, ws_connect

pytestmark = parts("direct", "local", "rabbitmq", "postgres", "relay")


def _socket_timeout_in(service: str) -> float:
    return float(compose("exec", "-T", service, "printenv", "REDIS_SOCKET_TIMEOUT").stdout)


def test_idle_socket_and_idle_worker_outlive_the_redis_socket_timeout():
    timeout = _socket_timeout_in("daphne")
    assert timeout == _socket_timeout_in("worker") == _socket_timeout_in("worker-slow") == 2.0, (
        "scripts/test should lower it"
    )
    idle = 3 * timeout
    room = f"e2e-idle-{uuid.uuid4().hex[:8]}"

    async def scenario():
        async with ws_connect(room) as listener, ws_connect(room) as speaker:
            await recv_json(listener)
            await recv_json(speaker)
            await asyncio.sleep(idle)  # nobody speaks, no task arrives
            await speaker.send(json.dumps({"message": "still there?"}))
            assert (await recv_json(listener))["message"] == "still there?"

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started >= idle
    for channel in ("thumbnail", "tasks"):  # both worker services sat idle
        task = run_task({"after": "idle"}, channel=channel)
        assert task["status"] == "done", task
