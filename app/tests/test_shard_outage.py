"""A Redis shard down, or back empty, beside a real one: the layer keeps flowing through the
shards that answer, and a shard that lost its data gets this process's memberships back.

The shard that is down is an address where nothing listens (connections are refused, as
for a stopped container); the shard that comes back empty is a real server flushed.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio

from channels_kit.layers.redis import RedisChannelLayer
from channels_kit.layers.redis.layer import redacted
from channels_kit.layers.redis.outages import OUTAGE_ERRORS
from tests.conftest import required_env
from tests.helpers import run

DOWN = "redis://127.0.0.1:1/0"  # nothing listens there: connection refused at once


def layer_on(*urls: str) -> RedisChannelLayer:
    hosts = [{"address": url, "socket_timeout": 5, "socket_connect_timeout": 1} for url in urls]
    return RedisChannelLayer(hosts=hosts, prefix=f"outage-{uuid.uuid4().hex[:8]}", group_expiry=300)


@pytest.fixture
def live() -> str:
    return required_env("TEST_REDIS_SHARD_URLS").split(",")[0]


def test_general_channels_flow_through_the_shard_that_answers(live):
    """Every send reaches the live shard; the waiting receiver is not failed by the dead one."""
    layer = layer_on(live, DOWN)

    async def scenario():
        receiver = asyncio.gather(*(layer.receive("jobs") for _ in range(10)))
        await asyncio.sleep(0.5)  # the dead shard's poller has failed by now
        for n in range(10):
            await layer.send("jobs", {"type": "job", "n": n})
        got = await asyncio.wait_for(receiver, 20)
        await layer.close_pools()
        return sorted(message["n"] for message in got)

    assert run(scenario()) == list(range(10))


def test_a_group_send_reaches_the_members_on_shards_that_answer(live):
    """Two processes in a room: the one whose '!' channels hash to the dead shard misses the
    message, the other gets it, and the sender does not fail."""

    async def scenario():
        layers = [layer_on(live, DOWN) for _ in range(16)]
        by_shard = {}
        for layer in layers:  # each layer is a process: its '!' channels share its shard
            by_shard.setdefault(layer.consistent_hash(await layer.new_channel()), layer)
        if len(by_shard) < 2:
            pytest.fail("16 processes' channels all hashed to one shard")
        alive, dead = by_shard[0], by_shard[1]
        group = next(g for g in (f"room-{n}" for n in range(100)) if alive.consistent_hash(g) == 0)
        here, there = await alive.new_channel(), await dead.new_channel()
        await alive.group_add(group, here)
        await alive.group_add(group, there)
        await alive.group_send(group, {"type": "chat", "text": "hi"})
        message = await asyncio.wait_for(alive.receive(here), 5)
        for layer in layers:
            await layer.close_pools()
        return message

    assert run(scenario())["text"] == "hi"


def test_group_sends_with_the_groups_own_shard_down_do_not_raise(live):
    layer = layer_on(live, DOWN)

    async def scenario():
        group = next(g for g in (f"g{n}" for n in range(100)) if layer.consistent_hash(g) == 1)
        started = time.monotonic()
        await layer.group_send(group, {"type": "chat"})
        await layer.close_pools()
        return time.monotonic() - started

    assert run(scenario()) < 10


def test_a_shard_back_empty_gets_this_processs_memberships_written_back(live):
    layer = layer_on(live)
    admin = redis.asyncio.Redis.from_url(live)

    async def scenario():
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        assert await layer.memberships.check(0) == 0  # marks the shard
        # The shard restarts empty: its keys are gone, the group's and the marker with them.
        await admin.delete(layer._group_key("room"), layer.memberships.marker)
        await layer.group_send("room", {"type": "chat", "text": "lost"})
        assert await layer.memberships.check(0) == 1  # written back
        await layer.group_send("room", {"type": "chat", "text": "after"})
        message = await asyncio.wait_for(layer.receive(channel), 5)
        await layer.group_discard("room", channel)
        await layer.close_pools()
        await admin.aclose()
        return message

    assert run(scenario())["text"] == "after"


def test_shard_names_in_logs_carry_no_password():
    assert redacted("redis://:s3cret@redis-1:6379/0") == "redis://***@redis-1:6379/0"
    assert redacted("redis://redis-1:6379/0") == "redis://redis-1:6379/0"


def test_a_send_to_a_channel_on_a_shard_down_waits_for_it_then_raises(live, monkeypatch):
    monkeypatch.setattr("channels_kit.layers.redis.layer.SPECIFIC_SEND_WAIT_SECONDS", 1.5)
    layer = layer_on(DOWN, live)

    async def scenario():
        for _ in range(50):  # a process whose '!' channels live on the dead shard
            other = layer_on(DOWN, live)
            channel = await other.new_channel()
            if layer.consistent_hash(channel) == 0:
                break
        started = time.monotonic()
        with pytest.raises(OUTAGE_ERRORS):
            await layer.send(channel, {"type": "reply"})
        await layer.close_pools()
        return time.monotonic() - started

    assert 1.0 < run(scenario()) < 15
