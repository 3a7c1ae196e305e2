"""Nothing dropped in silence (issue #27, point 11), on a real Redis.

A group member whose channel is full misses the message: a WARNING names the channel and
``channels_messages_dropped_total`` counts it; a relayed event no worker finished closes its
socket with a code the client can act on; a worker in direct mode refuses to run beside
relay interfaces, naming both modes.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

from channels_kit.drops import DROPS, DropLog
from channels_kit.layers.redis import RedisChannelLayer
from channels_kit.layers.redis.inspector import RedisInspector
from channels_kit.observe.metrics import drop_metrics
from channels_kit.observe.status import gather_status
from channels_kit.observe.worker_state import interface_presence
from channels_kit.relay.outbox import ReplyOutbox
from channels_kit.relay.websocket import CLOSE_EVENT_TIMEOUT
from channels_kit.worker import KitWorker
from channels_kit.worker.mode_guard import ModeGuard, ModeMismatch
from tests.test_relay import Cluster, run


def dropped_total(operation: str, reason: str) -> float:
    (family,) = drop_metrics()
    samples = {tuple(sample.labels.values()): sample.value for sample in family.samples}
    return samples.get((operation, reason), 0.0)


def test_a_drop_is_a_warning_naming_the_channel_and_a_counter(caplog):
    log = DropLog()
    heard = []
    log.add_listener(lambda *drop: heard.append(drop))
    with caplog.at_level(logging.WARNING, "channels_kit.drops"):
        log.dropped("group_send", "full", "specific.a!b", detail="group chat.x")
        log.dropped("group_send", "full", "specific.a!b")  # within the window: counted, not logged
        log.dropped("group_send", "full", "specific.a!c")
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "dropped 1 message(s) of group_send to specific.a!b (group chat.x): full",
        "dropped 1 message(s) of group_send to specific.a!c: full",
    ]
    assert log.snapshot() == {("group_send", "full"): 3}
    assert heard[-1] == ("group_send", "full", "specific.a!c") and len(heard) == 3


def test_group_send_to_a_full_channel_warns_with_its_name_and_counts(redis_url, prefix, caplog):
    async def scenario():
        layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix, capacity=1)
        # General channels: every '!' channel of a process shares its inbox, and its capacity.
        full, roomy = "members.full", "members.roomy"
        await layer.group_add("room", full)
        await layer.group_add("room", roomy)
        await layer.send(full, {"type": "first"})  # full now (capacity 1)
        before = dropped_total("group_send", "full")
        with caplog.at_level(logging.WARNING, "channels_kit.drops"):
            await layer.group_send("room", {"type": "chat.message"})
        assert dropped_total("group_send", "full") == before + 1
        assert (await layer.receive(roomy))["type"] == "chat.message"
        assert (await layer.receive(full))["type"] == "first"
        await layer.flush()
        await layer.close_pools()
        return full

    full = asyncio.run(asyncio.wait_for(scenario(), 30))
    (line,) = [r.getMessage() for r in caplog.records if r.name == "channels_kit.drops"]
    assert line == f"dropped 1 message(s) of group_send to {full} (group room): full"
    assert DROPS.snapshot()[("group_send", "full")] >= 1


def test_replies_the_layer_does_not_take_are_counted_drops(caplog):
    """A worker's replies to an interface whose channel is full: the batch the hold timer
    sends and the one with the event's relay.done are dropped out loud (before, the timer's
    failure was an unretrieved task exception)."""

    async def scenario():
        layer = InMemoryChannelLayer(capacity=1)
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "filler"})  # full now
        outbox = ReplyOutbox(layer, channel)
        before = dropped_total("relay reply", "full")
        with caplog.at_level(logging.WARNING, "channels_kit.drops"):
            await outbox.send({"type": "websocket.send", "text": "a"})
            await outbox.send({"type": "websocket.send", "text": "b"})
            await asyncio.sleep(0.1)  # the hold timer's flush
            with pytest.raises(ChannelFull):
                await outbox.flush({"type": "relay.done"})
        return channel, dropped_total("relay reply", "full") - before

    channel, drops = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert drops == 3
    (line,) = [r.getMessage() for r in caplog.records if r.name == "channels_kit.drops"]
    expected = f"dropped 2 message(s) of relay reply to {channel} (websocket.send: ChannelFull"
    assert line.startswith(expected), line


def test_an_event_no_worker_finishes_closes_its_socket_with_4504(redis_url, caplog):
    async def scenario(cluster: Cluster):
        _, socket = await cluster.open_socket("slowroom", timeout=1.5, resend_after=None)
        before = dropped_total("relay event", "timeout")
        socket.send({"sleep": 5})
        assert await socket.next(timeout=5) == {"type": "websocket.close", "code": CLOSE_EVENT_TIMEOUT}
        assert dropped_total("relay event", "timeout") == before + 1
        await socket.leave()

    with caplog.at_level(logging.WARNING, "channels_kit.drops"):
        run(redis_url, scenario)
    lines = [record.getMessage() for record in caplog.records]
    assert any("of relay event to relay." in line and line.endswith(": timeout") for line in lines), lines


def test_a_direct_worker_refuses_to_run_beside_relay_interfaces(redis_url, prefix):
    async def scenario():
        layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
        inspector = RedisInspector(layer)
        guard = ModeGuard(inspector, "direct")
        assert await guard.problem() is None  # no interface: runs
        await inspector.save_worker_state(interface_presence("relayhost:7", time.time()), 5)
        problem = await guard.problem()
        assert "direct mode (ASGI_MODE=direct)" in problem and "ASGI_MODE=relay" in problem
        assert "relayhost:7" in problem
        assert (await gather_status(layer)).workers == []  # an interface is no worker
        worker = KitWorker(
            application=None, channels=["jobs"], channel_layer=layer, layer_wait=None, mode_guard=guard
        )
        with pytest.raises(ModeMismatch, match="relay interfaces"):
            await asyncio.wait_for(worker.arun(), 10)
        await layer.flush()
        await layer.close_pools()

    asyncio.run(asyncio.wait_for(scenario(), 30))
