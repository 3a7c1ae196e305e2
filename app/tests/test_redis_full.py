"""A Redis shard at its maxmemory refuses, and nothing is evicted (issue #27, point 5).

The kit's Redis runs ``maxmemory-policy noeviction``: a full shard refuses a write with
``OOM command not allowed``, which the layer turns into ``ChannelFull`` for ``send`` and a
skipped, logged member for ``group_send``; reads still work, so receivers drain it.

Redis judges "full" before each command, the command's own arguments included: a server
that refused a 100 KiB message may still take a small one, so every write here is 100 KiB.

Each test starts a private ``redis-server`` (2 MB, noeviction) on a free loopback port:
filling the stack's shared Redis would disturb the tests running beside these.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence

import pytest
import redis
from channels.exceptions import ChannelFull

from channels_kit.layers.redis import RedisChannelLayer
from tests.helpers import drain_layer, run

BODY = b"x" * 100 * 1024  # 100 KiB: a 2 MB Redis is full after a dozen or two
MAXIMUM_SENDS = 200  # far more than 2 MB holds: the layer must refuse before
PLAIN = ("--save", "", "--appendonly", "no")  # nothing persisted
SERVER_OPTIONS = ("--maxmemory", "2mb", "--maxmemory-policy", "noeviction", *PLAIN)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(
    binary: str, directory: str, options: Sequence[str] = SERVER_OPTIONS
) -> tuple[subprocess.Popen, int]:
    """A private redis-server on a free loopback port, by default of 2 MB that evicts nothing
    (``options`` come first on its command line: a configuration file, ``--sentinel``); a port
    taken meanwhile: another port."""
    for _attempt in range(5):
        port = free_port()
        server = subprocess.Popen(
            [binary, *options, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while server.poll() is None and time.monotonic() < deadline:
            try:
                client.ping()
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
                continue
            client.close()
            return server, port
        client.close()
        server.kill()
        server.wait()
    pytest.fail(f"could not start a private redis-server {' '.join(options)}")


@pytest.fixture
def full_redis(tmp_path) -> Iterator[str]:
    """The URL of a private Redis with ``--maxmemory 2mb --maxmemory-policy noeviction``."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (the app image's test target has it)")
    server, port = start_server(binary, str(tmp_path))
    try:
        yield f"redis://127.0.0.1:{port}/0"
        client = redis.Redis(port=port)
        stats = client.info("stats")
        client.close()
        assert stats["evicted_keys"] == 0, "the server evicted keys"
    finally:
        server.terminate()
        server.wait(10)


def layer_on(url: str) -> RedisChannelLayer:
    # A capacity far above what 2 MB holds: the refusal comes from Redis, not from the count.
    return RedisChannelLayer(hosts=[{"address": url}], prefix=f"full-{uuid.uuid4().hex[:8]}", capacity=10_000)


async def fill(layer: RedisChannelLayer, channel: str) -> int:
    """Send 100 KiB bodies until the layer refuses; how many it took."""
    sent = 0
    with pytest.raises(ChannelFull):
        for n in range(MAXIMUM_SENDS):
            await layer.send(channel, {"type": "http.request", "n": n, "body": BODY})
            sent += 1
    return sent


def refusals(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


def test_a_full_redis_refuses_with_channel_full_and_evicts_nothing(full_redis, caplog):
    """The sender hears ChannelFull (not a ResponseError); every message taken before the
    refusal, a reply channel's included, comes back in order; once drained, sends work again."""
    layer = layer_on(full_redis)
    shard = full_redis.removeprefix("redis://")

    async def scenario():
        try:
            reply = await layer.new_channel()
            await layer.send(reply, {"type": "http.response.start", "n": -1})
            sent = await fill(layer, "http.request")
            with pytest.raises(ChannelFull):  # a '!' channel on the full shard too
                await layer.send(reply, {"type": "http.response.body", "n": -2, "body": BODY})
            replies = await drain_layer(layer, reply)
            requests = await drain_layer(layer, "http.request")
            await layer.send("http.request", {"type": "http.request", "n": sent, "body": BODY})
            again = await drain_layer(layer, "http.request")
            return sent, replies, requests, again
        finally:
            await layer.close_pools()

    with caplog.at_level(logging.WARNING, logger="channels_kit.layers.redis"):
        sent, replies, requests, again = run(scenario())
    assert sent >= 5, "the server took hardly anything before refusing"
    assert replies == [-1]
    assert requests == list(range(sent))
    assert again == [sent]
    warnings = refusals(caplog, "is at its maxmemory")
    assert warnings and shard in warnings[0] and "http.request" in warnings[0]
    assert len(warnings) <= 2, "one warning per shard and kind of write, not one per refusal"


def test_a_group_send_skips_the_members_on_a_full_shard_and_warns(full_redis, caplog):
    """group_send does not raise: the member on the full shard misses the message (a
    WARNING names the group and the channel), and gets the next one once Redis drained."""
    layer = layer_on(full_redis)

    async def scenario():
        try:
            member = await layer.new_channel()
            await layer.group_add("room", member)
            sent = await fill(layer, "jobs")
            await layer.group_send("room", {"type": "chat.message", "n": 1, "body": BODY})
            missed = await drain_layer(layer, member, timeout=0.5)
            drained = await drain_layer(layer, "jobs")
            await layer.group_send("room", {"type": "chat.message", "n": 2, "body": BODY})
            delivered = await asyncio.wait_for(layer.receive(member), 5)
            return member, sent, missed, drained, delivered["n"]
        finally:
            await layer.close_pools()

    with caplog.at_level(logging.WARNING, logger="channels_kit.layers.redis"):
        member, sent, missed, drained, delivered = run(scenario())
    assert missed == []
    assert drained == list(range(sent))
    assert delivered == 2
    warnings = refusals(caplog, "group_send to room")
    assert len(warnings) == 1
    assert "1 member channel(s) missed it" in warnings[0]
    assert layer.non_local_name(member) in warnings[0]


def test_expired_messages_make_room_on_a_full_redis(full_redis):
    """A full shard whose channel holds only expired messages takes a send: the refused
    script's trim never ran, so the layer trims (deletions pass on a full Redis) and tries
    once more. The channel's key stays alive meanwhile (sent with a longer expiry)."""
    prefix = f"full-{uuid.uuid4().hex[:8]}"
    filler = RedisChannelLayer(hosts=[{"address": full_redis}], prefix=prefix, capacity=10_000, expiry=60)
    sender = RedisChannelLayer(hosts=[{"address": full_redis}], prefix=prefix, capacity=10_000, expiry=1)

    async def scenario():
        try:
            sent = await fill(filler, "jobs")
            await asyncio.sleep(1.5)  # every message is older than the sender's expiry now
            await sender.send("jobs", {"type": "job", "n": sent, "body": BODY})
            return sent, await drain_layer(sender, "jobs")
        finally:
            await filler.close_pools()
            await sender.close_pools()

    sent, left = run(scenario())
    assert sent >= 5
    assert left == [sent], "the expired messages were trimmed, the new one taken"
