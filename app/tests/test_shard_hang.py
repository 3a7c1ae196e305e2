"""A Redis shard that hangs (issue #27, point 1): the layer notices it within its command
timeout, skips it until a ping finds it answering, never waits on it twice, and a send it
runs late is not written twice.

A hung shard is a private ``redis-server`` stopped with SIGSTOP (its connections stay open
and silent, as a paused container's), or a TCP proxy that freezes its open connections and
hands new ones to another server (a lost host whose shard started again elsewhere). The
socket timeout is the compose default, 30 s: nothing here may wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from channels_kit.layers.redis import RedisChannelLayer
from channels_kit.layers.redis.outages import PROBE_SECONDS
from tests.helpers import run
from tests.test_redis_full import start_server

SOCKET_TIMEOUT = 30.0  # the compose default
COMMAND_TIMEOUT = 0.5  # the package default
# Time a command may take beyond the command timeout on a busy test machine.
SLACK = 1.0


@pytest.fixture
def servers(tmp_path) -> Iterator[list[tuple[subprocess.Popen, str]]]:
    """Two private redis-servers: (process, URL)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (the app image's test target has it)")
    started = []
    try:
        for number in range(2):
            directory = tmp_path / str(number)
            directory.mkdir()
            server, port = start_server(binary, str(directory))
            started.append((server, f"redis://127.0.0.1:{port}/0"))
        yield started
    finally:
        for server, _ in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.pid, signal.SIGCONT)
            server.terminate()
            server.wait(10)


@contextlib.contextmanager
def stopped(server: subprocess.Popen) -> Iterator[None]:
    """The server hung (SIGSTOP) for the block; always woken up again."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def layer_on(*urls: str, prefix: str = "") -> RedisChannelLayer:
    """A layer (a process) on these shards; processes of one stack share ``prefix``."""
    hosts = [{"address": url, "socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": 1} for url in urls]
    prefix = prefix or f"hang-{uuid.uuid4().hex[:8]}"
    return RedisChannelLayer(hosts=hosts, prefix=prefix, command_timeout=COMMAND_TIMEOUT)


def queued(url: str, key: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return client.zcard(key)
    finally:
        client.close()


def test_sends_go_around_a_hung_shard_and_its_late_runs_write_nothing(servers):
    """General sends while one of two shards hangs: the first that meets it waits one command
    timeout, the others go to the live shard at once; once the shard wakes up, what it was
    sent before the layer gave up is not written there (its deadline passed): every message
    is received once."""
    (_, live_url), (hung, hung_url) = servers
    layer = layer_on(live_url, hung_url)
    count = 40

    async def scenario():
        await layer.send("jobs", {"type": "warm"})  # both shards' clocks compared
        await layer.send("jobs", {"type": "warm"})
        assert (await layer.receive("jobs"))["type"] == "warm"
        assert (await layer.receive("jobs"))["type"] == "warm"
        slowest = 0.0
        with stopped(hung):
            started = time.monotonic()
            for n in range(count):
                before = time.monotonic()
                await layer.send("jobs", {"type": "job", "n": n})
                slowest = max(slowest, time.monotonic() - before)
            took = time.monotonic() - started
            assert layer.health.down(1)
        await asyncio.sleep(2 * PROBE_SECONDS + SLACK)  # the hung shard runs what it held
        got = []
        with contextlib.suppress(TimeoutError):
            while True:
                got.append((await asyncio.wait_for(layer.receive("jobs"), 2))["n"])
        answers = layer.health.usable(1)
        await layer.close_pools()
        return slowest, took, got, answers

    slowest, took, got, answers = run(scenario())
    assert slowest < COMMAND_TIMEOUT + SLACK, f"a send waited {slowest:.1f} s on the hung shard"
    assert took < COMMAND_TIMEOUT + SLACK, f"{count} sends took {took:.1f} s"
    assert sorted(got) == list(range(count)), f"received {sorted(got)}"
    assert answers, "the shard answers again, but the layer still skips it"
    assert queued(hung_url, f"{layer.prefix}jobs") == 0


def test_a_group_send_reaches_both_members_while_one_members_shard_hangs(servers):
    """A room whose group lives on the live shard, one member on each shard: while the other
    shard hangs, both members get every post, the one on the hung shard through its spare
    (the live one), within the command timeout and the later posts at once; each post once,
    also after the shard wakes (what it was sent as it hung wrote nothing there)."""
    (_, live_url), (hung, hung_url) = servers

    async def scenario():
        prefix = f"hang-{uuid.uuid4().hex[:8]}"
        layers = [layer_on(live_url, hung_url, prefix=prefix) for _ in range(16)]
        by_shard = {}
        for layer in layers:  # each layer is a process: its '!' channels share its shard
            by_shard.setdefault(layer.consistent_hash(await layer.new_channel()), layer)
        assert len(by_shard) == 2, "16 processes' channels all hashed to one shard"
        sender, away = by_shard[0], by_shard[1]
        group = next(g for g in (f"room-{n}" for n in range(100)) if sender.consistent_hash(g) == 0)
        here, there = await sender.new_channel(), await away.new_channel()
        await sender.group_add(group, here)
        await sender.group_add(group, there)
        await sender.group_send(group, {"type": "chat", "n": -1})  # both shards' clocks compared
        for layer, channel in ((sender, here), (away, there)):
            assert (await asyncio.wait_for(layer.receive(channel), 5))["n"] == -1
        delays, there_got = [], []
        with stopped(hung):
            for n in range(10):
                before = time.monotonic()
                await sender.group_send(group, {"type": "chat", "n": n})
                assert (await asyncio.wait_for(sender.receive(here), 5))["n"] == n
                there_got.append((await asyncio.wait_for(away.receive(there), 5))["n"])
                delays.append(time.monotonic() - before)
        assert await sender.health.wait_usable(1, 5), "the shard woke, but the layer still skips it"
        await sender.group_send(group, {"type": "chat", "n": 99})
        assert (await asyncio.wait_for(sender.receive(here), 5))["n"] == 99
        with contextlib.suppress(TimeoutError):
            while True:
                there_got.append((await asyncio.wait_for(away.receive(there), 1.5))["n"])
        for layer in layers:
            await layer.close_pools()
        return delays, there_got

    delays, there_got = run(scenario())
    assert max(delays) < COMMAND_TIMEOUT + SLACK, delays
    assert max(delays[1:]) < 0.3, f"the hung shard delayed posts after it was known down: {delays}"
    assert there_got == [*range(10), 99], f"the member on the hung shard got {there_got}"


def test_a_process_channel_on_a_hung_shard_gets_its_messages_through_the_spare(servers):
    """A '!' channel whose shard hangs: its sends go to the spare shard within the command
    timeout, and the channel's process reads them there while its shard hangs; once the
    shard wakes, nothing arrives twice and sends go back to it."""
    (_, live_url), (hung, hung_url) = servers

    async def scenario():
        layers = [layer_on(live_url, hung_url) for _ in range(16)]
        owned = [(lay, await lay.new_channel()) for lay in layers]
        layer, channel = next((lay, ch) for lay, ch in owned if lay.consistent_hash(ch) == 1)
        await layer.send(channel, {"type": "warm"})
        await layer.receive(channel)
        with stopped(hung):
            started = time.monotonic()
            await asyncio.wait_for(
                asyncio.gather(*(layer.send(channel, {"type": "m", "n": n}) for n in range(5))), 10
            )
            got = [(await asyncio.wait_for(layer.receive(channel), 5))["n"] for _ in range(5)]
            during = time.monotonic() - started
        assert await layer.health.wait_usable(1, 5), "the shard woke, but the layer still skips it"
        await layer.send(channel, {"type": "m", "n": 5})
        got.append((await asyncio.wait_for(layer.receive(channel), 5))["n"])
        extra = None
        with contextlib.suppress(TimeoutError):
            extra = await asyncio.wait_for(layer.receive(channel), 1.5)
        home = queued(hung_url, layer.prefix + layer.non_local_name(channel))
        for lay in layers:
            await lay.close_pools()
        return got, during, extra, home

    got, during, extra, home = run(scenario())
    assert sorted(got) == list(range(6)), got
    assert during < COMMAND_TIMEOUT + SLACK, f"the messages took {during:.1f} s while the shard hung"
    assert extra is None, f"a message arrived twice: {extra}"
    assert home == 0, f"{home} message(s) left on the woken shard"


def test_a_clock_comparison_too_slow_to_tell_is_made_again_at_the_next_send(servers):
    """A process's first comparison of a shard's clock meets a stalled shard (0.3 s): it tells
    nothing, so the next send compares again rather than going without a deadline for a
    minute (sends without one that a hung shard runs late were written twice: four repeated
    frames in a direct-mode run of the e2e shard hang)."""
    (server, url), _ = servers
    layer = layer_on(url)

    async def scenario():
        connection = layer.connection(0)
        await connection.ping()
        loop = asyncio.get_running_loop()
        os.kill(server.pid, signal.SIGSTOP)
        loop.call_later(0.3, os.kill, server.pid, signal.SIGCONT)
        await layer.clocks.measure(connection, 0)  # answered after the stall: too slow
        after_slow = (layer.clocks.offsets[0], layer.clocks.due(0))
        await layer.send("jobs", {"type": "job"})  # measures again first
        after_send = (layer.clocks.offsets[0] is not None, layer.clocks.due(0))
        deadline = layer.clocks.deadline(0, COMMAND_TIMEOUT)
        await layer.close_pools()
        return after_slow, after_send, deadline

    after_slow, after_send, deadline = run(scenario())
    assert after_slow == (None, True), after_slow
    assert after_send == (True, False), after_send
    assert deadline > 0


class FreezingProxy:
    """A TCP proxy to a Redis server that can freeze: its open connections then stay open and
    silent for good (a lost host), and new connections go to ``target`` (the shard's new place)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frozen = False
        self.links: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    def freeze_and_move(self, port: int) -> None:
        self.frozen = True
        self.port = port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.links += [writer, upstream_writer]
        era = self.frozen
        await asyncio.gather(
            self._pipe(reader, upstream_writer, era),
            self._pipe(upstream_reader, writer, era),
            return_exceptions=True,
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, era: bool) -> None:
        while data := await reader.read(65536):
            while self.frozen != era:  # frozen since this connection opened: silent for good
                await asyncio.sleep(3600)
            writer.write(data)
            await writer.drain()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.links:
            writer.close()


def test_after_a_lost_host_a_burst_meets_no_dead_pooled_connection(servers):
    """Eight connections pooled, then the host is lost (they freeze) and the shard starts
    again elsewhere: the first command notices within the command timeout, the pool's dead
    connections are dropped, and a burst of eight sends then completes at once (before:
    seven of eight waited the whole socket timeout, 30 s)."""
    (_, first_url), (_, second_url) = servers
    first_port, second_port = (int(url.rsplit(":", 1)[1].split("/")[0]) for url in (first_url, second_url))

    async def scenario():
        proxy = FreezingProxy(first_port)
        port = await proxy.start()
        layer = layer_on(f"redis://127.0.0.1:{port}/0")
        await asyncio.gather(*(layer.send("jobs", {"type": "warm", "n": n}) for n in range(8)))
        pool = layer.connection(0).connection_pool
        pooled = len(pool._available_connections) + len(pool._in_use_connections)
        proxy.freeze_and_move(second_port)
        started = time.monotonic()
        with contextlib.suppress(redis.exceptions.RedisError):
            await layer.send("jobs", {"type": "lost"})
        noticed = time.monotonic() - started
        await layer.health.wait_usable(0, 10)
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(layer.send("jobs", {"type": "burst"}) for _ in range(8))), 20)
        burst = time.monotonic() - started
        await layer.close_pools()
        await proxy.close()
        return pooled, noticed, burst, layer.prefix

    pooled, noticed, burst, prefix = run(scenario())
    assert pooled >= 2, f"only {pooled} connection(s) pooled: the burst would prove nothing"
    assert noticed < COMMAND_TIMEOUT + SLACK, f"the lost host was noticed after {noticed:.1f} s"
    assert burst < SLACK, f"a burst after the move took {burst:.1f} s"
    assert queued(second_url, f"{prefix}jobs") == 8, "the burst went elsewhere than the shard's new place"
