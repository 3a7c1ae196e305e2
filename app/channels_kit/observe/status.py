"""Load figures of a channel layer: queue depth and oldest message age per channel and shard,
and the live workers. Used by ``manage.py channels_status`` and the worker's ``/metrics``.

The figures come from the backend's ``LayerInspector`` (``channels_kit.layers.base``):
the Redis layers are read from outside, the in-memory one only from inside its process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from channels_kit.layers.base import (
    ChannelLayer,
    LayerInspector,
    QueueFigures,
    WorkerState,
    backend_name,
    inspector_for,
)
from channels_kit.observe.worker_state import is_interface


class StatusUnavailable(Exception):
    """The layer's backend cannot be inspected (no ``LayerInspector`` for it)."""


@dataclass
class LayerStatus:
    """Queues and live workers of a channel layer at ``taken_at``."""

    backend: str
    prefix: str
    shards: int
    taken_at: float
    queues: list[QueueFigures] = field(default_factory=list)
    workers: list[WorkerState] = field(default_factory=list)
    note: str = ""

    @property
    def channels(self) -> list[str]:
        """Every channel with queued messages or a live worker serving it, sorted."""
        served = {channel for worker in self.workers for channel in worker.channels}
        return sorted({q.channel for q in self.queues} | served)

    def figures(self, channel: str, shard: int) -> QueueFigures:
        """A channel's queue on one shard (empty figures when nothing is queued there)."""
        for queue in self.queues:
            if queue.channel == channel and queue.shard == shard:
                return queue
        return QueueFigures(channel, shard, 0, 0.0)

    def total(self, channel: str) -> QueueFigures:
        """A channel over every shard: summed depth, the oldest age of any shard."""
        mine = [q for q in self.queues if q.channel == channel]
        return QueueFigures(
            channel, None, sum(q.depth for q in mine), max((q.oldest_age for q in mine), default=0.0)
        )

    @property
    def workers_live(self) -> int:
        return len(self.workers)

    @property
    def workers_busy(self) -> int:
        """Workers running at least one message."""
        return sum(1 for worker in self.workers if worker.busy > 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "backend": self.backend,
            "prefix": self.prefix,
            "shards": self.shards,
            "taken_at": self.taken_at,
            "note": self.note,
            "channels": {
                channel: {
                    "depth": self.total(channel).depth,
                    "oldest_age_seconds": round(self.total(channel).oldest_age, 3),
                    "shards": {
                        str(shard): {
                            "depth": self.figures(channel, shard).depth,
                            "oldest_age_seconds": round(self.figures(channel, shard).oldest_age, 3),
                        }
                        for shard in range(self.shards)
                    },
                }
                for channel in self.channels
            },
            "workers": [
                {
                    "host": w.host,
                    "pid": w.pid,
                    "channels": list(w.channels),
                    "busy": w.busy,
                    "received": w.received,
                    "handled": w.handled,
                    "failed": w.failed,
                    "started": w.started,
                    "updated": w.updated,
                }
                for w in self.workers
            ],
            "workers_live": self.workers_live,
            "workers_busy": self.workers_busy,
        }


def require_inspector(layer: ChannelLayer) -> LayerInspector:
    """``layer``'s inspector; ``StatusUnavailable`` for a backend the kit cannot read."""
    inspector = inspector_for(layer)
    if inspector is None:
        raise StatusUnavailable(
            f"{backend_name(layer)} cannot be inspected: channels_status reads the Redis channel layers "
            "(the kit's and channels_redis's), the kit's RabbitMQ and same-host layers and, in-process, "
            "Channels' in-memory one"
        )
    return inspector


async def gather_status(layer: ChannelLayer) -> LayerStatus:
    """Queue figures per channel and shard, and the live workers, of ``layer``.

    Raises ``StatusUnavailable`` for a backend the kit cannot inspect.
    """
    inspector = require_inspector(layer)
    now = time.time()
    queues = await inspector.queue_figures(now)
    states = await inspector.worker_states()
    workers = _latest_per_identity(state for state in states if not is_interface(state))
    return LayerStatus(
        backend_name(layer), inspector.prefix, inspector.shards, now, _sorted(queues), workers, inspector.note
    )


def _latest_per_identity(states: Iterable[WorkerState]) -> list[WorkerState]:
    """One state per worker process (two shards can both hold one after the ring changed)."""
    latest: dict[tuple[str, int], WorkerState] = {}
    for state in states:
        known = latest.get((state.host, state.pid))
        if known is None or state.updated > known.updated:
            latest[(state.host, state.pid)] = state
    return sorted(latest.values(), key=lambda s: (s.host, s.pid))


def _sorted(queues: list[QueueFigures]) -> list[QueueFigures]:
    return sorted(queues, key=lambda q: (q.channel, -1 if q.shard is None else q.shard))
