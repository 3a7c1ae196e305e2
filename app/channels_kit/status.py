"""Load figures of a channel layer: queue depth and oldest message age per channel and shard,
and the live workers. Used by ``manage.py channels_status`` and the worker's ``/metrics``.

On the kit's Redis layer (and channels_redis's) each channel is a sorted set
``prefix + channel`` scored by send time, so a queue's depth is its ``ZCARD`` and
its oldest message is its lowest score. Keys are found with ``SCAN`` (bounded
``COUNT``, ``TYPE zset``) on every shard, never ``KEYS``, so a big Redis is not
blocked. Messages past the layer's expiry still count until the next send trims
them, so an oldest age above ``expiry`` means "stale", not "still waiting".

The in-memory layer lives inside one process: its figures are that process's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from channels.layers import InMemoryChannelLayer

from channels_kit.worker_state import (
    WorkerState,
    decode,
    escape_glob,
    supports_worker_state,
    workers_pattern,
)

# SCAN's COUNT hint: keys Redis looks at per call, so each call stays short.
SCAN_COUNT = 500
# Keys per pipeline when reading depths and worker hashes (bounds one reply's size).
BATCH = 500
# channels_redis's receive keeps a backup of each popped message under this suffix.
INFLIGHT_SUFFIX = "$inflight"
IN_MEMORY_NOTE = (
    "in-memory channel layer: these are this process's own queues; other processes' queues "
    "and workers are invisible (only the Redis layer can be inspected from outside)"
)


class StatusUnavailable(Exception):
    """The layer cannot be inspected (neither a Redis layer nor the in-memory one)."""


@dataclass(frozen=True)
class QueueFigures:
    """One channel's queue on one shard (``shard`` None: all shards together)."""

    channel: str
    shard: int | None
    depth: int
    oldest_age: float  # seconds since the oldest queued message was sent; 0 when empty


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


def channel_of_key(prefix: str, key: str) -> str | None:
    """The channel a sorted-set key holds, or None for the layer's other keys (groups, worker
    states: ``prefix:...``; channels_redis's ``$inflight`` backups). A ``!`` channel's key
    holds every channel of one process under its non-local name ``specific.<client>!``."""
    if not key.startswith(prefix):
        return None
    name = key[len(prefix) :]
    # A channel name cannot start with ':' (Channels' name rules), so this is the layer's own.
    if not name or name.startswith(":") or name.endswith(INFLIGHT_SUFFIX):
        return None
    return name


async def gather_status(layer: Any, *, scan_count: int = SCAN_COUNT) -> LayerStatus:
    """Queue figures per channel and shard, and the live workers, of ``layer``.

    Raises ``StatusUnavailable`` for layers other than the Redis ones and the in-memory one.
    """
    backend = f"{type(layer).__module__}.{type(layer).__qualname__}"
    now = time.time()
    if supports_worker_state(layer):
        per_shard = await asyncio.gather(
            *(_shard_figures(layer, index, now, scan_count) for index in range(layer.ring_size))
        )
        queues = [queue for shard_queues, _ in per_shard for queue in shard_queues]
        workers = _latest_per_identity(state for _, states in per_shard for state in states)
        return LayerStatus(backend, layer.prefix, layer.ring_size, now, _sorted(queues), workers)
    if isinstance(layer, InMemoryChannelLayer):
        return LayerStatus(backend, "", 1, now, _sorted(_memory_figures(layer, now)), note=IN_MEMORY_NOTE)
    raise StatusUnavailable(
        f"{backend} cannot be inspected: channels_status reads the Redis channel layer "
        "(channels_kit.layers.RedisChannelLayer or channels_redis's) and, in-process, the in-memory one"
    )


async def _shard_figures(
    layer: Any, index: int, now: float, scan_count: int
) -> tuple[list[QueueFigures], list[WorkerState]]:
    connection = layer.connection(index)
    prefix = layer.prefix
    channel_keys = []
    async for raw in connection.scan_iter(match=escape_glob(prefix) + "*", count=scan_count, _type="zset"):
        channel = channel_of_key(prefix, decode(raw))
        if channel is not None:
            channel_keys.append((raw, channel))
    queues = []
    for batch in _batches(channel_keys):
        async with connection.pipeline(transaction=False) as pipe:
            for raw, _ in batch:
                pipe.zcard(raw)
                pipe.zrange(raw, 0, 0, withscores=True)
            replies = await pipe.execute()
        for (_, channel), depth, oldest in zip(batch, replies[0::2], replies[1::2], strict=True):
            if depth:  # the key may have emptied (and vanished) since SCAN saw it
                age = max(0.0, now - oldest[0][1]) if oldest else 0.0
                queues.append(QueueFigures(channel, index, int(depth), age))

    worker_keys = [
        raw
        async for raw in connection.scan_iter(match=workers_pattern(prefix), count=scan_count, _type="hash")
    ]
    workers = []
    for batch in _batches(worker_keys):
        async with connection.pipeline(transaction=False) as pipe:
            for raw in batch:
                pipe.hgetall(raw)
            replies = await pipe.execute()
        workers.extend(WorkerState.from_hash(reply) for reply in replies if reply)
    return queues, workers


def _memory_figures(layer: InMemoryChannelLayer, now: float) -> list[QueueFigures]:
    figures = []
    for channel, queue in list(layer.channels.items()):
        # asyncio.Queue has no peek; its deque holds (expires_at, message) pairs, oldest first.
        items = getattr(queue, "_queue", None)
        if not queue.qsize() or not items:
            continue
        sent = items[0][0] - layer.expiry
        figures.append(QueueFigures(channel, 0, queue.qsize(), max(0.0, now - sent)))
    return figures


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


def _batches(items: list, size: int = BATCH) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
