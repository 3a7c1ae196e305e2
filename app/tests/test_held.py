"""Relay messages that outlive their release time free their slots (issue #27, point 6).

On a real Redis, through the relay's interface application and a ``KitWorker`` with one HTTP
slot: slow requests (a long-poll's wait) are released from it after ``release_after``
seconds, so a quick page behind them is answered at once; beyond the held limit they keep
their slot, as before; a stopping worker finishes its held requests before it returns.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from channels_kit.worker.slots import HeldMessages
from tests.relay_client import http_request
from tests.test_relay import Cluster, eventually, run


async def quick_page_seconds(cluster: Cluster, slow: int, held: HeldMessages | None) -> float:
    """Seconds a quick page takes behind ``slow`` requests of 3 s on a worker of one HTTP slot."""
    relay = cluster.interface(timeout=20)
    cluster.start_worker("w1", concurrency=1, held=held)
    waits = [asyncio.ensure_future(http_request(relay, "/slow?3")) for _ in range(slow)]
    await asyncio.sleep(1.0)  # every slow one taken and, with room, released
    started = time.monotonic()
    status, _, _ = await http_request(relay, "/page")
    seconds = time.monotonic() - started
    assert status == 201
    assert [status for status, _, _ in await asyncio.gather(*waits)] == [201] * slow
    return seconds


def test_slow_requests_free_their_slot_for_a_quick_page(redis_url):
    async def scenario(cluster: Cluster):
        held = HeldMessages(limit=10, release_after=0.2)
        assert await quick_page_seconds(cluster, 4, held) < 1.0
        assert held.released == 4
        await eventually(lambda: held.count == 0)  # each gave its place back as it ended

    run(redis_url, scenario)


def test_beyond_the_held_limit_a_slow_request_keeps_its_slot(redis_url):
    async def scenario(cluster: Cluster):
        held = HeldMessages(limit=1, release_after=0.2)
        # One is held, the second keeps the only slot: the page waits for it (~2 s more).
        assert await quick_page_seconds(cluster, 2, held) > 1.5
        assert held.released == 1

    run(redis_url, scenario)


def test_without_release_a_slow_request_holds_the_slot(redis_url):
    async def scenario(cluster: Cluster):
        assert await quick_page_seconds(cluster, 1, None) > 1.5

    run(redis_url, scenario)


def test_a_stopping_worker_finishes_its_held_requests(redis_url):
    async def scenario(cluster: Cluster):
        relay = cluster.interface(timeout=20)
        worker = cluster.start_worker("w1", concurrency=1, held=HeldMessages(5, 0.2))
        slow = asyncio.ensure_future(http_request(relay, "/slow?2"))
        await asyncio.sleep(0.8)
        assert worker.busy_count("http.request") == 1 and worker.slots[0].holding
        await cluster.stop_worker("w1")
        assert slow.done() and slow.result()[0] == 201

    run(redis_url, scenario)


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match="not -1"):
        HeldMessages(-1, 1.0)
    with pytest.raises(ValueError, match="release_after"):
        HeldMessages(1, 0)
