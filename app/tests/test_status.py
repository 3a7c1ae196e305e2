"""Load visibility against real Redis shards: queue figures per channel and shard, published
worker states, the channels_status report and the worker's Prometheus metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from channels.layers import InMemoryChannelLayer
from prometheus_client.parser import text_string_to_metric_families

from channels_kit.layers.redis import RedisChannelLayer
from channels_kit.layers.redis.inspector import RedisInspector, channel_of_key
from channels_kit.management.commands.channels_status import format_age, render
from channels_kit.observe.metrics import MetricsServer, WorkerCollector
from channels_kit.observe.status import StatusUnavailable, gather_status
from channels_kit.observe.worker_state import WorkerStatePublisher
from tests.helpers import BlockedWorker, blocker_app, jobs_worker

APP_DIR = Path(__file__).resolve().parents[1]


def shard_urls(count: int) -> list[str]:
    urls = [url for url in os.environ.get("TEST_REDIS_SHARD_URLS", "").split(",") if url]
    if len(urls) < count:
        pytest.fail(f"TEST_REDIS_SHARD_URLS lists {len(urls)} servers, {count} needed: run `make test`")
    return urls[:count]


@pytest.fixture
def prefix() -> str:
    return f"test-status-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def two_shards(prefix):
    """A 2-shard kit layer factory with this test's own prefix; every shard is flushed after."""

    def make() -> RedisChannelLayer:
        return RedisChannelLayer(hosts=[{"address": url} for url in shard_urls(2)], prefix=prefix)

    yield make
    asyncio.run(make().flush())


# --- the figures -----------------------------------------------------------------


def test_channel_of_key_skips_groups_worker_states_and_inflight_backups():
    assert channel_of_key("asgi", "asgithumbnail") == "thumbnail"
    assert channel_of_key("asgi", "asgispecific.abc!") == "specific.abc!"
    assert channel_of_key("asgi", "asgi:group:chat.lobby") is None
    assert channel_of_key("asgi", "asgi:workers:host:1") is None
    assert channel_of_key("asgi", "asgithumbnail$inflight") is None
    assert channel_of_key("asgi", "other") is None


def test_depth_and_oldest_age_per_shard_for_general_and_specific_channels(two_shards):
    """N messages on a general channel spread over both shards; M on a '!' channel all sit on
    its ring shard; ages are the time they waited; group and backup keys are not channels."""
    n, m, wait = 6, 3, 1.0

    async def scenario():
        layer = two_shards()
        reply = await layer.new_channel("reply.")
        non_local = layer.non_local_name(reply)
        ring_shard = layer.consistent_hash(reply)
        for i in range(n):
            await layer.send("jobs", {"type": "job.run", "n": i})
        for i in range(m):
            await layer.send(reply, {"type": "reply", "n": i})
        await layer.group_add("room", reply)  # a zset under prefix:group:, not a channel
        await layer.connection(0).zadd(layer.prefix + "jobs$inflight", {b"x": time.time()})
        await asyncio.sleep(wait)
        status = await gather_status(layer)
        await layer.close_pools()
        return status, non_local, ring_shard

    status, non_local, ring_shard = asyncio.run(scenario())
    assert status.shards == 2
    assert status.channels == ["jobs", non_local]

    jobs = status.total("jobs")
    assert jobs.depth == n
    per_shard = [status.figures("jobs", shard).depth for shard in (0, 1)]
    assert sum(per_shard) == n and all(per_shard), per_shard  # spread, and both shards scanned
    assert wait <= jobs.oldest_age < wait + 2

    assert status.figures(non_local, ring_shard).depth == m
    assert status.figures(non_local, 1 - ring_shard).depth == 0
    assert wait <= status.total(non_local).oldest_age < wait + 2
    assert status.workers == []


def test_published_worker_state_appears_then_expires(two_shards):
    class Idle:
        channels = ["jobs", "thumbnail"]
        stats = {}

        def busy_count(self, channel=None):
            return 1

    async def scenario():
        layer = two_shards()
        inspector = RedisInspector(layer)
        publisher = WorkerStatePublisher(inspector, Idle(), heartbeat_interval=0.2, identity="box-1:42")
        assert publisher.ttl == 1.0  # 3 beats, but never under a second
        key = inspector.worker_key("box-1", 42)
        assert key == layer.prefix + ":workers:box-1:42"
        await publisher.publish()
        seen = await gather_status(layer)
        assert 0 < await layer.connection(layer.consistent_hash(key)).pttl(key) <= 1000
        await asyncio.sleep(1.5)  # no further heartbeat: the state expires
        gone = await gather_status(layer)
        await layer.close_pools()
        return seen, gone

    seen, gone = asyncio.run(scenario())
    [worker] = seen.workers
    assert (worker.host, worker.pid, worker.channels, worker.busy) == ("box-1", 42, ("jobs", "thumbnail"), 1)
    assert (seen.workers_live, seen.workers_busy) == (1, 1)
    assert seen.channels == ["jobs", "thumbnail"]  # served channels are listed, empty or not
    assert seen.total("thumbnail").depth == 0
    assert gone.workers == [] and gone.workers_live == 0


def test_a_running_worker_publishes_its_busy_state_and_withdraws_it_on_exit(two_shards):
    async def scenario():
        layer = two_shards()
        async with BlockedWorker(layer, jobs=3) as blocked:
            busy = await blocked.busy_status()
            await blocked.release()
            await asyncio.sleep(0.3)
            idle = await gather_status(layer)
        after = await gather_status(layer)
        await layer.close_pools()
        return busy, idle, after

    busy, idle, after = asyncio.run(scenario())
    [state] = busy.workers
    assert state.channels == ("jobs",) and state.busy == 1 and state.pid == os.getpid()
    [state] = idle.workers
    assert (state.busy, state.handled, state.failed) == (0, 3, 0)
    assert idle.total("jobs").depth == 0 and idle.workers_busy == 0
    assert after.workers == []  # withdrawn at once on a clean exit, not after the TTL


def test_in_memory_layer_reports_its_own_queues_and_says_so():
    async def scenario():
        layer = InMemoryChannelLayer()
        for i in range(4):
            await layer.send("jobs", {"type": "job.run", "n": i})
        await asyncio.sleep(0.2)
        return await gather_status(layer)

    status = asyncio.run(scenario())
    assert status.total("jobs").depth == 4 and 0.2 <= status.total("jobs").oldest_age < 2
    assert "only the Redis layer" in status.note and "this process" in render(status)


def test_other_layers_are_refused_clearly():
    with pytest.raises(StatusUnavailable, match="cannot be inspected"):
        asyncio.run(gather_status(object()))


def test_render_shows_shards_totals_and_workers(two_shards):
    async def scenario():
        layer = two_shards()
        for i in range(3):
            await layer.send("jobs", {"type": "job.run", "n": i})

        class One:
            channels = ["jobs"]
            stats = {}

            def busy_count(self, channel=None):
                return 0

        await WorkerStatePublisher(
            RedisInspector(layer), One(), heartbeat_interval=5, identity="box-9:7"
        ).publish()
        status = await gather_status(layer)
        await layer.close_pools()
        return status

    text = render(asyncio.run(scenario()))
    lines = text.splitlines()
    assert lines[2].split() == ["CHANNEL", "SHARD", "DEPTH", "OLDEST"]
    rows = [line.split() for line in lines if line.startswith("jobs")]
    assert [row[:3] for row in rows] == [["jobs", "0", "2"], ["jobs", "1", "1"], ["jobs", "total", "3"]]
    assert any(line.split()[:6] == ["box-9", "7", "jobs", "0", "0", "0"] for line in lines), text
    assert lines[-1] == "0 of 1 workers busy"
    assert format_age(4.24) == "4.2s" and format_age(125) == "2m05s" and format_age(3725) == "1h02m"


# --- metrics ---------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """``/metrics`` as {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_endpoint_matches_the_status_figures(two_shards):
    async def scenario():
        layer = two_shards()
        async with BlockedWorker(layer, jobs=1) as blocked:
            metrics = MetricsServer(blocked.worker, 0, addr="127.0.0.1")
            try:
                # With the consumer blocked, nothing moves: the two reads see the same queue.
                await layer.send("other", {"type": "job.run", "n": 1})
                await layer.send("other", {"type": "job.run", "n": 2})
                await asyncio.sleep(0.3)  # a heartbeat publishes busy=1
                status = await gather_status(layer)
                samples = await asyncio.to_thread(scrape, metrics.port)
            finally:
                metrics.close()
        await layer.close_pools()
        return status, samples

    status, samples = asyncio.run(scenario())
    assert samples[("channels_status_up", ())] == 1
    for shard in (0, 1):
        labels = (("channel", "other"), ("shard", str(shard)))
        assert samples[("channels_queue_depth", labels)] == status.figures("other", shard).depth
        assert samples[("channels_queue_oldest_age_seconds", labels)] == pytest.approx(
            status.figures("other", shard).oldest_age, abs=1.0
        )
        assert samples[("channels_queue_depth", (("channel", "jobs"), ("shard", str(shard))))] == 0
    assert sum(status.figures("other", shard).depth for shard in (0, 1)) == 2
    assert samples[("channels_worker_busy", (("channel", "jobs"),))] == 1
    assert samples[("channels_worker_messages_total", (("channel", "jobs"), ("outcome", "handled")))] == 0
    assert samples[("channels_worker_messages_total", (("channel", "jobs"), ("outcome", "failed")))] == 0
    assert samples[("channels_worker_messages_received_total", (("channel", "jobs"),))] == 1
    assert samples[("channels_workers_live", ())] == 1
    assert samples[("channels_workers_busy", ())] == 1


def test_metrics_without_a_running_loop_report_status_down():
    layer = InMemoryChannelLayer()
    worker = jobs_worker(blocker_app([], asyncio.Event()), layer)
    families = {family.name: family for family in WorkerCollector(worker).collect()}
    assert families["channels_status_up"].samples[0].value == 0
    assert "channels_queue_depth" not in families  # no figures rather than made-up zeros
    assert families["channels_worker_busy"].samples[0].value == 0


# --- the commands, as processes ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_runworker_metrics_port_and_channels_status_command(tmp_path, redis_url):
    """``runworker --metrics-port`` serves /metrics; ``channels_status`` (table and --json)
    sees the same backlog and the busy worker."""
    prefix = f"test-status-cmd-{uuid.uuid4().hex[:8]}:"
    marks = tmp_path / "marks"
    marks.mkdir()
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "tests.workerproject.settings",
        "WORKER_TEST_PREFIX": prefix,
        "WORKER_TEST_DIR": str(marks),
        "WORKER_HEARTBEAT_FILE": str(tmp_path / "heartbeat"),
        "WORKER_HEARTBEAT_INTERVAL": "0.2",
    }
    port = free_port()
    layer = RedisChannelLayer(hosts=[{"address": redis_url}], prefix=prefix)

    async def send_jobs():
        for name in ("a", "b", "c"):
            await layer.send("jobs", {"type": "job.run", "id": name, "sleep": 30 if name == "a" else 0})

    def django(*args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "django", *args],
            cwd=APP_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            **kwargs,
        )

    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed in finally
    worker = subprocess.Popen(
        [sys.executable, "-m", "django", "runworker", "--only-channels=jobs", f"--metrics-port={port}"],
        cwd=APP_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        asyncio.run(send_jobs())
        deadline = time.monotonic() + 30
        while not (marks / "started-a").exists():
            assert worker.poll() is None and time.monotonic() < deadline, (
                tmp_path / "worker.log"
            ).read_text()
            time.sleep(0.05)
        time.sleep(0.5)  # a heartbeat after the job started: busy=1 is published
        # Job "a" holds the only slot (30 s; the worker is killed first): "b" and "c" wait in
        # Redis for both reads and the scrape, however slow the machine.
        table = django("channels_status")
        as_json = django("channels_status", "--json")
        samples = scrape(port)
        assert table.returncode == 0, table.stderr
        assert as_json.returncode == 0, as_json.stderr
        figures = json.loads(as_json.stdout)
        assert figures["channels"]["jobs"]["depth"] == 2
        assert (figures["workers_live"], figures["workers_busy"]) == (1, 1)
        assert figures["workers"][0]["channels"] == ["jobs"]
        rows = [line.split() for line in table.stdout.splitlines()]
        assert [row[:3] for row in rows if row[:2] == ["jobs", "total"]] == [["jobs", "total", "2"]]
        assert "1 of 1 workers busy" in table.stdout
        assert samples[("channels_queue_depth", (("channel", "jobs"), ("shard", "0")))] == 2
        assert samples[("channels_worker_busy", (("channel", "jobs"),))] == 1
        assert samples[("channels_workers_busy", ())] == 1
    finally:
        worker.kill()
        worker.wait()
        log.close()
        asyncio.run(layer.flush())


def test_json_status_keeps_stdout_for_the_json():
    """A library logging while `channels_status --json` runs must not corrupt the JSON."""
    from channels_kit.management.commands.channels_status import logs_to_stderr

    logger = logging.getLogger("tests.status.json")
    handler = logging.StreamHandler(sys.stdout)
    logger.addHandler(handler)
    try:
        logs_to_stderr()
        assert handler.stream is sys.stderr
    finally:
        logger.removeHandler(handler)


def test_daphne_metrics_count_connections_and_the_relays_figures():
    from daphne.ws_protocol import WebSocketProtocol
    from prometheus_client import CollectorRegistry, generate_latest

    from channels_kit.observe.daphne_metrics import DaphneCollector
    from channels_kit.relay.interface import RelayStats

    class Relay:
        stats = RelayStats(http_requests=7, websocket_open=2)
        workers = type("Watch", (), {"channels": ("http.request", "websocket.connect")})
        workers.served = {"http.request"}
        layer = None

    class Server:
        application = Relay()
        connections = {
            object.__new__(WebSocketProtocol): {"connected": 1.0},
            object.__new__(WebSocketProtocol): {"connected": 1.0, "disconnected": 2.0},
            object(): {"connected": 1.0},
        }

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaphneCollector(Server()))
    text = generate_latest(registry).decode()
    assert 'daphne_connections_open{kind="websocket"} 1.0' in text
    assert 'daphne_connections_open{kind="http"} 1.0' in text
    assert "relay_http_requests_total 7.0" in text and "relay_websocket_open 2.0" in text
    assert 'relay_workers_serving{channel="http.request"} 1.0' in text
    assert 'relay_workers_serving{channel="websocket.connect"} 0.0' in text
