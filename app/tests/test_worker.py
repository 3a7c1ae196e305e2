"""The kit's worker, in process: bounded prefetch, busy tracking, failures, drain, heartbeat."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from channels.consumer import AsyncConsumer, SyncConsumer
from channels.layers import InMemoryChannelLayer
from channels.worker import Worker

from channels_kit.layers.redis import RedisChannelLayer
from channels_kit.worker import KitWorker


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def send_jobs(layer, count: int, channel: str = "jobs", **extra) -> None:
    for n in range(count):
        await layer.send(channel, {"type": "job.run", "n": n, **extra})


def redis_layer(redis_url: str, prefix: str) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[{"address": redis_url}], prefix=prefix)


async def drain_layer(layer, channel: str, timeout: float = 1.0) -> list[int]:
    """The ``n`` of every message still queued on ``channel``, in order."""
    found = []
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), timeout)
        except TimeoutError:
            return found
        found.append(message["n"])


class Blocker(AsyncConsumer):
    """Holds each job until the test sets ``release``."""

    started: list[int]
    release: asyncio.Event

    async def job_run(self, message):
        self.started.append(message["n"])
        await self.release.wait()


def blocker_app(started: list[int], release: asyncio.Event):
    return type("TestBlocker", (Blocker,), {"started": started, "release": release}).as_asgi()


def test_worker_serves_and_beats(tmp_path):
    seen: list[dict] = []

    class Recorder(AsyncConsumer):
        async def job_run(self, message):
            seen.append(message)

    layer = InMemoryChannelLayer()
    beat = tmp_path / "beat"
    worker = KitWorker(
        application=Recorder.as_asgi(),
        channels=["jobs"],
        channel_layer=layer,
        heartbeat_path=beat,
        heartbeat_interval=0.05,
    )

    async def scenario():
        server = asyncio.ensure_future(worker.arun())
        await send_jobs(layer, 2)
        await wait_until(lambda: worker.messages_handled == 2 and beat.exists())
        worker.request_stop("test")
        await asyncio.wait_for(server, 5)

    asyncio.run(scenario())
    assert [m["n"] for m in seen] == [0, 1]
    assert worker.messages_received == 2 and worker.messages_failed == 0
    assert worker.busy_count() == 0


@pytest.mark.parametrize("concurrency", [1, 2])
def test_busy_consumers_leave_queued_messages_in_redis(redis_url, concurrency):
    """With busy consumers and 5 queued messages, the worker holds only ``concurrency``
    of them; the rest stay in Redis for other workers."""
    prefix = f"test-prefetch-{uuid.uuid4().hex[:8]}:"
    started: list[int] = []
    release = asyncio.Event()

    async def scenario():
        layer = redis_layer(redis_url, prefix)
        worker = KitWorker(
            application=blocker_app(started, release),
            channels=["jobs"],
            channel_layer=layer,
            concurrency=concurrency,
        )
        server = asyncio.ensure_future(worker.arun())
        await send_jobs(layer, 5)
        await wait_until(lambda: len(started) == concurrency)
        await asyncio.sleep(0.5)  # time enough to over-fetch, if it would
        assert worker.busy_count() == worker.busy_count("jobs") == concurrency
        assert worker.messages_received == concurrency
        assert len(started) == concurrency
        assert [slot.instances_started for slot in worker.slots] == [1] * concurrency
        assert len({slot.scope_id for slot in worker.slots}) == concurrency

        worker.request_stop("test")
        release.set()
        await asyncio.wait_for(server, 10)
        assert worker.messages_handled == concurrency and not worker.abandoned
        reader = redis_layer(redis_url, prefix)
        try:
            assert await drain_layer(reader, "jobs") == list(range(concurrency, 5))
        finally:
            await reader.flush()

    asyncio.run(scenario())


def test_control_upstream_worker_drains_the_whole_channel(redis_url):
    """The problem the kit fixes: channels' own Worker takes every queued message at once."""
    prefix = f"test-upstream-{uuid.uuid4().hex[:8]}:"
    started: list[int] = []
    release = asyncio.Event()

    async def scenario():
        layer = redis_layer(redis_url, prefix)
        worker = Worker(application=blocker_app(started, release), channels=["jobs"], channel_layer=layer)
        server = asyncio.ensure_future(worker.arun())
        await send_jobs(layer, 5)
        await wait_until(lambda: len(started) == 1)
        await asyncio.sleep(0.5)
        reader = redis_layer(redis_url, prefix)
        try:
            assert await drain_layer(reader, "jobs", timeout=0.5) == []
        finally:
            server.cancel()
            await reader.flush()

    asyncio.run(scenario())


def test_a_consumer_that_raises_is_logged_and_replaced(caplog):
    seen: list[int] = []

    class Flaky(AsyncConsumer):
        async def job_run(self, message):
            seen.append(message["n"])
            if message["n"] == 0:
                raise RuntimeError("job 0 failed on purpose")

    layer = InMemoryChannelLayer()
    worker = KitWorker(application=Flaky.as_asgi(), channels=["jobs"], channel_layer=layer)

    async def scenario():
        server = asyncio.ensure_future(worker.arun())
        await send_jobs(layer, 3)
        await wait_until(lambda: worker.messages_handled == 2)
        worker.request_stop("test")
        await asyncio.wait_for(server, 5)

    with caplog.at_level(logging.ERROR, logger="channels_kit.worker.errors"):
        asyncio.run(scenario())
    assert seen == [0, 1, 2]
    assert (worker.messages_received, worker.messages_handled, worker.messages_failed) == (3, 2, 1)
    assert worker.slots[0].instances_started == 2  # a new instance after the failure
    [record] = [r for r in caplog.records if r.name == "channels_kit.worker.errors"]
    assert record.exc_info[0] is RuntimeError
    assert "a job.run message" in record.getMessage()


class SlowJob(AsyncConsumer):
    """Sleeps ``seconds`` per job, recording start and end."""

    seconds = 0.5
    events: list[str]

    async def job_run(self, message):
        self.events.append(f"start {message['n']}")
        await asyncio.sleep(self.seconds)
        self.events.append(f"done {message['n']}")


def slow_app(events: list[str], seconds: float):
    return type("TestSlowJob", (SlowJob,), {"events": events, "seconds": seconds}).as_asgi()


class RequeueRecordingLayer(InMemoryChannelLayer):
    """The in-memory layer, noting cancelled receives and ``requeue_pending()`` calls."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.events: list[str] = []

    async def receive(self, channel):
        try:
            return await super().receive(channel)
        except asyncio.CancelledError:
            self.events.append("receive cancelled")
            raise

    async def requeue_pending(self):
        self.events.append("requeue_pending")


def test_stop_finishes_in_flight_work_takes_nothing_new_and_requeues():
    events: list[str] = []
    layer = RequeueRecordingLayer()
    # Two channels: "jobs" is busy at the stop, "other" is idle in receive().
    worker = KitWorker(application=slow_app(events, 0.5), channels=["jobs", "other"], channel_layer=layer)

    async def scenario():
        server = asyncio.ensure_future(worker.arun())
        await send_jobs(layer, 2)
        await wait_until(lambda: events == ["start 0"])
        worker.request_stop("test")
        await asyncio.wait_for(server, 5)
        # Only the idle listener was receiving; the layer was asked to requeue after that.
        assert layer.events == ["receive cancelled", "requeue_pending"]
        assert await drain_layer(layer, "jobs", timeout=0.2) == [1]

    asyncio.run(scenario())
    assert events == ["start 0", "done 0"]
    assert worker.abandoned == []
    assert (worker.messages_received, worker.messages_handled) == (1, 1)


@pytest.mark.parametrize("second_signal", [False, True])
def test_deadline_or_second_stop_abandons_in_flight_work(caplog, second_signal):
    events: list[str] = []
    layer = InMemoryChannelLayer()
    grace = 30.0 if second_signal else 0.3
    app = slow_app(events, 30)
    worker = KitWorker(application=app, channels=["jobs"], channel_layer=layer, grace_period=grace)

    async def scenario():
        server = asyncio.ensure_future(worker.arun())
        await send_jobs(layer, 1)
        await wait_until(lambda: events == ["start 0"])
        worker.request_stop("SIGTERM")
        if second_signal:
            await asyncio.sleep(0.1)
            worker.request_stop("SIGTERM")
        await asyncio.wait_for(server, 5)

    with caplog.at_level(logging.INFO, logger="channels_kit.worker"):
        asyncio.run(scenario())
    assert events == ["start 0"]
    assert len(worker.abandoned) == 1 and worker.abandoned[0].startswith("jobs#0: job.run for ")
    why = "second signal" if second_signal else "grace period (0.3s) over"
    assert f"{why}: abandoning 1 in-flight message(s): jobs#0: job.run" in caplog.text


def test_a_slow_sync_job_does_not_block_other_channels():
    """Each instance has its own thread for sync code; asgiref's default would share one
    per process, and a slow job on ``slow`` would hold up ``fast``."""
    finished: list[str] = []
    slow_running = threading.Event()

    class Sync(SyncConsumer):
        def job_run(self, message):
            if self.scope["channel"] == "slow":
                slow_running.set()
                time.sleep(1.0)
            finished.append(self.scope["channel"])

    layer = InMemoryChannelLayer()
    worker = KitWorker(application=Sync.as_asgi(), channels=["slow", "fast"], channel_layer=layer)

    async def scenario():
        server = asyncio.ensure_future(worker.arun())
        await send_jobs(layer, 1, channel="slow")
        await wait_until(slow_running.is_set)
        await send_jobs(layer, 1, channel="fast")
        await wait_until(lambda: finished == ["fast"], timeout=0.8)
        assert worker.busy_count("slow") == 1 and worker.busy_count("fast") == 0
        worker.request_stop("test")
        await asyncio.wait_for(server, 5)

    asyncio.run(scenario())
    assert finished == ["fast", "slow"]
