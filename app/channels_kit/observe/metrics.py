"""Prometheus ``/metrics`` for a worker process (extra ``metrics``): queue figures of the whole layer, this
process's counters, the cluster's live and busy workers (and how many serve each channel), and
which Redis shards this process reaches.

The HTTP server runs in a thread (prometheus_client's); the layer's Redis clients
belong to the worker's event loop, so each scrape runs ``gather_status`` on that
loop (``run_coroutine_threadsafe``) and waits at most ``timeout`` seconds for it.
A scrape that cannot read the layer still answers, with ``channels_status_up 0``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from channels_kit.drops import DROPS
from channels_kit.layers.base import ChannelLayer
from channels_kit.observe.status import LayerStatus, gather_status
from channels_kit.observe.worker_state import ChannelStats

logger = logging.getLogger(__name__)

# Below Prometheus's default scrape timeout (10 s), so a slow Redis yields an answer, not a gap.
SCRAPE_TIMEOUT_SECONDS = 5.0


class MeasuredWorker(Protocol):
    """What the collector reads from a worker (``KitWorker`` has it)."""

    channels: list[str]
    channel_layer: ChannelLayer
    stats: dict[str, ChannelStats]
    loop: asyncio.AbstractEventLoop | None

    def busy_count(self, channel: str | None = None) -> int: ...

    def held_count(self, channel: str | None = None) -> int: ...


class WorkerCollector:
    """A custom collector: every figure is read at scrape time, nothing is kept in between."""

    def __init__(self, worker: MeasuredWorker, timeout: float = SCRAPE_TIMEOUT_SECONDS) -> None:
        self.worker = worker
        self.timeout = timeout

    def layer_status(self) -> LayerStatus | None:
        """The layer's figures, gathered on the worker's loop; None when that fails or is too slow."""
        loop = self.worker.loop
        if loop is None or loop.is_closed():
            return None
        try:
            future = asyncio.run_coroutine_threadsafe(gather_status(self.worker.channel_layer), loop)
        except RuntimeError:  # the loop closed in between
            return None
        try:
            return future.result(self.timeout)
        except Exception as exc:  # noqa: BLE001 - a scrape reports the failure as a gauge
            future.cancel()
            logger.warning("metrics: could not read the channel layer's status: %r", exc)
            return None

    def collect(self) -> Iterator[Metric]:
        status = self.layer_status()
        up = GaugeMetricFamily(
            "channels_status_up", "1 if this scrape could read the channel layer's queues and workers"
        )
        up.add_metric([], 1 if status is not None else 0)
        yield up
        if status is not None:
            yield from self._layer_metrics(status)
        yield from self._process_metrics()
        yield from drop_metrics()
        yield from shard_metrics(self.worker.channel_layer)

    def _layer_metrics(self, status: LayerStatus) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "channels_queue_depth", "Messages queued on a channel, per shard", labels=["channel", "shard"]
        )
        age = GaugeMetricFamily(
            "channels_queue_oldest_age_seconds",
            "Age of the oldest queued message of a channel, per shard (0 when empty)",
            labels=["channel", "shard"],
        )
        # Every known channel on every shard, zeros included, so series do not vanish when a queue empties.
        for channel in status.channels:
            for shard in range(status.shards):
                figures = status.figures(channel, shard)
                depth.add_metric([channel, str(shard)], figures.depth)
                age.add_metric([channel, str(shard)], round(figures.oldest_age, 3))
        yield depth
        yield age
        serving = GaugeMetricFamily(
            "channels_workers_serving", "Live workers serving a channel, cluster-wide", labels=["channel"]
        )
        for channel in status.channels:
            serving.add_metric([channel], sum(channel in worker.channels for worker in status.workers))
        yield serving
        live = GaugeMetricFamily("channels_workers_live", "Worker processes alive, cluster-wide")
        live.add_metric([], status.workers_live)
        busy = GaugeMetricFamily("channels_workers_busy", "Worker processes running a message, cluster-wide")
        busy.add_metric([], status.workers_busy)
        yield live
        yield busy

    def _process_metrics(self) -> Iterator[Metric]:
        busy = GaugeMetricFamily(
            "channels_worker_busy", "Messages this worker process is running, per channel", labels=["channel"]
        )
        held = GaugeMetricFamily(
            "channels_worker_held",
            "Relay messages this worker process released from their slots and still runs (long-polls)",
            labels=["channel"],
        )
        messages = CounterMetricFamily(
            "channels_worker_messages",
            "Messages this worker process finished, per channel and outcome (handled, failed)",
            labels=["channel", "outcome"],
        )
        received = CounterMetricFamily(
            "channels_worker_messages_received",
            "Messages this worker process took from the layer, per channel",
            labels=["channel"],
        )
        for channel in self.worker.channels:
            stats = self.worker.stats[channel]
            busy.add_metric([channel], self.worker.busy_count(channel))
            held.add_metric([channel], self.worker.held_count(channel))
            messages.add_metric([channel, "handled"], stats.handled)
            messages.add_metric([channel, "failed"], stats.failed)
            received.add_metric([channel], stats.received)
        yield busy
        yield held
        yield messages
        yield received


# Always shown, at 0 until the first drop, so that rate() and alerts have a series to read.
ALWAYS_SHOWN_DROPS = (("group_send", "full"),)


def drop_metrics() -> Iterator[Metric]:
    """``channels_messages_dropped_total{operation, reason}``: messages this process dropped
    (``channels_kit.drops``: full channels, refusals, relayed events given up on)."""
    counts = dict.fromkeys(ALWAYS_SHOWN_DROPS, 0) | DROPS.snapshot()
    family = CounterMetricFamily(
        "channels_messages_dropped",
        "Messages this process dropped, by operation and reason (each also a WARNING naming its channel)",
        labels=["operation", "reason"],
    )
    for (operation, reason), count in sorted(counts.items()):
        family.add_metric([operation, reason], count)
    yield family


def shard_metrics(layer: object) -> Iterator[Metric]:
    """``channels_redis_shard_up{shard}``: 0 while this process fails to reach a shard of the
    kit's Redis layer (other layers: nothing)."""
    health = getattr(layer, "health", None)
    if health is None:
        return
    up = GaugeMetricFamily(
        "channels_redis_shard_up", "0 while this process fails to reach the Redis shard", labels=["shard"]
    )
    for index, name in enumerate(health.names):
        up.add_metric([name], 0 if health.down(index) else 1)
    yield up


class MetricsServer:
    """``/metrics`` of one worker on ``addr:port``, served from a daemon thread."""

    def __init__(self, worker: MeasuredWorker, port: int, addr: str = "0.0.0.0") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(WorkerCollector(worker))
        self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        self.port = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
