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


def layer_on(*urls: str, prefix: str = "") -> RedisChannelLayer:
    """A layer (a process) on these shards; processes of one stack share ``prefix``."""
    hosts = [{"address": url, "socket_timeout": 5, "socket_connect_timeout": 1} for url in urls]
    prefix = prefix or f"outage-{uuid.uuid4().hex[:8]}"
    return RedisChannelLayer(hosts=hosts, prefix=prefix, group_expiry=300)


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


def test_a_group_send_reaches_the_members_of_a_shard_down_through_its_spare(live):
    """Two processes in a room: the one whose '!' channels hash to the dead shard gets the
    message through its spare (the live shard), as does the other; the sender does not fail."""

    async def scenario():
        prefix = f"outage-{uuid.uuid4().hex[:8]}"
        layers = [layer_on(live, DOWN, prefix=prefix) for _ in range(16)]
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
        messages = [
            await asyncio.wait_for(alive.receive(here), 5),
            await asyncio.wait_for(dead.receive(there), 5),
        ]
        for layer in layers:
            await layer.close_pools()
        return messages

    assert [message["text"] for message in run(scenario())] == ["hi", "hi"]


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


def test_a_send_to_a_channel_on_a_shard_down_goes_to_its_spare(live):
    """A process whose '!' channels live on the dead shard still gets its replies, at once."""

    async def scenario():
        prefix = f"outage-{uuid.uuid4().hex[:8]}"
        for _ in range(50):
            owner = layer_on(DOWN, live, prefix=prefix)
            channel = await owner.new_channel()
            if owner.consistent_hash(channel) == 0:
                break
        sender = layer_on(DOWN, live, prefix=prefix)
        started = time.monotonic()
        await sender.send(channel, {"type": "reply"})
        message = await asyncio.wait_for(owner.receive(channel), 5)
        for layer in (owner, sender):
            await layer.close_pools()
        return message, time.monotonic() - started

    message, took = run(scenario())
    assert message["type"] == "reply"
    assert took < 5, f"the reply took {took:.1f} s"


def test_a_send_to_a_channel_whose_shard_and_spare_are_down_waits_then_raises(monkeypatch):
    monkeypatch.setattr("channels_kit.layers.redis.layer.SPECIFIC_SEND_WAIT_SECONDS", 1.5)
    layer = layer_on(DOWN, "redis://127.0.0.1:2/0")

    async def scenario():
        channel = await layer_on(DOWN, "redis://127.0.0.1:2/0").new_channel()
        started = time.monotonic()
        with pytest.raises(OUTAGE_ERRORS) as raised:
            await layer.send(channel, {"type": "reply"})
        await layer.close_pools()
        return time.monotonic() - started, str(raised.value)

    took, error = run(scenario())
    assert 1.0 < took < 15
    assert "127.0.0.1:1/0 and " in error or "127.0.0.1:2/0 and " in error, error
