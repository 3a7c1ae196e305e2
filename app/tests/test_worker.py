"""The kit's worker, in process: bounded prefetch, busy tracking, failures, drain, heartbeat,
and a layer that does not answer (at start: stop; later: no heartbeat, keep trying)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest
from channels.consumer import AsyncConsumer, SyncConsumer
from channels.layers import InMemoryChannelLayer
from channels.worker import Worker

from channels_kit.layers.redis import RedisChannelLayer
from channels_kit.worker import KitWorker
from channels_kit.worker import server as server_module
from channels_kit.worker.server import LayerUnreachable
from tests.helpers import blocker_app, drain_layer, jobs_worker, send_jobs, wait_until


def redis_layer(redis_url: str, prefix: str) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[{"address": redis_url}], prefix=prefix)


def test_worker_serves_and_beats(tmp_path):
    seen: list[dict] = []

    class Recorder(AsyncConsumer):
        async def job_run(self, message):
            seen.append(message)

    layer = InMemoryChannelLayer()
    beat = tmp_path / "beat"
    worker = jobs_worker(Recorder.as_asgi(), layer, heartbeat_path=beat, heartbeat_interval=0.05)

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
        worker = jobs_worker(blocker_app(started, release), layer, concurrency=concurrency)
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


# --- a layer that does not answer: fail fast at start, heartbeat stopped later ----------


class CuttableProxy:
    """A TCP proxy to a real server that can be cut (its connections dropped, new ones
    refused, as for a server that went away) and restored on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    target.write(data)
                    await target.drain()
            finally:
                target.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)


@pytest.fixture
def quick_probes(monkeypatch):
    """Probes of the layer that give up after 1 s instead of 5."""
    monkeypatch.setattr(server_module, "LAYER_PROBE_TIMEOUT_SECONDS", 1.0)


def test_a_worker_whose_layer_never_answers_stops_at_start_naming_it(tmp_path, quick_probes):
    """Nothing listens at the layer's address: the worker gives up after ``layer_wait``,
    naming the server (password masked) and the error, and never touches its heartbeat."""
    beat = tmp_path / "beat"
    beat.touch()  # left by an earlier run: must not look like this one's
    layer = RedisChannelLayer(
        hosts=[{"address": "redis://:s3cret@127.0.0.1:1/0", "socket_connect_timeout": 1}]
    )
    worker = jobs_worker(
        blocker_app([], asyncio.Event()), layer, heartbeat_path=beat, heartbeat_interval=0.05, layer_wait=0.5
    )
    with pytest.raises(LayerUnreachable) as raised:
        asyncio.run(asyncio.wait_for(worker.arun(), 60))
    message = str(raised.value)
    assert message.startswith("the channel layer (redis://:***@127.0.0.1:1/0) did not answer within 0.5 s")
    said = message.split("the layer said:")[1]
    assert "ConnectionError: Error 111 connecting to 127.0.0.1:1" in said, message
    assert "s3cret" not in message
    assert not beat.exists()
    assert worker.messages_received == 0


def test_a_stop_while_waiting_for_the_layer_ends_the_worker_cleanly(quick_probes):
    layer = RedisChannelLayer(hosts=[{"address": "redis://127.0.0.1:1/0", "socket_connect_timeout": 1}])
    worker = KitWorker(application=blocker_app([], asyncio.Event()), channels=["jobs"], channel_layer=layer)

    async def scenario():
        server = asyncio.ensure_future(worker.arun())
        await asyncio.sleep(0.2)
        worker.request_stop("test")
        await asyncio.wait_for(server, 10)

    asyncio.run(scenario())
    assert worker.messages_received == 0


def test_an_outage_after_start_stops_the_heartbeat_not_the_worker(redis_url, tmp_path, quick_probes):
    """The layer's server goes away under a running worker and comes back: meanwhile the
    heartbeat file is left alone (the healthcheck sees it) and the worker keeps running;
    afterwards it beats and serves again."""
    url = urlsplit(redis_url)
    seen: list[int] = []

    class Recorder(AsyncConsumer):
        async def job_run(self, message):
            seen.append(message["n"])

    async def scenario():
        proxy = CuttableProxy(url.hostname, url.port or 6379)
        await proxy.start()
        proxied = url._replace(netloc=f":{url.password or ''}@127.0.0.1:{proxy.port}").geturl()
        hosts = [{"address": proxied, "socket_timeout": 2, "socket_connect_timeout": 1}]
        prefix = f"test-outage-{uuid.uuid4().hex[:8]}:"
        layer = RedisChannelLayer(hosts=hosts, prefix=prefix)
        sender = redis_layer(redis_url, prefix)
        beat = tmp_path / "beat"
        worker = jobs_worker(Recorder.as_asgi(), layer, heartbeat_path=beat, heartbeat_interval=0.1)
        server = asyncio.ensure_future(worker.arun())
        await send_jobs(sender, 1)
        await wait_until(lambda: seen == [0] and beat.exists())

        await proxy.cut()
        await wait_until(lambda: not worker.layer_answers, timeout=30)
        stale = beat.stat().st_mtime
        await asyncio.sleep(1.0)  # several heartbeats, none of which may touch the file
        assert beat.stat().st_mtime == stale
        assert not server.done()

        await proxy.start()
        await wait_until(lambda: worker.layer_answers and beat.stat().st_mtime > stale, timeout=30)
        await sender.send("jobs", {"type": "job.run", "n": 1})
        await wait_until(lambda: seen == [0, 1], timeout=30)
        worker.request_stop("test")
        await asyncio.wait_for(server, 30)
        await sender.flush()
        await proxy.cut()

    asyncio.run(scenario())
