"""The redis-py 8 idle trap, against a real Redis: stock channels_redis dies, the kit's layer lives."""

import asyncio
import time
import uuid

import channels_redis.core
import pytest
import redis.asyncio
import redis.exceptions

from channels_kit.layers.redis import RedisChannelLayer
from channels_kit.layers.redis.timeouts import (
    REDIS_DEFAULT_SOCKET_TIMEOUT,
    blocking_timeout_for,
    host_socket_timeout,
)
from tests.conftest import required_env
from tests.helpers import run


def test_socket_timeout_is_read_from_dict_url_or_default():
    assert host_socket_timeout({"address": "redis://r", "socket_timeout": 3}) == 3.0
    assert host_socket_timeout({"address": "redis://r/0?socket_timeout=4.5"}) == 4.5
    assert host_socket_timeout({"address": "redis://r", "socket_timeout": None}) is None
    assert host_socket_timeout({"address": "redis://r"}) == REDIS_DEFAULT_SOCKET_TIMEOUT


def test_blocking_timeout_stays_under_the_smallest_socket_timeout():
    hosts = [{"address": "redis://a", "socket_timeout": 30}, {"address": "redis://b", "socket_timeout": 2}]
    assert blocking_timeout_for(hosts, preferred=5) == 1.0
    assert blocking_timeout_for([{"address": "redis://a", "socket_timeout": 30}], preferred=5) == 5
    assert blocking_timeout_for([{"address": "redis://a", "socket_timeout": None}], preferred=5) == 5
    assert blocking_timeout_for([{"address": "redis://a", "socket_timeout": 0.01}], preferred=5) == 0.1


async def _idle_then_receive(layer, idle: float) -> dict:
    """Receive on a channel that stays empty for ``idle`` seconds, then gets one message."""
    channel = await layer.new_channel()

    async def send_later():
        await asyncio.sleep(idle)
        await layer.send(channel, {"type": "late.message"})

    sender = asyncio.ensure_future(send_later())
    try:
        return await asyncio.wait_for(layer.receive(channel), idle + 10)
    finally:
        sender.cancel()
        await layer.flush()


def test_kit_layer_survives_idle_longer_than_socket_timeout(redis_url):
    layer = RedisChannelLayer(hosts=[{"address": redis_url, "socket_timeout": 1}])
    assert layer.brpop_timeout == 0.5
    message = asyncio.run(_idle_then_receive(layer, idle=3.5))
    assert message == {"type": "late.message"}


def test_stock_layer_dies_when_idle_longer_than_socket_timeout(redis_url):
    """The control: the same idle wait kills channels_redis's own layer (redis-py #4091)."""
    layer = channels_redis.core.RedisChannelLayer(hosts=[{"address": redis_url, "socket_timeout": 1}])
    assert layer.brpop_timeout > 1
    with pytest.raises(redis.exceptions.TimeoutError):
        asyncio.run(_idle_then_receive(layer, idle=3.5))


def test_kit_layer_groups_work(redis_url):
    layer = RedisChannelLayer(hosts=[{"address": redis_url, "socket_timeout": 2}], prefix="unit-groups")
    asyncio.run(_group_round_trip(layer))


async def _group_round_trip(layer) -> None:
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", first)
    await layer.group_add("room", second)
    await layer.group_send("room", {"type": "chat.message", "text": "hi"})
    assert (await asyncio.wait_for(layer.receive(first), 5))["text"] == "hi"
    assert (await asyncio.wait_for(layer.receive(second), 5))["text"] == "hi"
    await layer.flush()


def test_readers_of_closed_event_loops_are_forgotten(redis_url):
    """async_to_sync under WSGI runs each call in a new loop: readers must not pile up."""
    layer = RedisChannelLayer(hosts=[{"address": redis_url, "socket_timeout": 2}], prefix="unit-loops")

    async def round_trip():
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "ping"})
        await asyncio.wait_for(layer.receive(channel), 5)
        await layer.send("unit-loops.general", {"type": "ping"})
        await asyncio.wait_for(layer.receive("unit-loops.general"), 5)
        return len(layer._readers)

    for _ in range(5):
        assert asyncio.run(round_trip()) == 2  # this loop's two readers, none of earlier loops
    asyncio.run(layer.flush())


def test_layer_recovers_when_redis_closes_its_connections(redis_url):
    """A Redis restart closes every pooled connection: the next send and receive still work."""
    name = f"unit-restart-{uuid.uuid4().hex[:8]}"
    host = {"address": redis_url, "socket_timeout": 2, "client_name": name}
    layer = RedisChannelLayer(hosts=[host], prefix=name)

    async def scenario():
        await layer.send(f"{name}.jobs", {"type": "before"})
        assert (await asyncio.wait_for(layer.receive(f"{name}.jobs"), 5))["type"] == "before"
        # Close only this layer's connections: other tests share the server.
        admin = redis.asyncio.Redis.from_url(redis_url)
        ours = [c["id"] for c in await admin.client_list() if c.get("name") == name]
        assert ours
        for client_id in ours:
            await admin.client_kill_filter(_id=client_id)
        await admin.aclose()
        await layer.send(f"{name}.jobs", {"type": "after"})
        assert (await asyncio.wait_for(layer.receive(f"{name}.jobs"), 5))["type"] == "after"
        await layer.flush()

    asyncio.run(scenario())


def test_a_backlog_is_read_in_batches_and_redis_before_7_still_works(redis_url, monkeypatch):
    """BZMPOP takes a '!' channel's backlog in one read; without it (Redis < 7) the layer
    falls back to BZPOPMIN, one message a read, and loses nothing."""

    async def scenario(layer: RedisChannelLayer) -> list[int]:
        channel = await layer.new_channel()
        for n in range(10):
            await layer.send(channel, {"type": "n", "n": n})
        got = [(await layer.receive(channel))["n"] for _ in range(10)]
        await layer.flush()
        return got

    layer = RedisChannelLayer(hosts=[{"address": redis_url}], prefix=f"test-batch-{uuid.uuid4().hex[:6]}")
    calls = []
    real = redis.asyncio.Redis.bzmpop

    async def counting_bzmpop(self, *args, **kwargs):
        calls.append(kwargs.get("count"))
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(redis.asyncio.Redis, "bzmpop", counting_bzmpop)
    assert asyncio.run(scenario(layer)) == list(range(10))
    assert layer._bzmpop is True and len(calls) < 10  # the backlog came in fewer reads

    async def unknown_command(self, *args, **kwargs):
        raise redis.exceptions.ResponseError("unknown command 'BZMPOP', with args beginning with: ")

    monkeypatch.setattr(redis.asyncio.Redis, "bzmpop", unknown_command)
    old = RedisChannelLayer(hosts=[{"address": redis_url}], prefix=f"test-batch-{uuid.uuid4().hex[:6]}")
    assert asyncio.run(scenario(old)) == list(range(10))
    assert old._bzmpop is False


def test_a_burst_beyond_the_pool_waits_for_connections_instead_of_failing(redis_url):
    """redis-py's pool refuses a command when all its connections are in use
    (MaxConnectionsError at 100): 300 sends at once through a relay did that. The kit's
    pool makes them wait for a free connection (mutation-checked: with redis-py's pool
    most of the 300 fail)."""

    async def burst():
        hosts = [{"address": redis_url, "max_connections": 10}]
        layer = RedisChannelLayer(hosts=hosts, prefix=f"unit-burst-{uuid.uuid4().hex[:6]}", capacity=1000)
        try:
            results = await asyncio.gather(
                *(layer.send(f"burst{n % 7}", {"type": "x", "n": n}) for n in range(300)),
                return_exceptions=True,
            )
            assert [r for r in results if r is not None] == []
            received = [
                await asyncio.wait_for(layer.receive(f"burst{c}"), 5)
                for c in range(7)
                for _ in range(43 if c < 6 else 42)
            ]
            assert sorted(m["n"] for m in received) == list(range(300))
        finally:
            await layer.flush()
            await layer.close_pools()

    asyncio.run(burst())


def test_a_draining_process_hands_back_at_once_what_its_last_read_fetches():
    """A worker draining (``requeue_pending``) still has blocking reads under way on every
    shard. A message one of them fetches goes straight back for the other workers: it used
    to wait until the other shard's read ended (its blocking timeout, 5 s here): in a
    rolling deploy, the post a retiring worker took arrived ~1 s late in the tests' settings."""
    urls = required_env("TEST_REDIS_SHARD_URLS").split(",")[:2]
    hosts = [{"address": url, "socket_timeout": 30} for url in urls]  # blocking reads of 5 s
    prefix = f"drain-{uuid.uuid4().hex[:8]}"
    retiring, staying = (RedisChannelLayer(hosts=hosts, prefix=prefix) for _ in range(2))
    assert retiring.brpop_timeout == 5

    async def scenario():
        waiter = asyncio.ensure_future(retiring.receive("jobs"))
        await asyncio.sleep(0.3)  # its reads block on both shards, first in line
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        requeue = asyncio.ensure_future(retiring.requeue_pending())
        receiver = asyncio.ensure_future(staying.receive("jobs"))
        await asyncio.sleep(0.3)
        sent = time.monotonic()
        await staying.send("jobs", {"type": "job", "n": 1})
        message = await asyncio.wait_for(receiver, 10)
        took = time.monotonic() - sent
        requeued = await asyncio.wait_for(requeue, 10)
        await retiring.close_pools()
        await staying.close_pools()
        return message, took, requeued

    message, took, requeued = run(scenario())
    assert message["n"] == 1
    assert requeued == 1, "the retiring process's read did not take the message: the test proves nothing"
    assert took < 2.5, f"the message waited {took:.1f} s for the retiring process's other read"
