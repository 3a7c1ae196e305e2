"""Every event loop served (#27): sync code (a management command, a test, a WSGI view) calls
the layer through ``async_to_sync``, each call in an event loop of its own, opened and closed
in turn, with the layer's connections closed in between; each call returns and the process
exits. Each scenario runs in a child process with a hard timeout, so that a hang fails the
test instead of stopping the run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import channels_kit
from tests.conftest import required_env

# Where the child imports the kit from: the same package as this run.
APP_DIR = str(Path(channels_kit.__file__).resolve().parents[1])
TIMEOUT = 90

LAYERS = {
    "redis": """
        from channels_kit.layers.redis import RedisChannelLayer
        layer = RedisChannelLayer(hosts=[target], prefix=prefix)
    """,
    "rabbitmq": """
        from channels_kit.layers.rabbitmq import RabbitMQChannelLayer
        layer = RabbitMQChannelLayer(url=target, prefix=prefix)
    """,
    "postgres": """
        from channels_kit.layers.postgres import PostgresChannelLayer
        layer = PostgresChannelLayer(url=target, prefix=prefix)
    """,
    "local": """
        from channels_kit.layers.local import LocalChannelLayer
        layer = LocalChannelLayer(path=target, prefix=prefix)
    """,
}

# Rounds of one-off calls, each in a new event loop: a consumer's round (it receives, then
# joins a group: on Redis a loop that receives starts the memberships watcher there, which
# runs while there are memberships, so the end of the call must stop it), a '!' channel and
# a general one sent to and received from, then the connections closed (or the layer
# flushed, which closes them too).
SEQUENCE = """
    import asyncio
    from asgiref.sync import async_to_sync

    async def receive(channel):
        return await asyncio.wait_for(layer.receive(channel), 10)

    async def consumer_round(channel, n):
        waiter = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.05)
        await layer.send(channel, {"type": "direct", "n": n})
        assert (await asyncio.wait_for(waiter, 10))["n"] == n
        await layer.group_add("room", channel)
        await layer.group_send("room", {"type": "chat", "n": n})
        assert (await receive(channel))["n"] == n  # the call ends with the channel in the group

    close = getattr(layer, "close_pools", None) or layer.close
    for n in range(6):
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(consumer_round)(channel, n)
        for name in (channel, prefix + ".general"):
            async_to_sync(layer.send)(name, {"type": "x", "n": n})
            assert async_to_sync(receive)(name)["n"] == n, name
        async_to_sync(layer.flush if n % 2 else close)()
        print("round", n, flush=True)
    async_to_sync(close)()
    print("done", flush=True)
"""


def run_child(code: str, *args: str) -> subprocess.CompletedProcess:
    """``code`` in a Python process of its own; a hang is a failure, not a hung test run."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            cwd=APP_DIR,
            env={**os.environ, "PYTHONPATH": APP_DIR},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as hung:
        out = hung.stdout.decode() if isinstance(hung.stdout, bytes) else hung.stdout or ""
        pytest.fail(
            f"still running after {TIMEOUT} s (a call never returned, or the process did not exit):\n{out}"
        )


SERVERS = {"redis": "TEST_REDIS_URL", "rabbitmq": "TEST_RABBITMQ_URL", "postgres": "TEST_POSTGRES_URL"}


def target_of(kind: str, tmp_path: Path) -> str:
    """Where the child's layer of ``kind`` lives: a server's URL, or a file for ``local``."""
    return str(tmp_path / "layer.sqlite3") if kind == "local" else required_env(SERVERS[kind])


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_one_off_calls_in_new_event_loops_return_and_the_process_exits(kind, tmp_path, prefix):
    code = "import sys\ntarget, prefix = sys.argv[1], sys.argv[2]\n"
    code += textwrap.dedent(LAYERS[kind]) + textwrap.dedent(SEQUENCE)
    result = run_child(code, target_of(kind, tmp_path), prefix)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split("\n")[-2] == "done", result.stdout


# The Redis layer's memberships watcher, its cancellation lost on the way, as Python 3.11's
# asyncio.wait_for loses it inside redis-py's writes when the write finishes as it is
# cancelled: the watcher must end anyway, or asyncio.run() (the end of every async_to_sync
# call) waits for it forever. Here every check loses the cancellation, on any Python.
LOST_CANCELLATION = """
    import asyncio, sys
    from asgiref.sync import async_to_sync
    from channels_kit.layers.redis import RedisChannelLayer
    from channels_kit.layers.redis.outages import Memberships

    checking = []
    real_check = Memberships.check

    async def check(self, index):
        checking.append(index)
        try:
            await asyncio.sleep(3)  # a write in flight
        except asyncio.CancelledError:
            pass  # the write finished as it was cancelled: its result returned, the cancel lost
        return await real_check(self, index)

    Memberships.check = check
    layer = RedisChannelLayer(hosts=[sys.argv[1]], prefix=sys.argv[2])

    async def serve(close):
        channel = await layer.new_channel()
        waiter = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.05)
        await layer.group_add("room", channel)  # a receiving loop: the watcher starts here
        while not checking:
            await asyncio.sleep(0.01)
        waiter.cancel()
        if close:
            await layer.close_pools()  # stops the watcher (a lost cancellation too)

    for close in (False, True, False):
        checking.clear()
        async_to_sync(serve)(close)
        print("returned", flush=True)
    async_to_sync(layer.flush)()
    print("done", flush=True)
"""


def test_the_memberships_watcher_ends_even_when_its_cancellation_is_lost(redis_url, prefix):
    result = run_child(LOST_CANCELLATION, redis_url, prefix)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["returned", "returned", "returned", "done"], result.stdout
