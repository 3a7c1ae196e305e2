"""Replicated shards (issue #28): a ``redis+sentinel://`` shard follows its primary through a
failover.

Private servers on loopback: a primary, its replica, and three Sentinels watching them
(quorum 2; a primary silent for 1 s counts as down). The primary then vanishes (SIGKILL)
or hangs (SIGSTOP: its connections stay open and silent, as a lost host's); the Sentinels
promote the replica, and the layer, asking them on each new connection, follows.
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
from pathlib import Path

import pytest
import redis

from channels_kit.layers.redis import RedisChannelLayer
from tests.helpers import run
from tests.test_redis_full import PLAIN, start_server

MASTER = "shard-1"
DOWN_AFTER_MS = 1000
# The goal for a failover on one host.
FAILOVER_GOAL_SECONDS = 10.0


class Replicated:
    """A primary, its replica and three Sentinels: the processes and their ports."""

    def __init__(self, tmp_path: Path, binary: str) -> None:
        self.processes: list[subprocess.Popen] = []
        self.primary, self.primary_port = self._start(binary, tmp_path / "primary", *PLAIN)
        self.replica, self.replica_port = self._start(
            binary, tmp_path / "replica", *PLAIN, "--replicaof", "127.0.0.1", str(self.primary_port)
        )
        self.sentinel_ports = []
        for number in range(3):
            directory = tmp_path / f"sentinel-{number}"
            directory.mkdir()
            conf = directory / "sentinel.conf"
            conf.write_text(
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
            )
            _, port = self._start(binary, directory, str(conf), "--sentinel")
            self.sentinel_ports.append(port)
        self.wait_replicated()

    def _start(self, binary: str, directory: Path, *args: str) -> tuple[subprocess.Popen, int]:
        directory.mkdir(exist_ok=True)
        process, port = start_server(binary, str(directory), args)
        self.processes.append(process)
        return process, port

    def wait_replicated(self) -> None:
        client = redis.Redis(port=self.replica_port)
        deadline = time.monotonic() + 15
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                pytest.fail("the replica did not sync with the primary")
            time.sleep(0.1)
        client.close()

    def primary_now(self) -> int:
        """The primary's port as the first Sentinel names it."""
        client = redis.Redis(port=self.sentinel_ports[0])
        try:
            return int(client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)[1])
        finally:
            client.close()

    def wait_role(self, port: int, role: str, timeout: float = 20) -> None:
        """Wait until the server on ``port`` has ``role`` (master, slave)."""
        client = redis.Redis(port=port, socket_timeout=2)
        deadline = time.monotonic() + timeout
        try:
            while client.execute_command("ROLE")[0].decode() != role:
                if time.monotonic() > deadline:
                    pytest.fail(f"the server on port {port} did not become a {role}")
                time.sleep(0.2)
        finally:
            client.close()

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.wait(10)


@pytest.fixture
def replicated(tmp_path) -> Iterator[Replicated]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (the app image's test target has it)")
    servers = Replicated(tmp_path, binary)
    try:
        yield servers
    finally:
        servers.stop()


def layer_on(servers: Replicated) -> RedisChannelLayer:
    host = {
        "address": f"redis+sentinel://{MASTER}",
        "sentinels": [("127.0.0.1", port) for port in servers.sentinel_ports],
        "socket_timeout": 30,
        "socket_connect_timeout": 1,
    }
    return RedisChannelLayer(hosts=[host], prefix=f"sentinel-{uuid.uuid4().hex[:8]}", group_expiry=300)


def test_a_sentinel_shard_carries_sends_and_groups(replicated):
    layer = layer_on(replicated)

    async def scenario():
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        await layer.send("jobs", {"type": "job", "n": 1})
        await layer.group_send("room", {"type": "chat", "text": "hi"})
        job = await asyncio.wait_for(layer.receive("jobs"), 5)
        chat = await asyncio.wait_for(layer.receive(channel), 5)
        await layer.close_pools()
        return job, chat

    job, chat = run(scenario())
    assert (job["n"], chat["text"]) == (1, "hi")
    # Written through the Sentinels' primary, and replicated.
    assert redis.Redis(port=replicated.replica_port).keys(f"{layer.prefix}*")


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_the_layer_follows_a_failover_of_its_primary(replicated, fault, capsys):
    """The primary vanishes or hangs under a stream of sends: the Sentinels promote the replica,
    the layer's sends go there within the failover, a group joined before the fault still
    reaches its member (a group send made during the failover waits for it), and every
    message sent after the failover is received, once. A hung
    primary that wakes up is made a replica, and nothing sent then goes to it."""
    layer = layer_on(replicated)
    reader = layer_on(replicated)  # another process, on the same prefix
    reader.prefix = layer.prefix
    old_primary = replicated.primary_port

    async def scenario():
        member = await reader.new_channel()
        await layer.group_add("room", member)
        await layer.send("jobs", {"type": "job", "n": -1})
        await asyncio.sleep(0.3)  # replicated
        os.kill(replicated.primary.pid, signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        faulted = time.monotonic()
        # Sent while the group's shard fails over: it waits for the promotion, not lost.
        during = asyncio.ensure_future(layer.group_send("room", {"type": "chat", "text": "during"}))
        sent, failed, first_ok = [], 0, None
        for n in range(400):  # 0.05 s apart: 20 s at most
            try:
                await asyncio.wait_for(layer.send("jobs", {"type": "job", "n": n}), 5)
            except Exception:  # noqa: BLE001 - the primary is away: counted, tried again
                failed += 1
            else:
                sent.append(n)
                if replicated.primary_now() != old_primary and first_ok is None:
                    first_ok = time.monotonic() - faulted
            if first_ok is not None and len(sent) >= 20 and time.monotonic() - faulted > first_ok + 1:
                break
            await asyncio.sleep(0.05)
        await asyncio.wait_for(during, 20)
        await layer.group_send("room", {"type": "chat", "text": "after"})
        chat = [(await asyncio.wait_for(reader.receive(member), 10))["text"] for _ in range(2)]
        if fault == "hung":  # the old primary wakes up: the Sentinels make it a replica
            os.kill(replicated.primary.pid, signal.SIGCONT)
            await asyncio.to_thread(replicated.wait_role, old_primary, "slave")
            for n in range(1000, 1010):
                await asyncio.wait_for(layer.send("jobs", {"type": "job", "n": n}), 5)
                sent.append(n)
        got = []
        with contextlib.suppress(TimeoutError):
            while True:
                got.append((await asyncio.wait_for(reader.receive("jobs"), 2))["n"])
        await layer.close_pools()
        await reader.close_pools()
        return first_ok, sent, failed, chat, got

    first_ok, sent, failed, chat, got = run(scenario(), timeout=90)
    with capsys.disabled():
        print(
            f"\nprimary {fault}: sends through the promoted replica after {first_ok} s; "
            f"{failed} sends failed meanwhile, {len(sent)} made, {len(got)} received"
        )
    assert replicated.primary_now() == replicated.replica_port
    assert first_ok is not None and first_ok <= FAILOVER_GOAL_SECONDS
    assert chat == ["during", "after"]
    assert len(got) == len(set(got)), "a message received twice"
    after = [n for n in sent if n >= sent[-20] or n >= 1000]
    assert set(after) <= set(got), f"sent after the failover, never received: {sorted(set(after) - set(got))}"
