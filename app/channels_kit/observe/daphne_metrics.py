"""Prometheus ``/metrics`` of a Daphne process (extra ``metrics``; ``DAPHNE_METRICS_PORT``).

Both modes: the connections open (WebSockets, HTTP requests in flight) and which Redis
shards this process reaches. Relay mode adds the relay's counters (requests, events,
timeouts, refusals for want of a worker) and whether live workers serve its channels.
Figures are read at scrape time, from prometheus_client's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from daphne.ws_protocol import WebSocketProtocol
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from channels_kit.observe.metrics import drop_metrics, shard_metrics

logger = logging.getLogger(__name__)

# RelayStats fields that are gauges; every other one counts up.
RELAY_GAUGES = {"websocket_open"}


class DaphneCollector:
    """The figures of one Daphne server (``daphne.server.Server``)."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        connections = self._connections()
        open_ = GaugeMetricFamily(
            "daphne_connections_open", "Connections this Daphne holds, by kind", labels=["kind"]
        )
        live = [protocol for protocol, details in connections if "disconnected" not in details]
        sockets = sum(isinstance(protocol, WebSocketProtocol) for protocol in live)
        requests = len(live) - sockets
        open_.add_metric(["websocket"], sockets)
        open_.add_metric(["http"], requests)
        yield open_
        relay = self.server.application
        stats = getattr(relay, "stats", None)
        if stats is not None:
            yield from self._relay_metrics(relay, stats)
        layer = getattr(relay, "layer", None) or _project_layer()
        yield from drop_metrics()
        yield from shard_metrics(layer)

    def _connections(self) -> list[tuple[Any, dict]]:
        """A copy of Daphne's connection table (the reactor's thread changes it meanwhile)."""
        for _ in range(5):
            try:
                return list(getattr(self.server, "connections", {}).items())
            except RuntimeError:  # changed size during the copy: try again
                continue
        return []

    def _relay_metrics(self, relay: Any, stats: Any) -> Iterator[Metric]:
        for name, value in vars(stats).items():
            if name in RELAY_GAUGES:
                gauge = GaugeMetricFamily(f"relay_{name}", f"Relay: {name.replace('_', ' ')}")
                gauge.add_metric([], value)
                yield gauge
            else:
                counter = CounterMetricFamily(f"relay_{name}", f"Relay: {name.replace('_', ' ')}")
                counter.add_metric([], value)
                yield counter
        workers = getattr(relay, "workers", None)
        if workers is not None and workers.served is not None:
            serving = GaugeMetricFamily(
                "relay_workers_serving",
                "1 when live workers serve the relay channel, as this interface last read their states",
                labels=["channel"],
            )
            for channel in workers.channels:
                serving.add_metric([channel], 1 if channel in workers.served else 0)
            yield serving


def _project_layer() -> Any:
    """Direct mode: the project's channel layer, if Django and a layer are configured."""
    try:
        from channels.layers import get_channel_layer

        return get_channel_layer()
    except Exception:  # noqa: BLE001 - no Django settings, or no layer: no shard figures
        return None


def serve_daphne_metrics(server: Any, port: int, addr: str = "0.0.0.0") -> None:
    """``/metrics`` of ``server`` on ``addr:port``, from a daemon thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaphneCollector(server))
    start_http_server(port, addr=addr, registry=registry)
    logger.info("Daphne metrics on %s:%d/metrics", addr, port)
